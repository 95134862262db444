"""Our own trajectory files as a source: corrupt lines reported by number, the rest used."""

import hashlib
import json
import logging

import pytest

from fireact.data.sources import TrajectoryFiles
from fireact.trajectory import Step, Trajectory
from fireact.trajectory_files import write_jsonl


def rollouts():
    return [
        Trajectory(task="hotpotqa", qid="1", question="Who?", gold="Ann", method="react", em=1.0,
                   steps=[Step("Search.", "search", "who", "Ann."), Step("Ann.", "finish", "Ann")]),
        Trajectory(task="hotpotqa", qid="2", question="When?", gold="1990", method="cot", em=1.0,
                   steps=[Step(thought="It was 1990.\nAnswer: 1990")]),
        Trajectory(task="strategyqa", qid="3", question="Can it?", gold="yes", method="io", answer="yes", em=1.0),
    ]


def test_reads_converts_and_hashes_the_files(tmp_path):
    path = tmp_path / "generated.jsonl"
    write_jsonl(path, rollouts())
    loaded = TrajectoryFiles([str(path)]).load()
    assert [t.react_text() for t in loaded.trajectories] == [
        "Thought: Search.\nAction: search[who]\nObservation: Ann.\nThought: Ann.\nAction: finish[Ann]\n",
        "Thought: It was 1990.\nAction: finish[1990]\n",
        "Action: finish[yes]\n",
    ]
    assert [t.method for t in loaded.trajectories] == ["react", "cot", "io"]
    assert loaded.files == [{"path": str(path.resolve()), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}]
    assert loaded.tables[str(path)] == {("hotpotqa", "react"): 1, ("hotpotqa", "cot"): 1, ("strategyqa", "io"): 1}


def test_a_corrupt_line_is_reported_with_its_number_and_the_rest_is_read(tmp_path, caplog):
    path = tmp_path / "torn.jsonl"
    write_jsonl(path, rollouts())
    lines = path.read_text().splitlines()
    lines.insert(1, lines[1][:40])  # a line torn mid-write
    lines.insert(3, json.dumps({"task": "hotpotqa", "not_a_field": 1}))
    path.write_text("\n".join(lines) + "\n")
    with caplog.at_level(logging.WARNING):
        loaded = TrajectoryFiles([str(path)]).load()
    assert [t.qid for t in loaded.trajectories] == ["1", "2", "3"]
    assert any("line 2 could not be read (skipped): invalid JSON" in note for note in loaded.notes)
    assert any("line 4 could not be read (skipped)" in note and "not_a_field" in note for note in loaded.notes)
    assert "line 2 could not be read" in caplog.text


def test_records_without_task_or_with_an_unknown_method_are_refused(tmp_path):
    bad_task, bad_method = rollouts()[:1], rollouts()[:1]
    bad_task[0].task = ""
    bad_method[0].method = "tree_of_thought"
    write_jsonl(tmp_path / "a.jsonl", bad_task)
    write_jsonl(tmp_path / "b.jsonl", bad_method)
    with pytest.raises(ValueError, match=r"a.jsonl: trajectory 1 \('1'\) has no task"):
        TrajectoryFiles([str(tmp_path / "a.jsonl")]).load()
    with pytest.raises(ValueError, match=r"b.jsonl: trajectory 1 \('1'\) has method 'tree_of_thought'; choose one of"):
        TrajectoryFiles([str(tmp_path / "b.jsonl")]).load()


def test_missing_files_and_empty_lists_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl does not exist"):
        TrajectoryFiles([str(tmp_path / "nope.jsonl")]).load()
    with pytest.raises(ValueError, match="data_source.paths is empty"):
        TrajectoryFiles([])
