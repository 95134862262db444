"""Re-scoring trajectory files over the 500 HotpotQA evaluation questions, and its entry point."""

import dataclasses
import json

import mlflow
import pandas as pd
import pytest

from fireact.child_server import free_port
from fireact.evaluate import rescore as rescore_module
from fireact.evaluate.oracle import em_by_qid, method_choice
from fireact.evaluate.rescore import find_files, rescore
from fireact.paths import data_dir
from fireact.tasks import HotpotQA
from fireact.tracking import TrackingUnavailable
from fireact.trajectory_files import read_trajectory_file, write_jsonl
from tests.tracking.conftest import RELEASED_7B

RELEASED = {  # file: (EM over the 500 questions, missing counted as failures; questions missing)
    "trajs/hotpotqa_dev_0_500_llama_models_lora_llama-2-7b-d_1000_0.7_2023-09-19-00-49-36.json": (0.262, 0),
    "trajs/hotpotqa_dev_0_500_llama_models_lora_llama-2-13b-d_1000_0.7_2023-09-18-13-40-08.json": (0.344, 1),
    "trajs/hotpotqa_dev_0_500_ft_gpt-3.5-turbo-0613_princeton-nlp__7woQRsdi_0.0_2023-09-21-16-19-51.json": (0.400, 35),
}


@pytest.fixture(scope="module")
def hotpotqa():
    task = HotpotQA(split="dev", n=500, shuffle_seed=233)
    return task, task.questions()


@pytest.mark.parametrize("path", list(RELEASED), ids=["llama-2-7b", "llama-2-13b", "gpt-3.5"])
def test_released_files_rescore_to_the_papers_em(path, hotpotqa):
    task, questions = hotpotqa
    expected_em, missing = RELEASED[path]
    result = rescore(read_trajectory_file(data_dir() / path, task="hotpotqa")[0], task, questions)
    assert result.summary["n"] == 500
    assert result.summary["missing"] == missing
    assert result.summary["em"] == pytest.approx(expected_em)
    assert result.summary["agreement"] == 1.0 and result.summary["stored_em_compared"] == 500 - missing
    assert 1 < result.summary["turns_mean"] < 11


def test_scores_come_from_the_task_not_the_file(released_7b, hotpotqa):
    task, questions = hotpotqa
    right = next(t for t in released_7b if t.em == 1.0)
    wrong = next(t for t in released_7b if t.em == 0.0)
    tampered = [
        dataclasses.replace(right, gold="not the gold"),      # the file's gold is ignored
        dataclasses.replace(wrong, em=1.0),                   # a stored EM that the answer does not earn
    ]
    result = rescore(tampered, task, questions)
    by_qid = {t.qid: t for t in result.trajectories}
    assert by_qid[right.qid].em == 1.0 and by_qid[right.qid].gold != "not the gold"
    assert by_qid[wrong.qid].em == 0.0
    assert result.disagreements == [(wrong.qid, 1.0, 0.0)]
    assert result.summary["agreement"] == 0.5
    assert result.summary["missing"] == 498 and result.summary["em"] == 1 / 500


def test_our_jsonl_with_missing_and_foreign_questions(released_7b, hotpotqa, tmp_path):
    task, questions = hotpotqa
    foreign = dataclasses.replace(released_7b[0], qid="999999")
    path = tmp_path / "run" / "trajectories.jsonl"
    write_jsonl(path, [*released_7b[:10], foreign])
    result = rescore(read_trajectory_file(path, task="hotpotqa")[0], task, questions)
    assert result.summary["completed"] == 10 and result.summary["missing"] == 490
    assert result.summary["extra"] == 1
    assert result.summary["em"] == pytest.approx(sum(t.em for t in released_7b[:10]) / 500)


def test_bad_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no-such-file.jsonl"):
        find_files(["no-such-file.jsonl"])
    odd = tmp_path / "trajectories.txt"
    odd.write_text("{}")
    with pytest.raises(ValueError, match="trajectories.txt.*jsonl"):
        read_trajectory_file(odd, task="hotpotqa")[0]


def test_entry_point_rescores_compares_and_logs(tracking_uri, compose_cfg, hotpotqa, tmp_path, capsys):
    task, _ = hotpotqa
    files = list(RELEASED)[:2]
    cfg = compose_cfg("rescore", f"files=[{files[0]},{files[1]}]", "task.n=100", "experiment_name=rescore-test")
    summaries = rescore_module.run(cfg)
    out_dir = tmp_path / "out"

    questions = HotpotQA(split="dev", n=100, shuffle_seed=233).questions()
    direct = {
        path: rescore(read_trajectory_file(data_dir() / path, task="hotpotqa")[0], task, questions) for path in files
    }
    labels = [p.rsplit("/", 1)[1].removesuffix(".json") for p in files]
    for label, path in zip(labels, files):
        assert summaries[label]["em"] == pytest.approx(direct[path].summary["em"])
        assert (out_dir / label / "per_question.csv").exists()
    table = pd.read_csv(out_dir / "rescore.csv")
    assert table["file"].tolist() == labels and table["n"].tolist() == [100, 100]
    choice = json.loads((out_dir / "method_choice.json").read_text())
    expected = method_choice({l: em_by_qid(direct[p].trajectories) for l, p in zip(labels, files)},
                             [q.qid for q in questions], seed=233)
    assert choice == pytest.approx(expected)
    printed = capsys.readouterr().out
    assert "oracle_em" in printed and "the same as" in printed
    # a pipe is not cut at 80 columns: every row of every table names its file in full
    # (the others also in "the same as" table; a wide paired table folds its cells, dropping none)
    assert [printed.count(f"│ {label}") >= need for label, need in zip(labels, (1, 2))] == [True, True], printed
    # the 7B and 13B agents run different models: few whole trajectories agree, some answers do
    assert table["compared_as_first"].tolist()[1] == 100
    assert 0 <= table["same_trajectory_as_first"][1] < table["same_answer_as_first"][1] < 1

    experiment = mlflow.get_experiment_by_name("rescore-test")
    runs = mlflow.search_runs([experiment.experiment_id])
    parent = runs[runs["tags.mlflow.parentRunId"].isna()]
    children = runs[runs["tags.mlflow.parentRunId"].notna()]
    assert len(parent) == 1 and len(children) == 2
    assert parent["metrics.oracle_em"].iloc[0] == pytest.approx(expected["oracle_em"])
    assert sorted(children["params.file_label"]) == sorted(labels)
    assert set(children["tags.mlflow.parentRunId"]) == {parent["run_id"].iloc[0]}


def test_entry_point_fails_before_any_work_when_the_server_is_down(compose_cfg, monkeypatch, tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", dead)
    cfg = compose_cfg("rescore", f"files=[{RELEASED_7B}]")
    with pytest.raises(TrackingUnavailable, match=dead):
        rescore_module.run(cfg)
    assert not (tmp_path / "out").exists()


def test_files_are_labelled_by_folder_and_told_apart_by_their_paths_when_names_clash():
    from pathlib import Path

    from fireact.evaluate.rescore import file_labels

    assert file_labels([Path("/o/evaluate/n=5/trajectories.jsonl"), Path("/d/llama7b.json")]) == ["n=5", "llama7b"]
    sweep = [Path(f"/m/noise/t/{job}/evaluate_finetuned/trajectories.jsonl") for job in (0, 1)]
    assert file_labels([Path("/m/small/evaluate_finetuned/trajectories.jsonl"), *sweep]) == [
        "small/evaluate_finetuned", "noise/t/0/evaluate_finetuned", "noise/t/1/evaluate_finetuned"]
