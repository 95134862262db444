"""Choosing a method per question (PAPER.md Table 4): the oracle and a random choice.

Given the EM of several methods (or agents) on the same questions:
- oracle EM: the mean over questions of the best EM any method got on it;
- random-choice EM: the EM expected when a method is drawn uniformly for each question,
  i.e. the mean over questions of the mean EM across methods (exact, no sampling), plus,
  with a seed, the EM of one such draw.
A question a method has no trajectory for counts as a failure (EM 0) for that method.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Mapping, Sequence

from fireact.trajectory import Trajectory


def em_by_qid(trajectories: Sequence[Trajectory]) -> dict[str, float]:
    """{qid: em} (the first trajectory of a question wins; no EM counts as 0)."""
    scores: dict[str, float] = {}
    for t in trajectories:
        scores.setdefault(t.qid, t.em or 0.0)
    return scores


def method_choice(
    em_by_method: Mapping[str, Mapping[str, float]], qids: Sequence[str], seed: int | None = None
) -> dict[str, float]:
    """{em_<method> for each method, oracle_em, random_em (expected), random_sample_em (with a seed)}."""
    if len(em_by_method) < 2:
        raise ValueError(f"method choice compares two or more methods; got {list(em_by_method)}")
    if not qids:
        raise ValueError("method choice needs at least one question")
    methods = list(em_by_method)
    table = [[em_by_method[m].get(q, 0.0) for m in methods] for q in qids]
    result = {f"em_{m}": statistics.fmean(row[i] for row in table) for i, m in enumerate(methods)}
    result["oracle_em"] = statistics.fmean(max(row) for row in table)
    result["random_em"] = statistics.fmean(statistics.fmean(row) for row in table)
    if seed is not None:
        rng = random.Random(seed)
        result["random_sample_em"] = statistics.fmean(rng.choice(row) for row in table)
    return result
