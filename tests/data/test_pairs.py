"""Preference pairs from sampled trajectories: success x failure of the same question, seeded,
capped, duplicates once, step-less failures out; written and read back; built from a
generate folder."""

import json
from dataclasses import replace

import pytest

from fireact.data.pairs import build_pairs, distinct_per_question, load_pairs, read_pairs, write_pairs
from fireact.trajectory import Step, Trajectory
from fireact.trajectory_files import write_jsonl


def sampled(qid: str, answer: str, gold: str = "Paris", sample: int = 0, thought: str = "") -> Trajectory:
    em = float(answer == gold)
    steps = [Step(thought or f"I think {answer}.", "finish", answer, f"Episode finished, reward = {bool(em)}")]
    return Trajectory("hotpotqa", qid, f"question {qid}?", gold, steps=steps, answer=answer, em=em, f1=em, sample=sample)


def test_each_question_pairs_its_successes_with_its_failures_only():
    trajectories = [
        sampled("1", "Paris", sample=0), sampled("1", "Lyon", sample=1), sampled("1", "Nice", sample=2),
        sampled("2", "Paris", sample=0), sampled("2", "Paris", sample=1),  # only successes: no pair
        sampled("3", "Rome", sample=0),  # only a failure: no pair
    ]
    pairs = build_pairs(trajectories, per_question=4)
    assert [(p.chosen.qid, p.chosen.answer, p.rejected.answer) for p in pairs] == [("1", "Paris", "Lyon"), ("1", "Paris", "Nice")]


def test_duplicates_count_once_and_failures_without_steps_are_left_out():
    success = sampled("1", "Paris")
    errored = replace(sampled("1", "", sample=3), steps=[], answer=None, error="LLM request failed")
    trajectories = [success, replace(success, sample=1), sampled("1", "Lyon", sample=2), errored]
    assert len(build_pairs(trajectories)) == 1


def test_the_cap_draws_a_seeded_subset():
    trajectories = [sampled("1", "Paris", sample=s, thought=f"way {s}") for s in range(3)]
    trajectories += [sampled("1", city, sample=3 + s) for s, city in enumerate(["Lyon", "Nice", "Lille"])]
    every = build_pairs(trajectories, per_question=9)
    assert len(every) == 9
    drawn = build_pairs(trajectories, per_question=4, seed=1)
    assert len(drawn) == 4 and drawn == build_pairs(trajectories, per_question=4, seed=1)
    assert all(p in every for p in drawn)
    assert {tuple(map(id, (p.chosen, p.rejected))) for p in drawn} != {
        tuple(map(id, (p.chosen, p.rejected))) for p in build_pairs(trajectories, per_question=4, seed=0)}
    with pytest.raises(ValueError, match="at least 1"):
        build_pairs(trajectories, per_question=0)


def test_pairs_round_trip_and_load_from_a_generate_folder(tmp_path):
    trajectories = [sampled("1", "Paris"), sampled("1", "Lyon", sample=1), sampled("2", "Oslo", gold="Oslo"),
                    sampled("2", "Bergen", gold="Oslo", sample=1)]
    write_jsonl(tmp_path / "trajectories.jsonl", [t for t in trajectories if t.em == 1.0])
    write_jsonl(tmp_path / "failures.jsonl", [t for t in trajectories if t.em == 0.0])
    built = load_pairs(tmp_path)
    assert [(p.chosen.qid, p.rejected.answer) for p in built] == [("1", "Lyon"), ("2", "Bergen")]
    write_pairs(tmp_path / "out.jsonl", built)
    read, report = read_pairs(tmp_path / "out.jsonl")
    assert read == built and not report.failures
    assert set(json.loads((tmp_path / "out.jsonl").read_text().splitlines()[0])) == {"chosen", "rejected"}


def test_unusable_inputs_name_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="generate samples=4"):
        load_pairs(tmp_path)
    write_jsonl(tmp_path / "trajectories.jsonl", [sampled("1", "Paris")])
    with pytest.raises(ValueError, match="no question has both a success and a failure"):
        load_pairs(tmp_path)


def test_successes_are_kept_distinct_and_capped_per_question():
    first, again, other = sampled("1", "Paris"), replace(sampled("1", "Paris"), sample=1), sampled("1", "Paris", sample=2, thought="Hm.")
    third = sampled("1", "Paris", sample=3, thought="So.")
    two = sampled("2", "Oslo", gold="Oslo")
    kept = distinct_per_question([first, again, two, other, third], per_question=2)
    assert kept == [first, two, other]  # the duplicate once, then at most 2 per question, in file order
    with pytest.raises(ValueError, match="data.per_question"):
        distinct_per_question([first], per_question=0)
