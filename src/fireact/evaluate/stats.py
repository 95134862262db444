"""How sure a result is: bootstrap intervals over questions, and paired tests of two agents.

A rate over questions (EM, F1, success) gets a 95% percentile-bootstrap interval of its mean
(scipy.stats.bootstrap, 10,000 resamples, seeded, so the same scores give the same interval).
Two agents run on the same questions are compared question by question: the mean difference
with its paired-bootstrap interval, and for EM (right or wrong per question) McNemar's exact
test, a two-sided binomial test on the questions only one of the two got right. A question an
agent lacks or did not score is its failure, in the tables and the paired tests alike; a report
that makes several comparisons reads each at a Holm-adjusted p. Before a run, how large a
difference its number of questions can show at all: `detectable_difference`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
RESAMPLES = 10_000
SEED = 0
SIGNIFICANCE = 0.05  # the level the comparison's one-line verdict is read at
POWER = 0.8


def detectable_difference(n: int, alpha: float = SIGNIFICANCE, power: float = POWER) -> float:
    """The smallest EM difference between two agents of n questions each that a two-sided test at
    `alpha` finds with probability `power`, for EM near 0.5, where a rate varies most (so it holds
    at any EM): (z_{1-alpha/2} + z_power) * sqrt(2 * 0.5 * 0.5 / n). A paired test on the same
    questions can find less when the two agents agree on most of them."""
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    return float(z * np.sqrt(0.5 / n))


def interval(values: Sequence[float], resamples: int = RESAMPLES, seed: int = SEED) -> tuple[float, float]:
    """The 95% bootstrap interval of the mean of `values` ((nan, nan) for no values)."""
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        return float("nan"), float("nan")
    if np.all(data == data[0]):  # every resample has the same mean (and scipy warns)
        return float(data[0]), float(data[0])
    result = stats.bootstrap(
        (data,), np.mean, n_resamples=resamples, confidence_level=CONFIDENCE,
        method="percentile", rng=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def with_intervals(scores: Mapping[str, Sequence[float]]) -> dict[str, float]:
    """{name_ci_low, name_ci_high} for each named list of per-question scores."""
    out = {}
    for name, values in scores.items():
        out[f"{name}_ci_low"], out[f"{name}_ci_high"] = interval(values)
    return out


def with_interval(values: Mapping[str, float], key: str) -> str:
    """`0.15 [0.1, 0.2]`: values[key] with its interval (keys KEY_ci_low, KEY_ci_high), if it has one."""
    value = values[key]
    text = f"{value:.4g}" if isinstance(value, float) else str(value)
    if f"{key}_ci_low" in values:
        text += f" [{values[key + '_ci_low']:.4g}, {values[key + '_ci_high']:.4g}]"
    return text


def mcnemar_exact(a: Sequence[float], b: Sequence[float]) -> tuple[int, int, float]:
    """(questions only `a` got right, only `b` got right, exact two-sided p-value)."""
    right_a, right_b = np.asarray(a) == 1, np.asarray(b) == 1
    only_a, only_b = int(np.sum(right_a & ~right_b)), int(np.sum(right_b & ~right_a))
    if only_a + only_b == 0:
        return 0, 0, 1.0
    return only_a, only_b, float(stats.binomtest(only_a, only_a + only_b, 0.5).pvalue)


def paired_difference(a: Sequence[float], b: Sequence[float], resamples: int = RESAMPLES, seed: int = SEED) -> tuple[float, float, float]:
    """(mean of a - b, its 95% paired-bootstrap interval) over the same questions in the same order."""
    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    low, high = interval(diff, resamples, seed)
    return float(diff.mean()) if diff.size else float("nan"), low, high


def score(value: float | None) -> float:
    """A question's score as compared: one not scored (None; a blank or NaN read from a file) is a
    failure, 0.0, as a question an agent lacks is; a NaN would otherwise survive `or 0.0`."""
    return 0.0 if value is None or value != value else float(value)


def compare(a: Mapping[str, Mapping[str, float]], b: Mapping[str, Mapping[str, float]],
            questions: Sequence[str] | None = None) -> dict[str, float]:
    """Agent `a` against agent `b`, each given as {qid: {"em": ..., "f1": ...}}, over `questions`
    (default: every question either has). The rule the summaries follow: a question an agent lacks,
    or did not score, counts as its failure; missing_a and missing_b say how many it lacked.
    Returns n_paired, missing_a, missing_b, em_diff (a - b) with em_diff_ci_low/high, f1_diff
    likewise, only_a_right, only_b_right and mcnemar_p (EM)."""
    qids = list(questions) if questions is not None else list(dict.fromkeys([*a, *b]))
    lacking = {"em": 0.0, "f1": 0.0}
    scores = {m: ([score(a.get(q, lacking)[m]) for q in qids], [score(b.get(q, lacking)[m]) for q in qids])
              for m in ("em", "f1")}
    out: dict[str, float] = {"n_paired": len(qids), "missing_a": sum(q not in a for q in qids),
                             "missing_b": sum(q not in b for q in qids)}
    for metric, (first, second) in scores.items():
        out[f"{metric}_diff"], out[f"{metric}_diff_ci_low"], out[f"{metric}_diff_ci_high"] = paired_difference(first, second)
    out["only_a_right"], out["only_b_right"], out["mcnemar_p"] = mcnemar_exact(*scores["em"])
    return out


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of p-values from several tests of one report, in their order:
    the family-wise error rate stays at the level each adjusted p is read at."""
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    adjusted, running = [0.0] * len(pvalues), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(pvalues) - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def adjust_for_multiple(comparisons: Sequence[dict[str, float]]) -> None:
    """Where a report makes several comparisons, each gets `mcnemar_p_holm` (Holm over all of
    them), which its verdict is then read at."""
    if len(comparisons) > 1:
        for comparison, adjusted in zip(comparisons, holm([c["mcnemar_p"] for c in comparisons])):
            comparison["mcnemar_p_holm"] = adjusted


def verdict(comparison: Mapping[str, float], a: str, b: str) -> str:
    """One sentence: is `a` better or worse than `b` on EM at the SIGNIFICANCE level (Holm-adjusted
    when the report makes several comparisons), on how many questions."""
    n, p, diff = int(comparison["n_paired"]), comparison["mcnemar_p"], comparison["em_diff"]
    counts = (f"{a} alone right on {comparison['only_a_right']}, {b} alone on {comparison['only_b_right']} "
              f"of {n} questions; McNemar exact p = {p:.2g}")
    if "mcnemar_p_holm" in comparison:
        p = comparison["mcnemar_p_holm"]
        counts += f", Holm-adjusted {p:.2g}"
    missing = [f"{name} lacked {comparison[key]}" for name, key in ((a, "missing_a"), (b, "missing_b"))
               if comparison.get(key)]
    if missing:
        counts += f"; {' and '.join(missing)}, counted as failures"
    if p < SIGNIFICANCE:
        direction = "beats" if diff > 0 else "is worse than"
        return f"{a} {direction} {b} on EM at the {SIGNIFICANCE:g} level ({counts})."
    return f"No significant EM difference between {a} and {b} at the {SIGNIFICANCE:g} level ({counts})."
