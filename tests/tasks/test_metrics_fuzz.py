"""Property-based tests of answer normalisation and scoring over arbitrary text (unicode,
punctuation, articles, white space): never raises, normalising is idempotent, EM is 0 or 1,
F1 lies in [0, 1], and the scores agree with each other."""

import os
import re
import string

from hypothesis import example, given, settings
from hypothesis import strategies as st

from fireact.tasks import Bamboogle, HotpotQA, MMLU, StrategyQA
from fireact.tasks.metrics import exact_match, f1_score, letter_prefix_match, normalize_answer, yes_no_match

PIECES = ["a", "an", "the", "The", "A", "yes", "no", "noanswer", "Yes.", " ", "\t", "\n", "\u00a0", "\u2028",
          ",", ".", "'", "-", "İ", "ß", "Σ", "ς", "ﬁ", "\u0301", "é", "漢字", "🙂", "1,800"]
answers = st.one_of(
    st.text(),
    st.lists(st.one_of(st.sampled_from(PIECES + list(string.punctuation)), st.text(max_size=6)), max_size=15).map("".join),
)
# FIREACT_FUZZ_EXAMPLES=5000 searches harder (the default keeps the suite fast).
FUZZ = settings(max_examples=int(os.environ.get("FIREACT_FUZZ_EXAMPLES", "300")), deadline=None)


@FUZZ
@given(answers)
@example("")
@example("İ")  # lower() turns one character into two
@example("ΑΣ.Α")  # the final-sigma rule depends on what follows
@example("a.n")  # punctuation removed first, then the article
def test_normalize_equals_the_official_scripts(text):
    """The SQuAD / HotpotQA evaluation scripts' normalize_answer, written as they write it."""
    lowered = text.lower()
    no_punctuation = "".join(ch for ch in lowered if ch not in set(string.punctuation))
    assert normalize_answer(text) == " ".join(re.sub(r"\b(a|an|the)\b", " ", no_punctuation).split())


@FUZZ
@given(answers)
@example("")
@example("İ")
def test_normalize_is_idempotent_and_canonical(text):
    once = normalize_answer(text)
    assert normalize_answer(once) == once
    assert once == " ".join(once.split())  # no leading, trailing or doubled white space
    assert not set(once) & set(string.punctuation)
    assert not {"a", "an", "the"} & set(once.split())


@FUZZ
@given(answers, answers)
@example("", "")
@example("yes", "yes.")
@example("the", "a")
def test_em_is_0_or_1_and_f1_in_0_1(prediction, gold):
    em, f1 = exact_match(prediction, gold), f1_score(prediction, gold)
    assert em in (0.0, 1.0) and 0.0 <= f1 <= 1.0
    assert em == exact_match(gold, prediction) and f1 == f1_score(gold, prediction)  # symmetric
    assert em == float(normalize_answer(prediction) == normalize_answer(gold))
    if em == 1.0 and normalize_answer(gold):
        assert f1 == 1.0
    if f1 == 1.0:  # the same tokens, perhaps in another order
        assert sorted(normalize_answer(prediction).split()) == sorted(normalize_answer(gold).split())


@FUZZ
@given(answers)
def test_an_answer_matches_itself(answer):
    assert exact_match(answer, answer) == 1.0
    assert f1_score(answer, answer) == (1.0 if normalize_answer(answer) else 0.0)  # nothing left: F1 0, as in the scripts


@FUZZ
@given(answers, st.sampled_from(["yes", "no"]), st.sampled_from("ABCD"))
def test_strategyqa_and_mmlu_scores_are_0_or_1(prediction, yes_no, letter):
    assert yes_no_match(prediction, yes_no) in (0.0, 1.0)
    assert letter_prefix_match(prediction, letter) in (0.0, 1.0)
    assert yes_no_match(yes_no + prediction, yes_no) == 1.0
    assert letter_prefix_match(letter.lower() + prediction, letter) == 1.0


TASKS = [HotpotQA(n=1), Bamboogle(), StrategyQA(), MMLU()]


@FUZZ
@given(answers, answers, st.sampled_from(TASKS))
def test_every_task_scores_any_answer(prediction, gold, task):
    scores = task.score(prediction, gold)
    assert set(scores) == {"em", "f1"} and scores["em"] in (0.0, 1.0) and 0.0 <= scores["f1"] <= 1.0
