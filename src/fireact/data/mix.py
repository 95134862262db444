"""Mix trajectories by method and task: how many of each (task, method) cell, then which ones.

How the ratios work (conf/method_mix/*.yaml, conf/task_mix/*.yaml):
- A weight is the fraction of a cell's trajectories to take: 1.0 takes all of them, 0.5 half,
  0 (or leaving the name out) none. A cell's target is
      available(task, method) × task weight × method weight.
  The paper's mixes take everything the released data has for the chosen methods and tasks,
  so their files hold 1.0 (e.g. hotpotqa × react_cot_reflexion = 500 + 187 + 47).
- `n`, when set, rescales every target by the same factor so that they sum to exactly `n`
  (largest-remainder rounding, ties to the first cell in (task, method) order): the mix's
  proportions stay, only its size changes (data scaling: n=100, 200, 500, 1000).
- Asking a cell for more than it has (a weight above 1, or an `n` above what the mix holds)
  is an error, unless `replace` is true: then the cell's trajectories are repeated (every one
  ⌊k/available⌋ times, the rest drawn without repeats) and a warning gives the counts.
- Sampling is seeded per cell: the cell's trajectories are shuffled with a generator seeded
  by (seed, task, method) and the first k taken, so a smaller n of the same mix is a subset
  of a larger one, and changing one cell leaves the others' picks alone. The chosen
  trajectories are then shuffled together with the seed. Same pool, same seed, same output.
"""

from __future__ import annotations

import logging
import math
import random
from collections import Counter, defaultdict
from typing import Mapping

from fireact.data.convert import METHODS
from fireact.trajectory import Trajectory

log = logging.getLogger(__name__)

Cell = tuple[str, str]  # (task, method): what the mix's weights select


def count_cells(trajectories: list[Trajectory]) -> Counter[Cell]:
    return Counter((t.task, t.method) for t in trajectories)


def check_weights(name: str, weights: Mapping[str, float], known: tuple[str, ...] | None = None) -> dict[str, float]:
    """The weights as floats; a clear error for unknown names, negative or all-zero weights."""
    weights = dict(weights or {})
    if known is not None:
        unknown = sorted(set(weights) - set(known))
        if unknown:
            raise ValueError(f"{name} names {unknown}, which are not among {list(known)}")
    for key, value in weights.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise ValueError(f"{name}.{key} = {value!r}: a weight must be a number (a fraction of that cell, 1.0 = all)")
        if value < 0:
            raise ValueError(f"{name}.{key} = {value}: weights cannot be negative (0 leaves it out, 1.0 takes all)")
    if not any(value > 0 for value in weights.values()):
        raise ValueError(f"{name} = {weights}: every weight is zero, so nothing would be selected; give one a weight > 0")
    return {key: float(value) for key, value in weights.items()}


def plan(
    available: Mapping[Cell, int],
    task_mix: Mapping[str, float],
    method_mix: Mapping[str, float],
    n: int | None = None,
    replace: bool = False,
) -> dict[Cell, int]:
    """Target count per (task, method) cell, by the rules in the module doc."""
    task_mix = check_weights("task_mix", task_mix)
    method_mix = check_weights("method_mix", method_mix, METHODS)
    _check_present(available, task_mix, method_mix)
    wanted = {
        (task, method): available.get((task, method), 0) * task_weight * method_weight
        for task, task_weight in task_mix.items() if task_weight > 0
        for method, method_weight in method_mix.items() if method_weight > 0
    }
    wanted = {cell: value for cell, value in sorted(wanted.items()) if value > 0}
    total = sum(wanted.values())
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
            raise ValueError(f"n = {n!r}: give a positive number of trajectories, or null for the whole mix")
        wanted = {cell: value * n / total for cell, value in wanted.items()}
    targets = _round_to_total(wanted, n if n is not None else round(total))
    _check_enough(targets, available, n, replace)
    return targets


def _check_present(available, task_mix, method_mix) -> None:
    """A weighted task or method that the source does not have at all is most likely a typo."""
    tasks = sorted({task for task, _ in available})
    chosen_tasks = sorted(task for task, weight in task_mix.items() if weight > 0)
    chosen_methods = sorted(method for method, weight in method_mix.items() if weight > 0)
    for task in chosen_tasks:
        if task not in tasks:
            raise ValueError(f"task_mix asks for {task!r}, which the source does not have; it has {tasks}")
        if not any(available.get((task, method), 0) for method in chosen_methods):
            raise ValueError(
                f"task_mix asks for {task!r}, but the source has none of its trajectories for methods "
                f"{chosen_methods}; set its weight to 0 or change method_mix"
            )
    for method in chosen_methods:
        if not any(available.get((task, method), 0) for task in chosen_tasks):
            raise ValueError(
                f"method_mix asks for {method!r}, but the source has no {method} trajectories for tasks "
                f"{chosen_tasks}; set its weight to 0 or add such trajectories (e.g. from `generate`)"
            )


def _round_to_total(values: dict[Cell, float], total: int) -> dict[Cell, int]:
    counts = {cell: math.floor(value) for cell, value in values.items()}
    by_remainder = sorted(values, key=lambda cell: -(values[cell] - counts[cell]))  # stable: ties keep cell order
    for cell in by_remainder[: total - sum(counts.values())]:
        counts[cell] += 1
    return counts


def _check_enough(targets, available, n, replace) -> None:
    short = {cell: k for cell, k in targets.items() if k > available.get(cell, 0)}
    if not short:
        return
    detail = ", ".join(f"{task}/{method} needs {k} of {available.get((task, method), 0)}" for (task, method), k in short.items())
    if not replace:
        fits = min(available.get(cell, 0) / k for cell, k in targets.items() if k) * sum(targets.values())
        raise ValueError(
            f"the mix asks for more trajectories than exist ({detail}). "
            + (f"Lower n to at most {math.floor(fits)}, " if n is not None else "Lower the weights to at most 1.0, ")
            + "or set replace=true to repeat trajectories."
        )
    log.warning("sampling with replacement: %s; those cells' trajectories repeat", detail)


def sample(pool: list[Trajectory], targets: Mapping[Cell, int], seed: int) -> list[Trajectory]:
    """The mix: targets[cell] trajectories of each cell (module doc), shuffled with `seed`."""
    cells: dict[Cell, list[Trajectory]] = defaultdict(list)
    for trajectory in pool:
        cells[(trajectory.task, trajectory.method)].append(trajectory)
    chosen = []
    for (task, method), k in sorted(targets.items()):
        members = cells[(task, method)]
        if k and not members:
            raise ValueError(f"cannot draw {k} {task}/{method} trajectories: the source has none")
        order = list(range(len(members)))
        random.Random(f"{seed}/{task}/{method}").shuffle(order)
        repeats, rest = divmod(k, len(members)) if members else (0, 0)
        chosen += [members[i] for i in order * repeats + order[:rest]]
    random.Random(f"{seed}/order").shuffle(chosen)
    return chosen
