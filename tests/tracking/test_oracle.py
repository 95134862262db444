"""Oracle and random method choice (PAPER.md Table 4) over per-question EMs."""

import pytest

from fireact.evaluate.oracle import em_by_qid, method_choice

EMS = {
    "react": {"q1": 1.0, "q2": 0.0, "q3": 1.0, "q4": 0.0},
    "cot": {"q1": 0.0, "q2": 1.0, "q3": 1.0},  # q4 missing: a failure
    "reflexion": {"q1": 0.0, "q2": 0.0, "q3": 0.0, "q4": 0.0},
}
QIDS = ["q1", "q2", "q3", "q4"]


def test_oracle_takes_the_best_method_per_question():
    result = method_choice(EMS, QIDS)
    assert result["em_react"] == 0.5 and result["em_cot"] == 0.5 and result["em_reflexion"] == 0.0
    assert result["oracle_em"] == 0.75  # q1 react, q2 cot, q3 either, q4 none


def test_random_choice_is_the_exact_expectation():
    result = method_choice(EMS, QIDS)
    # per question the share of methods that got it right: 1/3, 1/3, 2/3, 0
    assert result["random_em"] == pytest.approx((1 / 3 + 1 / 3 + 2 / 3 + 0) / 4)
    assert "random_sample_em" not in result


def test_a_seeded_sample_is_reproducible_and_between_worst_and_oracle():
    first, again = method_choice(EMS, QIDS, seed=7), method_choice(EMS, QIDS, seed=7)
    assert first["random_sample_em"] == again["random_sample_em"]
    assert 0.0 <= first["random_sample_em"] <= first["oracle_em"]
    samples = {method_choice(EMS, QIDS, seed=s)["random_sample_em"] for s in range(30)}
    assert len(samples) > 1  # the draw depends on the seed


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="two or more"):
        method_choice({"react": EMS["react"]}, QIDS)
    with pytest.raises(ValueError, match="at least one question"):
        method_choice(EMS, [])


def test_em_by_qid_keeps_the_first_trajectory(released_7b):
    duplicate = released_7b[0]
    scores = em_by_qid([duplicate, *released_7b[:3]])
    assert list(scores) == [t.qid for t in released_7b[:3]]
    assert scores[duplicate.qid] == duplicate.em
