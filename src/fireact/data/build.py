"""build_data's work: load → (drop contaminated) → (pair) → plan the mix → sample → write, with a manifest.

With `pairs_per_question`, each question's scored successes are paired with its scored failures
(fireact.data.pairs: DPO data, written as pairs.jsonl and preference.jsonl) and the failures
are kept out of the SFT mix."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from fireact.data.contamination import Overlap, drop_overlaps, find_overlaps
from fireact.data.export import cell_table, sha256, write_dataset, write_manifest
from fireact.data.mix import Cell, count_cells
from fireact.data.mix import plan, sample
from fireact.data.pairs import PAIRS, PREFERENCE, Pair, build_pairs, write_pairs, write_preference
from fireact.data.sources import Loaded
from fireact.tasks import Task
from fireact.trajectory import Trajectory

# Config keys that name where this run writes, not what it builds: left out of the manifest
# so that the same build gives the same manifest bytes.
RUN_ONLY_KEYS = ("output_dir", "paths")


@dataclass
class BuildResult:
    trajectories: list[Trajectory]
    loaded: Loaded
    available: Counter[Cell]
    targets: dict[Cell, int]
    pool_overlaps: list[Overlap]
    overlaps: list[Overlap]
    outputs: dict[str, str]
    out_dir: Path | None
    pairs: list[Pair]


def build_dataset(
    source,
    task_mix: Mapping[str, float],
    method_mix: Mapping[str, float],
    n: int | None = None,
    seed: int = 0,
    replace: bool = False,
    eval_tasks: list[Task] = (),
    drop_contaminated: bool = False,
    out_dir: str | Path | None = None,
    config: dict[str, Any] | None = None,
    pairs_per_question: int | None = None,
) -> BuildResult:
    """Build the training set from `source` (anything with `.load() -> Loaded`); write it when
    `out_dir` is given."""
    loaded = source.load()
    pool = loaded.trajectories
    pool_overlaps = find_overlaps(pool, list(eval_tasks))
    if drop_contaminated:
        pool = drop_overlaps(pool, pool_overlaps)
    pairs = build_pairs(pool, pairs_per_question, seed) if pairs_per_question is not None else []
    if pairs_per_question is not None:  # the failures are the pairs' rejected side, never SFT data
        pool = [t for t in pool if t.em is None or t.em == 1.0]
    available = count_cells(pool)
    targets = plan(available, task_mix, method_mix, n, replace)
    chosen = sample(pool, targets, seed)
    overlaps = find_overlaps(chosen, list(eval_tasks))
    outputs = {}
    if out_dir is not None:
        outputs = write_dataset(out_dir, chosen)
        if pairs_per_question is not None:
            write_pairs(Path(out_dir) / PAIRS, pairs)
            write_preference(Path(out_dir) / PREFERENCE, pairs)
            outputs.update({name: sha256(Path(out_dir) / name) for name in (PAIRS, PREFERENCE)})
        write_manifest(out_dir, {
            "sources": loaded.files,
            "seed": seed,
            "n": n,
            "replace": replace,
            "task_mix": dict(task_mix),
            "method_mix": dict(method_mix),
            "total": len(chosen),
            "pairs_per_question": pairs_per_question,
            "pairs": len(pairs),
            "counts": cell_table(count_cells(chosen)),
            "available": cell_table(available),
            "contamination": {
                "dropped": drop_contaminated,
                "source": {o.eval_set: o.summary() for o in pool_overlaps},
                "built": {o.eval_set: o.summary() for o in overlaps},
            },
            "notes": loaded.notes,
            "outputs": outputs,
            "config": config or {},
        })
    return BuildResult(chosen, loaded, available, targets, pool_overlaps, overlaps, outputs,
                       Path(out_dir) if out_dir is not None else None, pairs)


def build_from_config(cfg: DictConfig, source=None) -> BuildResult:
    """What `python -m fireact.build_data` runs, given its composed config (conf/build_data.yaml).
    `source` replaces the configured data_source (e.g. one already loaded)."""
    return build_dataset(
        source=source if source is not None else instantiate(cfg.data_source),
        task_mix=OmegaConf.to_container(cfg.task_mix, resolve=True),
        method_mix=OmegaConf.to_container(cfg.method_mix, resolve=True),
        n=cfg.n,
        seed=cfg.seed,
        replace=cfg.replace,
        eval_tasks=list(instantiate(cfg.contamination.eval_sets)),
        drop_contaminated=cfg.contamination.drop,
        out_dir=cfg.output_dir,
        config={key: _resolved(cfg, key) for key in cfg if key not in RUN_ONLY_KEYS},
        pairs_per_question=cfg.pairs_per_question,
    )


def _resolved(cfg: DictConfig, key: str) -> Any:
    value = cfg[key]
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
