"""Agreement between two agents' trajectories on the same questions."""

import dataclasses
import math

from fireact.evaluate.agreement import agreement, same_trajectory
from fireact.trajectory import Step, Trajectory


def trajectory(qid: str, *queries: str, answer: str = "Paris") -> Trajectory:
    steps = [Step(f"I search {q}.", "search", q, f"{q} is a city.") for q in queries]
    steps.append(Step("I know it.", "finish", answer))
    return Trajectory(task="hotpotqa", qid=qid, question="?", gold="Paris", steps=steps, answer=answer)


def test_same_trajectory_compares_every_step_and_the_answer():
    a = trajectory("1", "Paris", "France")
    assert same_trajectory(a, trajectory("1", "Paris", "France"))
    assert not same_trajectory(a, trajectory("1", "Paris", "Lyon"))
    assert not same_trajectory(a, trajectory("1", "Paris", "France", answer="Lyon"))
    assert not same_trajectory(a, trajectory("1", "Paris"))


def test_agreement_over_the_questions_both_have():
    reference = [trajectory("1", "a"), trajectory("2", "b"), trajectory("3", "c"), trajectory("4", "d")]
    other = [
        trajectory("1", "a"),                 # the same
        trajectory("2", "b", "x"),            # same first step, another trajectory, same answer
        trajectory("3", "z", answer="Rome"),  # different from the first step
        trajectory("5", "e"),                 # not in the reference: not compared
    ]
    result = agreement(reference, other)
    assert result["compared"] == 3
    assert result["same_trajectory"] == 1 / 3
    assert result["same_answer"] == 2 / 3
    assert result["same_first_step"] == 2 / 3


def test_the_first_trajectory_of_a_question_wins_and_no_overlap_is_nan():
    reference = [trajectory("1", "a"), trajectory("1", "other")]
    assert agreement(reference, [trajectory("1", "a")])["same_trajectory"] == 1.0
    empty = agreement(reference, [trajectory("9", "a")])
    assert empty["compared"] == 0 and math.isnan(empty["same_trajectory"])


def test_trajectories_are_compared_by_content_not_identity():
    a = trajectory("1", "a")
    assert same_trajectory(a, dataclasses.replace(a, wall_time=99.0, backend="vllm"))
