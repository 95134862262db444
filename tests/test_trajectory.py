"""The trajectory files' readers and writers over every released file, and the ReAct text parser."""

import json
import re

import pytest

from fireact import formats as F
from fireact import trajectory as T
from fireact import trajectory_files as TF
from fireact.paths import data_dir

FINETUNE = data_dir() / "finetune"
# (file stem, records, records repaired while reading): the multitask Alpaca sets carry MMLU
# answer choices at the start of the output; two multitask_multimethod chat records start
# with the assistant and five hold an assistant-written "Observation:".
RELEASED_SETS = [
    ("hotpotqa", 500, 0, 0),
    ("hotpotqa_multimethod", 734, 0, 0),
    ("multitask", 1344, 456, 0),
    ("multitask_multimethod", 2063, 713, 7),
]
GPT_COUNTS = {"hotpotqa_multimethod": 733}


@pytest.mark.parametrize("stem, count, alpaca_repairs, chat_repairs", RELEASED_SETS)
def test_released_finetune_sets_read_without_failures_and_round_trip(stem, count, alpaca_repairs, chat_repairs):
    source = json.loads((FINETUNE / "alpaca_format" / f"{stem}.json").read_text())
    trajectories, report = TF.read_alpaca(FINETUNE / "alpaca_format" / f"{stem}.json")
    assert (len(trajectories), report.failures, len(report.repairs)) == (count, [], alpaca_repairs)
    repaired = {key for key, _ in report.repairs}
    for trajectory, record in zip(trajectories, source):
        assert trajectory.steps and trajectory.answer is not None
        if f"record {trajectory.qid}" in repaired:
            assert trajectory.question.startswith(record["instruction"])
            assert record["output"].rstrip("\n").endswith(F.Alpaca().record(trajectory)["output"].rstrip("\n"))
        else:  # byte for byte, but a trailing newline some CoT records lack
            assert F.Alpaca().record(trajectory)["output"].rstrip("\n") == record["output"].rstrip("\n")

    lines = (FINETUNE / "gpt_format" / f"{stem}.jsonl").read_text().splitlines()
    chats, report = TF.read_chat(FINETUNE / "gpt_format" / f"{stem}.jsonl")
    assert (len(chats), report.failures, len(report.repairs)) == (GPT_COUNTS.get(stem, count), [], chat_repairs)
    repaired = {key for key, _ in report.repairs}
    for trajectory in chats:
        if f"line {int(trajectory.qid) + 1}" not in repaired:
            assert F.Chat().record(trajectory) == json.loads(lines[int(trajectory.qid)])


@pytest.mark.parametrize(
    "pattern, count, em",
    [("*llama-2-7b*", 500, 0.262), ("*llama-2-13b*", 499, 0.344), ("*gpt-3.5*", 465, 0.400)],
)
def test_released_eval_trajectories(pattern, count, em):
    path = next((data_dir() / "trajs").glob(pattern + ".json"))
    trajectories, report = TF.read_released_eval(path)
    assert (len(trajectories), report.failures) == (count, [])
    assert sum(t.em for t in trajectories) / 500 == pytest.approx(em)
    raw = json.loads(path.read_text())
    for t in trajectories:
        entry = raw[t.qid]
        assert t.gold == entry["gt"] and t.answer is not None
        if t.meta["format"] == "alpaca":
            # The released loop wrote the model's "Action:" text verbatim, a few with two spaces.
            original = re.sub(r"^Action: +", "Action: ", entry["traj"], flags=re.M)
            assert F.ALPACA_HEADER.format(question=t.question) + t.react_text() == original
        else:
            assert F.steps_to_messages(t.question, t.steps) == entry["traj"]
            assert t.turns == sum(m["role"] == "assistant" for m in entry["traj"])


def test_parse_recovers_each_field():
    text = (
        "Thought: I need to search X.\nAction: search[X y]\nObservation: line one\nline two\n"
        "Thought: Done.\nAction: finish[Y [z]]\nObservation: Episode finished, reward = True\n"
    )
    steps = T.parse_react_text(text)
    assert steps == [
        T.Step("I need to search X.", "search", "X y", "line one\nline two"),
        T.Step("Done.", "finish", "Y [z]", "Episode finished, reward = True"),
    ]
    assert T.final_answer(steps) == "Y [z]" and steps[0].is_tool_call and steps[1].is_finish
    assert "".join(T.render_step(s) for s in steps) == text


