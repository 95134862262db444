"""Scoring equals the FireAct/ReAct scripts on hand-checked cases."""

import pytest

from fireact.tasks.metrics import exact_match, f1_score, letter_prefix_match, normalize_answer, yes_no_match


@pytest.mark.parametrize(
    "text, normalised",
    [
        ("The Beatles", "beatles"),
        ("  An   apple a day ", "apple day"),
        ("U.S.A.", "usa"),
        ("Theatre", "theatre"),  # "the" only as a word
        ("anthem, the", "anthem"),
        ("1,800 to 7,000 ft", "1800 to 7000 ft"),
        ("Rock 'n' Roll!", "rock n roll"),
        ("", ""),
        ("A", ""),
    ],
)
def test_normalize_answer(text, normalised):
    assert normalize_answer(text) == normalised


@pytest.mark.parametrize(
    "pred, gold, em",
    [
        ("Richard Nixon", "richard nixon", 1.0),
        ("the Saimaa Gesture", "The Saimaa Gesture", 1.0),
        ("Saimaa Gesture.", "The Saimaa Gesture", 1.0),
        ("Nixon", "Richard Nixon", 0.0),
        ("yes", "Yes", 1.0),
        ("", "", 1.0),
    ],
)
def test_exact_match(pred, gold, em):
    assert exact_match(pred, gold) == em


def test_f1_partial_overlap():
    # pred tokens [richard, m, nixon], gold [richard, nixon]: p = 2/3, r = 1
    assert f1_score("Richard M. Nixon", "Richard Nixon") == pytest.approx(0.8)


def test_f1_counts_repeated_tokens_once_each():
    # common = min counts: "new" once; p = 1/3, r = 1/2
    assert f1_score("new new york", "new jersey") == pytest.approx(2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2))


@pytest.mark.parametrize(
    "pred, gold",
    [("yes", "no"), ("no", "no way"), ("yes it is", "yes"), ("noanswer", "no answer")],
)
def test_f1_yes_no_only_match_themselves(pred, gold):
    assert f1_score(pred, gold) == 0.0


def test_f1_yes_matches_yes_and_no_overlap_is_zero():
    assert f1_score("Yes.", "yes") == 1.0
    assert f1_score("Paris", "London") == 0.0
    assert f1_score("the", "a") == 0.0  # both normalise to empty


@pytest.mark.parametrize(
    "pred, gold, em",
    [
        ("yes", "yes", 1.0),
        ("Yes, because ...", "yes", 1.0),
        ("no", "no", 1.0),
        ("No.", "no", 1.0),
        ("none of them", "no", 1.0),  # the paper's prefix rule: "none" starts with "no"
        ("yes", "no", 0.0),
        ("maybe", "yes", 0.0),
        (" yes", "yes", 0.0),  # no stripping in the original script
    ],
)
def test_strategyqa_yes_no_prefix(pred, gold, em):
    assert yes_no_match(pred, gold) == em


@pytest.mark.parametrize(
    "pred, gold, em",
    [("B", "B", 1.0), ("b", "B", 1.0), ("B. sunlight", "B", 1.0), ("A", "B", 0.0), ("(B)", "B", 0.0), ("", "B", 0.0)],
)
def test_mmlu_letter_prefix(pred, gold, em):
    assert letter_prefix_match(pred, gold) == em
