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


def test_compare_pairs_by_question_id_and_counts_a_missing_question_as_a_failure():
    a = {"q1": {"em": 1.0, "f1": 1.0}, "q2": {"em": 0.0, "f1": 0.5}, "q3": {"em": 1.0, "f1": 1.0}}
    b = {"q2": {"em": 1.0, "f1": 1.0}, "q1": {"em": 0.0, "f1": 0.0}}
    result = stats.compare(a, b)
    assert result["n_paired"] == 3 and result["missing_a"] == 0 and result["missing_b"] == 1
    assert result["only_a_right"] == 2 and result["only_b_right"] == 1
    # the same difference the summaries' tables show, each over the 3 questions (b's q3 a failure)
    assert result["em_diff"] == pytest.approx(2 / 3 - 1 / 3) and result["f1_diff"] == pytest.approx(2.5 / 3 - 1 / 3)
    assert result["mcnemar_p"] == 1.0
    text = stats.verdict(result, "A", "B")
    assert "No significant EM difference" in text and "B lacked 1, counted as failures" in text
    over = stats.compare(a, b, questions=["q1", "q2", "q3", "q4"])  # the set both were asked
    assert over["n_paired"] == 4 and over["missing_a"] == 1 and over["missing_b"] == 2
    assert over["em_diff"] == pytest.approx(2 / 4 - 1 / 4)
    strong = stats.compare({f"q{i}": {"em": 1.0, "f1": 1.0} for i in range(20)},
                           {f"q{i}": {"em": 0.0, "f1": 0.0} for i in range(20)})
    assert strong["mcnemar_p"] == pytest.approx(2 * 0.5 ** 20)
    assert stats.verdict(strong, "A", "B").startswith("A beats B on EM at the 0.05 level")


def test_an_unscored_question_is_a_failure_and_never_reaches_a_verdict_as_nan():
    a = {"q1": {"em": float("nan"), "f1": None}, "q2": {"em": 1.0, "f1": 1.0}}
    b = {"q1": {"em": 0.0, "f1": 0.0}, "q2": {"em": 1.0, "f1": 1.0}}
    result = stats.compare(a, b)
    assert result["em_diff"] == 0.0 and result["f1_diff"] == 0.0 and result["only_b_right"] == 0
    assert stats.verdict(result, "A", "B").startswith("No significant EM difference")


def test_holm_adjusts_each_p_value_step_down():
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert stats.holm([0.5]) == [0.5] and stats.holm([0.4, 0.9]) == pytest.approx([0.8, 0.9])


def test_several_comparisons_are_read_at_their_holm_adjusted_p():
    """Two comparisons, each significant alone (A alone right on 6 questions of 10, p = 0.031), are
    not once adjusted for being two (Holm: 0.062 each)."""
    a = {f"q{i}": {"em": 1.0, "f1": 1.0} for i in range(10)}
    b = {f"q{i}": {"em": float(i >= 6), "f1": 0.0} for i in range(10)}
    c = {f"q{i}": {"em": float(i < 4), "f1": 0.0} for i in range(10)}
    one, two = stats.compare(a, b), stats.compare(a, c)
    assert one["mcnemar_p"] == two["mcnemar_p"] == pytest.approx(0.03125)
    assert stats.verdict(one, "A", "B").startswith("A beats B")
    stats.adjust_for_multiple([one, two])
    assert one["mcnemar_p_holm"] == two["mcnemar_p_holm"] == pytest.approx(0.0625)
    for comparison in (one, two):
        text = stats.verdict(comparison, "A", "B")
        assert text.startswith("No significant EM difference") and "Holm-adjusted 0.062" in text


def test_summary_intervals_count_missing_questions_as_failures():
    trajectories = [Trajectory("hotpotqa", f"q{i}", "?", "x", em=float(i < 3), f1=float(i < 3)) for i in range(10)]
    summary = summarize(trajectories, n_questions=20)
    assert summary["em"] == pytest.approx(0.15)
    assert (summary["em_ci_low"], summary["em_ci_high"]) == stats.interval([1.0] * 3 + [0.0] * 17)
    assert stats.with_interval(summary, "em").startswith("0.15 [")


def test_the_detectable_difference_is_found_with_the_power_it_promises():
    """Two agents of n questions whose EMs differ by detectable_difference(n) around 0.5: a two-sided
    two-proportion test at 0.05 rejects in about 80% of 4,000 simulated pairs of runs."""
    n = 200
    delta = stats.detectable_difference(n)
    assert delta == pytest.approx(0.1401, abs=1e-4) and stats.detectable_difference(500) < delta
    rng = np.random.default_rng(0)
    a = rng.binomial(n, 0.5 - delta / 2, size=4000) / n
    b = rng.binomial(n, 0.5 + delta / 2, size=4000) / n
    pooled = (a + b) / 2
    z = (b - a) / np.sqrt(2 * pooled * (1 - pooled) / n)
    assert np.mean(np.abs(z) > 1.959964) == pytest.approx(0.8, abs=0.03)
