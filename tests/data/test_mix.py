"""How ratios become counts per (task, method), and which trajectories are drawn."""

import logging
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fireact.data.mix import count_cells, plan, sample
from fireact.trajectory import Trajectory

AVAILABLE = {("hotpotqa", "react"): 500, ("hotpotqa", "cot"): 187, ("hotpotqa", "reflexion"): 47,
             ("mmlu", "react"): 456, ("mmlu", "cot"): 246}


def pool_of(available):
    return [
        Trajectory(task=task, qid=f"{task}-{method}-{i}", question=f"q{i}", gold="", method=method)
        for (task, method), k in sorted(available.items()) for i in range(k)
    ]


def test_weights_are_fractions_of_each_cell():
    assert plan(AVAILABLE, {"hotpotqa": 1.0}, {"react": 1, "cot": 1, "reflexion": 1}) == {
        ("hotpotqa", "cot"): 187, ("hotpotqa", "react"): 500, ("hotpotqa", "reflexion"): 47}
    assert plan(AVAILABLE, {"hotpotqa": 1.0, "mmlu": 0.5}, {"react": 1.0, "cot": 0.5}) == {
        ("hotpotqa", "cot"): 94, ("hotpotqa", "react"): 500, ("mmlu", "cot"): 61, ("mmlu", "react"): 228}


def test_n_rescales_the_mix_to_exactly_n_keeping_its_proportions():
    targets = plan(AVAILABLE, {"hotpotqa": 1.0}, {"react": 1, "cot": 1, "reflexion": 1}, n=100)
    # 100 × (187, 500, 47) / 734 = 25.48, 68.12, 6.40: floors 25 + 68 + 6, the largest remainder gets the last one.
    assert targets == {("hotpotqa", "cot"): 26, ("hotpotqa", "react"): 68, ("hotpotqa", "reflexion"): 6}
    assert plan(AVAILABLE, {"hotpotqa": 1.0}, {"react": 1.0}, n=200) == {("hotpotqa", "react"): 200}


def test_asking_for_more_than_exists_is_an_error_that_says_how_much_fits():
    with pytest.raises(ValueError, match=r"hotpotqa/react needs 1000 of 500.*Lower n to at most 500.*replace=true"):
        plan(AVAILABLE, {"hotpotqa": 1.0}, {"react": 1.0}, n=1000)
    with pytest.raises(ValueError, match=r"hotpotqa/cot needs 374 of 187.*weights to at most 1.0"):
        plan(AVAILABLE, {"hotpotqa": 1.0}, {"react": 1.0, "cot": 2.0})


def test_replace_allows_it_with_a_warning_and_repeats_evenly(caplog):
    with caplog.at_level(logging.WARNING):
        targets = plan(AVAILABLE, {"hotpotqa": 1.0}, {"reflexion": 1.0}, n=100, replace=True)
    assert targets == {("hotpotqa", "reflexion"): 100}
    assert "hotpotqa/reflexion needs 100 of 47" in caplog.text
    drawn = sample(pool_of(AVAILABLE), targets, seed=0)
    assert sorted(Counter(t.qid for t in drawn).values()) == [2] * 41 + [3] * 6


@pytest.mark.parametrize("task_mix, method_mix, message", [
    ({"hotpotqa": 1.0}, {"react": -0.5}, r"method_mix.react = -0.5: weights cannot be negative"),
    ({"hotpotqa": 0.0}, {"react": 1.0}, r"task_mix = \{'hotpotqa': 0.0\}: every weight is zero"),
    ({"hotpotqa": 1.0}, {}, r"method_mix = \{\}: every weight is zero"),
    ({"hotpotqa": 1.0}, {"tot": 1.0}, r"method_mix names \['tot'\], which are not among"),
    ({"hotpotqa": 1.0}, {"react": "lots"}, r"method_mix.react = 'lots': a weight must be a number"),
    ({"hotpot": 1.0}, {"react": 1.0}, r"task_mix asks for 'hotpot', which the source does not have; it has \['hotpotqa', 'mmlu'\]"),
    ({"mmlu": 1.0}, {"reflexion": 1.0}, r"task_mix asks for 'mmlu', but the source has none of its trajectories for methods \['reflexion'\]"),
    ({"mmlu": 1.0, "hotpotqa": 1.0}, {"react": 1.0, "io": 1.0}, r"method_mix asks for 'io', but the source has no io trajectories"),
])
def test_bad_ratios_get_a_clear_error(task_mix, method_mix, message):
    with pytest.raises(ValueError, match=message):
        plan(AVAILABLE, task_mix, method_mix)


@pytest.mark.parametrize("n", [0, -3, True, 2.5])
def test_n_must_be_a_positive_integer(n):
    with pytest.raises(ValueError, match="n = .*positive number"):
        plan(AVAILABLE, {"hotpotqa": 1.0}, {"react": 1.0}, n=n)


def test_sampling_is_seeded_nested_and_independent_per_cell():
    pool = pool_of(AVAILABLE)
    mix = ({"hotpotqa": 1.0}, {"react": 1.0, "cot": 1.0})
    small = sample(pool, plan(AVAILABLE, *mix, n=100), seed=3)
    assert count_cells(small) == {("hotpotqa", "react"): 73, ("hotpotqa", "cot"): 27}
    assert [t.qid for t in small] == [t.qid for t in sample(pool, plan(AVAILABLE, *mix, n=100), seed=3)]
    assert {t.qid for t in small} < {t.qid for t in sample(pool, plan(AVAILABLE, *mix, n=300), seed=3)}
    assert {t.qid for t in small} != {t.qid for t in sample(pool, plan(AVAILABLE, *mix, n=100), seed=4)}
    # Changing the CoT share leaves the ReAct picks alone.
    react_picks = lambda drawn: {t.qid for t in drawn if t.method == "react"}  # noqa: E731
    fewer_cot = {("hotpotqa", "react"): 73, ("hotpotqa", "cot"): 5}
    assert react_picks(small) == react_picks(sample(pool, fewer_cot, seed=3))
    # The output is shuffled across cells.
    assert len({t.method for t in small[:20]}) == 2


@settings(max_examples=60, deadline=None)
@given(
    available=st.dictionaries(
        st.tuples(st.sampled_from(["hotpotqa", "mmlu", "strategyqa"]), st.sampled_from(["react", "cot", "reflexion"])),
        st.integers(1, 60), min_size=1),
    weight=st.floats(0.05, 1.0),
    n=st.none() | st.integers(1, 400),
    replace=st.booleans(),
)
def test_plan_and_sample_agree_for_any_mix(available, weight, n, replace):
    tasks = {task: 1.0 for task, _ in available}
    methods = {method: weight for _, method in available}
    try:
        targets = plan(available, tasks, methods, n=n, replace=replace)
    except ValueError as err:
        assert not replace and "more trajectories than exist" in str(err)
        return
    if n is not None:
        assert sum(targets.values()) == n
    assert replace or all(k <= available[cell] for cell, k in targets.items())
    drawn = sample(pool_of(available), targets, seed=1)
    assert count_cells(drawn) == Counter({cell: k for cell, k in targets.items() if k})
