"""Intervals and paired tests against scipy and hand counts on fixed data."""

import numpy as np
import pytest
from scipy import stats as scipy_stats

from fireact.evaluate import stats
from fireact.evaluate.summary import summarize
from fireact.trajectory import Trajectory

EM = [1.0] * 15 + [0.0] * 85
F1 = list(np.linspace(0, 1, 100))


def test_interval_is_scipys_seeded_percentile_bootstrap():
    expected = scipy_stats.bootstrap(
        (np.array(EM),), np.mean, n_resamples=10_000, method="percentile", rng=np.random.default_rng(0),
    ).confidence_interval
    assert stats.interval(EM) == (pytest.approx(expected.low), pytest.approx(expected.high))
    assert stats.interval(EM) == stats.interval(EM)  # seeded: the same data, the same interval
    low, high = stats.interval(EM)
    assert low < 0.15 < high and 0.07 < low < 0.10 and 0.20 < high < 0.23  # the normal approximation's 0.08-0.22


def test_interval_of_constant_or_no_scores():
    assert stats.interval([0.0] * 50) == (0.0, 0.0)
    assert stats.interval([1.0] * 3) == (1.0, 1.0)
    assert all(np.isnan(stats.interval([])))


def test_mcnemar_exact_is_the_binomial_test_on_the_discordant_questions():
    a = [1] * 15 + [0] * 85
    b = [1] + [0] * 14 + [1] + [0] * 84  # both right on 1, only a on 14, only b on 1
    only_a, only_b, p = stats.mcnemar_exact(a, b)
    assert (only_a, only_b) == (14, 1)
    assert p == pytest.approx(scipy_stats.binomtest(14, 15, 0.5).pvalue)
    assert p == pytest.approx(2 * sum(scipy_stats.binom.pmf(k, 15, 0.5) for k in range(0, 2)))  # 0.00098
    assert stats.mcnemar_exact([1, 0], [1, 0]) == (0, 0, 1.0)


def test_paired_difference_resamples_questions_not_agents():
    a, b = np.array(F1), np.array(F1) - 0.1  # a is better by exactly 0.1 on every question
    diff, low, high = stats.paired_difference(a, b)
    assert diff == pytest.approx(0.1) and low == pytest.approx(0.1) and high == pytest.approx(0.1)
    unpaired_width = np.subtract(*reversed(stats.interval(a))) + np.subtract(*reversed(stats.interval(b)))
    assert unpaired_width > 0.1  # unpaired intervals of the two would overlap


def test_compare_pairs_by_question_id_and_counts_missing_ones_out():
    a = {"q1": {"em": 1.0, "f1": 1.0}, "q2": {"em": 0.0, "f1": 0.5}, "q3": {"em": 1.0, "f1": 1.0}}
    b = {"q2": {"em": 1.0, "f1": 1.0}, "q1": {"em": 0.0, "f1": 0.0}}
    result = stats.compare(a, b)
    assert result["n_paired"] == 2 and result["only_a_right"] == 1 and result["only_b_right"] == 1
    assert result["em_diff"] == 0.0 and result["f1_diff"] == pytest.approx(0.25)
    assert result["mcnemar_p"] == 1.0
    assert "No significant EM difference" in stats.verdict(result, "A", "B")
    strong = stats.compare({f"q{i}": {"em": 1.0, "f1": 1.0} for i in range(20)},
                           {f"q{i}": {"em": 0.0, "f1": 0.0} for i in range(20)})
    assert strong["mcnemar_p"] == pytest.approx(2 * 0.5 ** 20)
    assert stats.verdict(strong, "A", "B").startswith("A beats B on EM at the 0.05 level")


def test_summary_intervals_count_missing_questions_as_failures():
    trajectories = [Trajectory("hotpotqa", f"q{i}", "?", "x", em=float(i < 3), f1=float(i < 3)) for i in range(10)]
    summary = summarize(trajectories, n_questions=20)
    assert summary["em"] == pytest.approx(0.15)
    assert (summary["em_ci_low"], summary["em_ci_high"]) == stats.interval([1.0] * 3 + [0.0] * 17)
    assert stats.with_interval(summary, "em").startswith("0.15 [")