def test_malformed_action_is_kept_verbatim():
    steps = T.parse_react_text("Thought: hmm\nAction: I will search for it\n")
    assert steps == [T.Step("hmm", "I will search for it", None, None)]
    assert T.render_step(steps[0]) == "Thought: hmm\nAction: I will search for it\n"
    assert not steps[0].is_tool_call and not steps[0].is_finish


def test_parse_rejects_non_react_text():
    with pytest.raises(ValueError, match="no Thought/Action/Observation"):
        T.parse_react_text("")
    with pytest.raises(ValueError, match="text before the first"):
        T.parse_react_text("hello\nThought: x")


def test_jsonl_round_trip_and_corrupt_lines_are_reported(tmp_path):
    trajectories, _ = TF.read_alpaca(FINETUNE / "alpaca_format" / "hotpotqa.json")
    path = tmp_path / "t.jsonl"
    TF.write_jsonl(path, trajectories[:3])
    TF.append_jsonl(path, trajectories[3])
    with path.open("a") as f:
        f.write('{"task": "hotpotqa", "qid": "torn')  # a torn last line, as after a kill
    back, report = TF.read_jsonl(path)
    assert back == trajectories[:4]
    assert report.failures == [("line 5", report.failures[0][1])] and "invalid JSON" in report.failures[0][1]


def test_reader_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json does not exist"):
        TF.read_alpaca(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("[{")
    with pytest.raises(ValueError, match="bad.json is not valid JSON"):
        TF.read_alpaca(bad)
    records = tmp_path / "r.json"
    records.write_text(json.dumps([{"instruction": "q", "output": "no react here"}, {"output": "Thought: x"}]))
    trajectories, report = TF.read_alpaca(records)
    assert trajectories == [] and [key for key, _ in report.failures] == ["record 0", "record 1"]


def test_unknown_fields_are_rejected(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text(json.dumps({"task": "t", "qid": "1", "question": "q", "gold": "g", "colour": "red"}) + "\n")
    trajectories, report = TF.read_jsonl(path)
    assert trajectories == [] and "colour" in report.failures[0][1]


def test_each_file_is_read_by_the_reader_its_content_needs(tmp_path):
    """file_format is the one place that tells a file's format; read_trajectory_file follows it."""
    alpaca = FINETUNE / "alpaca_format" / "hotpotqa.json"
    chat = FINETUNE / "gpt_format" / "hotpotqa.jsonl"
    released_eval = next((data_dir() / "trajs").glob("*llama-2-7b*.json"))
    ours = tmp_path / "ours.jsonl"
    TF.write_jsonl(ours, TF.read_alpaca(alpaca)[0][:2])
    formats = {path: TF.file_format(path) for path in (alpaca, chat, released_eval, ours)}
    assert list(formats.values()) == ["alpaca", "chat", "released_eval", "trajectories"]
    assert TF.read_trajectory_file(alpaca)[0] == TF.read_alpaca(alpaca)[0]
    assert TF.read_trajectory_file(chat)[0] == TF.read_chat(chat)[0]
    assert TF.read_trajectory_file(released_eval, task="hotpotqa")[0] == TF.read_released_eval(released_eval)[0]
    assert TF.read_trajectory_file(ours)[0] == TF.read_jsonl(ours)[0]
    other = tmp_path / "notes.txt"
    other.write_text("hello")
    with pytest.raises(ValueError, match=r"notes.txt: expected a .jsonl"):
        TF.file_format(other)
    scalar = tmp_path / "n.json"
    scalar.write_text("3")
    with pytest.raises(ValueError, match="n.json is not a JSON list"):
        TF.file_format(scalar)


def test_a_reflection_round_is_recognised_by_its_cue():
    # The released Reflexion trajectories' words, written out (not built from the marker).
    released = "Now that I haven't solved the task within 5 steps, let me do a reflection and think about how to improve my strategy."
    assert T.Step(thought=released + " So I search again.").is_reflection
    assert not T.Step(thought="I should search again.").is_reflection
