"""build_data: every paper mix from the released data, byte-for-byte repeatable, own files too."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from rich.console import Console

from fireact.data.build import build_from_config
from fireact.data.contamination import questions_unseen_by, seen_qids
from fireact.data.mix import count_cells
from fireact.data.summary import print_summary
from fireact.paths import CONF_DIR
from fireact.tasks import StrategyQA
from fireact.trajectory import Step, Trajectory
from fireact.trajectory_files import read_jsonl, write_jsonl

REPO = Path(__file__).resolve().parents[1]
OUTPUT_FILES = ("trajectories.jsonl", "alpaca.json", "chat.jsonl", "manifest.json")


def compose_build_data(*overrides):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("build_data", overrides=list(overrides))


class Preloaded:
    """A source already loaded, so that each mix does not read the released sets again."""

    def __init__(self, loaded):
        self.loaded = loaded

    def load(self):
        return self.loaded


@pytest.fixture(scope="module")
def released():
    return Preloaded(instantiate(compose_build_data().data_source).load())


def table(counts):
    return {f"{task}/{method}": k for (task, method), k in sorted(counts.items())}


PAPER_MIXES = [
    # Table 2/3 and Figure 3 (data scaling)
    (["task_mix=hotpotqa", "method_mix=react"], {"hotpotqa/react": 500}),
    (["task_mix=hotpotqa", "method_mix=react", "n=100"], {"hotpotqa/react": 100}),
    (["task_mix=hotpotqa", "method_mix=react", "n=200"], {"hotpotqa/react": 200}),
    (["task_mix=hotpotqa", "method_mix=react", "n=500"], {"hotpotqa/react": 500}),
    # Figure 4 and Table 4
    (["task_mix=hotpotqa", "method_mix=react_cot"], {"hotpotqa/cot": 187, "hotpotqa/react": 500}),
    (["task_mix=hotpotqa", "method_mix=react_reflexion"], {"hotpotqa/react": 500, "hotpotqa/reflexion": 47}),
    (["task_mix=hotpotqa", "method_mix=react_cot_reflexion"],
     {"hotpotqa/cot": 187, "hotpotqa/react": 500, "hotpotqa/reflexion": 47}),
    # Table 5 (the paper lists CoT 277 / 380 / 469; the released data holds 187 / 215 / 246)
    (["task_mix=multitask", "method_mix=react"], {"hotpotqa/react": 500, "mmlu/react": 456, "strategyqa/react": 388}),
    (["task_mix=multitask", "method_mix=react_cot"],
     {"hotpotqa/cot": 187, "hotpotqa/react": 500, "mmlu/cot": 246, "mmlu/react": 456,
      "strategyqa/cot": 215, "strategyqa/react": 388}),
]


@pytest.mark.parametrize("overrides, expected", PAPER_MIXES, ids=[" ".join(o) for o, _ in PAPER_MIXES])
def test_each_paper_mix_gives_its_counts(released, overrides, expected):
    cfg = compose_build_data(*overrides, "contamination.eval_sets=[]", "output_dir=null")
    result = build_from_config(cfg, source=released)
    assert table(count_cells(result.trajectories)) == expected
    assert len({id(t) for t in result.trajectories}) == sum(expected.values())  # no repeats


def test_the_multitask_multimethod_file_alone_as_released(tmp_path):
    cfg = compose_build_data("task_mix=multitask", "method_mix=react_cot", "data_source.use=[multitask_multimethod]",
                             "contamination.eval_sets=[]", f"output_dir={tmp_path}")
    result = build_from_config(cfg)
    assert table(count_cells(result.trajectories)) == {
        "hotpotqa/cot": 186, "hotpotqa/react": 500, "mmlu/cot": 246, "mmlu/react": 456,
        "strategyqa/cot": 215, "strategyqa/react": 388}


def test_data_scaling_beyond_the_released_data_says_what_to_do(released):
    no_checks = ("contamination.eval_sets=[]", "output_dir=null")
    with pytest.raises(ValueError, match=r"hotpotqa/react needs 1000 of 500.*at most 500.*replace=true"):
        build_from_config(compose_build_data("n=1000", *no_checks), source=released)
    result = build_from_config(compose_build_data("n=1000", "replace=true", *no_checks), source=released)
    assert len(result.trajectories) == 1000 and len({id(t) for t in result.trajectories}) == 500


def test_contaminated_questions_are_reported_and_can_be_dropped(released, tmp_path):
    kept = build_from_config(compose_build_data("task_mix=multitask", "method_mix=react_cot", f"output_dir={tmp_path / 'a'}"),
                             source=released)
    report = {o.eval_set: (len(o.questions), len(o.trajectories)) for o in kept.pool_overlaps}
    assert report == {"hotpotqa:dev[233-shuffle,0:500]": (0, 0), "bamboogle:test": (0, 0), "strategyqa:dev": (55, 59),
                      "mmlu:test": (0, 0)}
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["contamination"]["built"]["strategyqa:dev"]["trajectories"] == 57  # 2 are Reflexion
    dropped = build_from_config(
        compose_build_data("task_mix=multitask", "method_mix=react_cot", "contamination.drop=true", "output_dir=null"),
        source=released)
    assert table(count_cells(dropped.trajectories)) == {
        "hotpotqa/cot": 187, "hotpotqa/react": 500, "mmlu/cot": 246, "mmlu/react": 456,
        "strategyqa/cot": 195, "strategyqa/react": 351}
    assert all(not o.trajectories for o in dropped.overlaps)


def test_an_agent_is_scored_on_the_questions_its_training_data_does_not_hold(released, tmp_path):
    built = build_from_config(compose_build_data("task_mix=multitask", "method_mix=react", f"output_dir={tmp_path}"),
                              source=released)
    strategyqa = StrategyQA(split="dev")
    held = next(o for o in built.overlaps if o.eval_set == "strategyqa:dev").questions
    assert len(held) == 37  # the multi-task ReAct set holds 37 of the 229 dev questions
    assert seen_qids(tmp_path, "strategyqa") == set(held) == seen_qids(tmp_path / "manifest.json", "strategyqa")
    assert seen_qids(tmp_path, "hotpotqa") == set()
    unseen = questions_unseen_by(strategyqa.questions(), [tmp_path], "strategyqa")
    assert len(unseen) == 229 - 37 and not {q.qid for q in unseen} & set(held)
    with pytest.raises(ValueError, match="did not check gsm8k questions.*contamination.eval_sets"):
        seen_qids(tmp_path, "gsm8k")
    with pytest.raises(ValueError, match="no build_data manifest.*give a build_data output folder"):
        seen_qids(tmp_path / "alpaca.json", "strategyqa")


def run_cli(*overrides, cwd):
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    done = subprocess.run([sys.executable, "-m", "fireact.build_data", *overrides], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def hashes(folder):
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in OUTPUT_FILES}


def test_the_entry_point_writes_the_same_bytes_twice(tmp_path):
    mix = ["task_mix=multitask", "method_mix=react_cot_reflexion", "n=300", "seed=7"]
    stdout = run_cli(*mix, cwd=tmp_path)  # into the run's Hydra folder
    (first,) = [p for p in (tmp_path / "outputs" / "build_data").glob("*") if p.name != "latest"]
    assert (first.parent / "latest").resolve() == first
    assert stdout.splitlines()[-1].endswith(f"-m fireact.train data.path=outputs/build_data/{first.name} data.limit=null")
    run_cli(*mix, f"output_dir={tmp_path / 'again'}", cwd=tmp_path)
    assert hashes(first) == hashes(tmp_path / "again")
    assert "selected" in stdout and "strategyqa:dev" in stdout

    manifest = json.loads((first / "manifest.json").read_text())
    assert manifest["total"] == 300 and manifest["seed"] == 7 and manifest["n"] == 300
    assert sum(k for methods in manifest["counts"].values() for k in methods.values()) == 300
    assert manifest["available"]["strategyqa"] == {"cot": 215, "react": 388, "reflexion": 15}
    data = REPO / "data"
    assert manifest["sources"][0] == {
        "path": "finetune/alpaca_format/hotpotqa.json",
        "sha256": hashlib.sha256((data / "finetune/alpaca_format/hotpotqa.json").read_bytes()).hexdigest()}
    assert manifest["outputs"] == {name: h for name, h in hashes(first).items() if name != "manifest.json"}
    assert manifest["config"]["method_mix"] == {"react": 1.0, "cot": 1.0, "reflexion": 1.0}
    assert "output_dir" not in manifest["config"]

    trajectories, report = read_jsonl(first / "trajectories.jsonl")
    assert len(trajectories) == 300 and not report.failures
    alpaca = json.loads((first / "alpaca.json").read_text())
    chats = [json.loads(line) for line in (first / "chat.jsonl").read_text().splitlines()]
    assert [r["instruction"] for r in alpaca] == [c["messages"][0]["content"] for c in chats] == [t.question for t in trajectories]


def test_a_file_given_by_its_absolute_path_names_its_run_folder_and_the_next_command_exactly(tmp_path):
    source = tmp_path / "own" / "generated.jsonl"
    source.parent.mkdir()
    write_jsonl(source, [Trajectory(task="hotpotqa", qid=str(i), question=f"Who wrote book {i}?", gold="Ann",
                                    method="react", em=1.0, steps=[Step("Ann.", "finish", "Ann")]) for i in range(3)])
    stdout = run_cli("data_source=trajectories", f"data_source.paths=[{source}]", cwd=tmp_path)
    (folder,) = [p for p in (tmp_path / "outputs" / "build_data").glob("*") if p.name != "latest"]
    assert (folder / "manifest.json").exists() and "=" not in folder.name and "," not in folder.name
    assert f"wrote 3 trajectories to {folder}:" in stdout.replace("\n", "")
    compose_build_data(f"output_dir=outputs/build_data/{folder.name}")  # passed back unquoted, Hydra takes it
    # A folder whose name holds brackets (as run folders named by their overrides did): printed as it is.
    bracketed = tmp_path / f"paths=[{source}]"
    stdout = run_cli("data_source=trajectories", f"data_source.paths=[{source}]", f"output_dir='{bracketed}'",
                     cwd=tmp_path)
    assert (bracketed / "manifest.json").exists() and f"to {bracketed}:" in stdout.replace("\n", "")


def test_our_own_rollouts_are_mixed_and_exported(tmp_path):
    rollouts = [
        Trajectory(task="hotpotqa", qid=str(i), question=f"Who wrote book {i}?", gold="Ann", method="react", em=1.0,
                   steps=[Step("Search it.", "search", f"book {i}", "Ann wrote it."), Step("Ann.", "finish", "Ann")])
        for i in range(6)
    ] + [
        Trajectory(task="hotpotqa", qid=f"c{i}", question=f"When was {i}?", gold="1990", method="cot", em=1.0,
                   steps=[Step(thought=f"Event {i} was in 1990.\nAnswer: 1990")])
        for i in range(4)
    ]
    write_jsonl(tmp_path / "generated.jsonl", rollouts)
    cfg = compose_build_data("data_source=trajectories", f"data_source.paths=[{tmp_path / 'generated.jsonl'}]",
                             "method_mix=react_cot", "n=5", f"output_dir={tmp_path / 'out'}")
    result = build_from_config(cfg)
    assert table(count_cells(result.trajectories)) == {"hotpotqa/cot": 2, "hotpotqa/react": 3}

    alpaca = json.loads((tmp_path / "out" / "alpaca.json").read_text())
    cot = next(r for r in alpaca if r["instruction"].startswith("When"))
    assert cot["output"].startswith("Thought: Event ") and cot["output"].endswith(" was in 1990.\nAction: finish[1990]\n")
    chats = [json.loads(line)["messages"] for line in (tmp_path / "out" / "chat.jsonl").read_text().splitlines()]
    react = next(m for m in chats if m[0]["content"].startswith("Who"))
    assert [m["role"] for m in react] == ["user", "assistant", "user", "assistant"]
    assert react[2]["content"] == "Observation: Ann wrote it."

    console = Console(record=True, width=300)
    print_summary(result, console)
    text = console.export_text()
    assert "[1] " + str(tmp_path / "generated.jsonl") in text and "selected" in text


def test_sampled_successes_and_failures_become_pairs_and_the_failures_stay_out_of_sft(tmp_path):
    def sampled(qid, answer, sample):
        em = float(answer == "Ann")
        return Trajectory(task="hotpotqa", qid=qid, question=f"Who wrote {qid}?", gold="Ann", method="react", em=em,
                          sample=sample, answer=answer,
                          steps=[Step("Search it.", "search", qid, "Ann wrote it."), Step(f"{answer}.", "finish", answer)])
    successes = [sampled("q1", "Ann", 0), sampled("q2", "Ann", 0)]
    failures = [sampled("q1", "Bob", 1), sampled("q1", "Cy", 2), sampled("q3", "Bob", 0)]  # q3: no success, no pair
    write_jsonl(tmp_path / "trajectories.jsonl", successes)
    write_jsonl(tmp_path / "failures.jsonl", failures)
    cfg = compose_build_data("data_source=trajectories",
                             f"data_source.paths=[{tmp_path / 'trajectories.jsonl'},{tmp_path / 'failures.jsonl'}]",
                             "pairs_per_question=4", f"output_dir={tmp_path / 'out'}")
    result = build_from_config(cfg)
    assert sorted(t.qid for t in result.trajectories) == ["q1", "q2"]  # the SFT set: successes only
    assert [(p.chosen.qid, p.rejected.answer) for p in result.pairs] == [("q1", "Bob"), ("q1", "Cy")]
    out = tmp_path / "out"
    assert [json.loads(line)["rejected"]["answer"] for line in (out / "pairs.jsonl").read_text().splitlines()] == ["Bob", "Cy"]
    preference = [json.loads(line) for line in (out / "preference.jsonl").read_text().splitlines()]
    assert preference[0]["prompt"] == [{"role": "user", "content": "Who wrote q1?"}]
    assert preference[0]["chosen"][-1] == {"role": "assistant", "content": "Thought: Ann.\nAction: finish[Ann]"}
    assert preference[0]["rejected"][-1]["content"].endswith("finish[Bob]")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["pairs"] == 2 and {"pairs.jsonl", "preference.jsonl"} <= set(manifest["outputs"])


def test_any_trajectory_file_format_is_a_source(tmp_path):
    """A released evaluation file (a .json object, not our JSONL) given as data_source.paths is read
    as rescore reads it; its questions are the evaluation set's, which the table then reports."""
    released = REPO / "data" / "trajs" / "hotpotqa_dev_0_500_llama_models_lora_llama-2-7b-d_1000_0.7_2023-09-19-00-49-36.json"
    cfg = compose_build_data("data_source=trajectories", f"data_source.paths=[{released}]", "n=5",
                             f"output_dir={tmp_path / 'out'}")
    result = build_from_config(cfg)
    assert len(result.trajectories) == 5 and not result.loaded.notes
    assert result.pool_overlaps[0].eval_set.startswith("hotpotqa:dev") and len(result.pool_overlaps[0].questions) == 500


def test_search_r1_rollouts_are_mixed_by_their_method(tmp_path):
    """A teacher's method=search_r1 successes (generate) become a training set with
    method_mix=search_r1, for format=search_r1."""
    rollouts = [Trajectory(task="hotpotqa", qid=str(i), question=f"Who wrote book {i}?", gold="Ann", method="search_r1",
                           em=1.0, steps=[Step("Search it.", "search", f"book {i}", "Doc 1(Title: Ann) Ann wrote it."),
                                          Step("Ann.", "finish", "Ann")]) for i in range(4)]
    write_jsonl(tmp_path / "generated.jsonl", rollouts)
    cfg = compose_build_data("data_source=trajectories", f"data_source.paths=[{tmp_path / 'generated.jsonl'}]",
                             "method_mix=search_r1", f"output_dir={tmp_path / 'out'}")
    result = build_from_config(cfg)
    assert table(count_cells(result.trajectories)) == {"hotpotqa/search_r1": 4}
    assert [s.action for s in result.trajectories[0].steps] == ["search", "finish"]
