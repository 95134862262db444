"""Answer scoring, equal to the FireAct/ReAct evaluation scripts.

HotpotQA and Bamboogle: exact match and token F1 after SQuAD-style normalisation, with the
HotpotQA rule that yes/no/noanswer only ever match themselves in F1. StrategyQA: the
prediction starts with "yes" or "no" and that agrees with the boolean gold. MMLU: the
prediction starts with the gold letter.
"""

import re
import string
from collections import Counter

_DROP_PUNCTUATION = str.maketrans("", "", string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_CLOSED_ANSWERS = ("yes", "no", "noanswer")


def normalize_answer(text: str) -> str:
    """Lower-case, strip punctuation, drop a/an/the, fold white space (in that order). Also how
    questions are matched (the released-data importer, the contamination check)."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_DROP_PUNCTUATION)).split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1_score(prediction: str, gold: str) -> float:
    pred, truth = normalize_answer(prediction), normalize_answer(gold)
    if (pred in _CLOSED_ANSWERS or truth in _CLOSED_ANSWERS) and pred != truth:
        return 0.0
    pred_tokens, truth_tokens = pred.split(), truth.split()
    common = sum((Counter(pred_tokens) & Counter(truth_tokens)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred_tokens), common / len(truth_tokens)
    return 2 * precision * recall / (precision + recall)


def yes_no_match(prediction: str, gold: str) -> float:
    """StrategyQA: gold is "yes" or "no"; the prediction must start with the same word."""
    pred = prediction.lower()
    return float(
        (pred.startswith("yes") and gold == "yes") or (pred.startswith("no") and gold == "no")
    )


def letter_prefix_match(prediction: str, gold: str) -> float:
    """MMLU: the prediction must start with the gold letter (case-insensitive)."""
    return float(prediction.lower().startswith(gold.lower()))
