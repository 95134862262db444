"""Where build_data's trajectories come from: a `data_source` config group, one class per file.

- `ReleasedSource` (conf/data_source/released.yaml): the released FireAct fine-tuning sets,
  labelled by fireact.data.importer.
- `TrajectoryFiles` (conf/data_source/trajectories.yaml): our own trajectory JSONL files,
  e.g. what `generate` wrote; task and method come from each record.

Both give a `Loaded`: trajectories in the unified ReAct format (fireact.data.convert), the
files read with their sha256, and counts per (task, method) for the summary.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fireact.data.convert import METHODS, to_react
from fireact.data.importer import ReleasedSet, import_released
from fireact.data.mix import Cell, count_cells
from fireact.paths import data_dir as default_data_dir
from fireact.tasks import Task
from fireact.trajectory_files import ReadReport, read_trajectory_file
from fireact.trajectory import Trajectory

log = logging.getLogger(__name__)


@dataclass
class Loaded:
    trajectories: list[Trajectory]
    files: list[dict[str, str]]
    tables: dict[str, Counter[Cell]] = field(default_factory=dict)  # per file or set, for the summary
    notes: list[str] = field(default_factory=list)


def file_record(path: Path, root: Path | None = None) -> dict[str, str]:
    """{path, sha256}; the path relative to `root` when it lies inside it (stable across checkouts)."""
    shown = path.resolve()
    if root is not None and shown.is_relative_to(root.resolve()):
        shown = shown.relative_to(root.resolve())
    return {"path": str(shown), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


class ReleasedSource:
    """The released sets; `use` picks the sets whose records form the pool (all by default)."""

    def __init__(
        self,
        sets: dict[str, dict[str, Any]],
        reference: list[Task] = (),
        use: list[str] | None = None,
        data_dir: str | None = None,
    ):
        self.sets = [
            ReleasedSet(name, spec["file"], tuple(spec["tasks"]), tuple(spec["methods"]), spec.get("fallback_task"))
            for name, spec in sets.items()
        ]
        self.reference = list(reference)
        self.use = use
        self.data_dir = Path(data_dir) if data_dir else default_data_dir()

    def load(self) -> Loaded:
        imported = import_released(self.sets, self.data_dir, self.reference, self.use)
        notes = [f"{imported.duplicates} record(s) occur twice within one released set; kept once"] if imported.duplicates else []
        for report in imported.reports:
            notes += read_notes(report)
        return Loaded(
            trajectories=[to_react(t) for t in imported.pool],
            files=[file_record(self.data_dir / s.file, self.data_dir) for s in self.sets],
            tables={name: count_cells(trajectories) for name, trajectories in imported.sets.items()},
            notes=notes,
        )


class TrajectoryFiles:
    """Trajectory files: ours (JSONL, fireact.trajectory_files.write_jsonl), or any other format
    fireact.trajectory_files reads (chat JSONL, Alpaca JSON, a released evaluation file). A corrupt
    record is reported with where it is and skipped; the rest of the file is still read."""

    def __init__(self, paths: list[str]):
        if not paths:
            raise ValueError("data_source.paths is empty: list the trajectory JSONL files to build from")
        self.paths = [Path(p) for p in paths]

    def load(self) -> Loaded:
        trajectories, tables, notes = [], {}, []
        for path in self.paths:
            read, report = read_trajectory_file(path)
            notes += read_notes(report)
            for number, trajectory in enumerate(read, start=1):
                _check_labels(trajectory, path, number)
            tables[str(path)] = count_cells(read)
            trajectories += [to_react(t) for t in read]
        return Loaded(trajectories, [file_record(path) for path in self.paths], tables, notes)


def read_notes(report: ReadReport) -> list[str]:
    """Each record that could not be read (logged as a warning too), and a count per repair."""
    notes = []
    for key, reason in report.failures:
        log.warning("%s: %s could not be read: %s", report.path, key, reason)
        notes.append(f"{report.path}: {key} could not be read (skipped): {reason}")
    for reason, count in sorted(Counter(reason for _, reason in report.repairs).items()):
        notes.append(f"{Path(report.path).name}: {count} record(s) repaired: {reason}")
    return notes


def _check_labels(trajectory: Trajectory, path: Path, number: int) -> None:
    if not trajectory.task:
        raise ValueError(f"{path}: trajectory {number} ({trajectory.qid!r}) has no task; every record needs one to be mixed")
    if trajectory.method not in METHODS:
        raise ValueError(
            f"{path}: trajectory {number} ({trajectory.qid!r}) has method {trajectory.method!r}; "
            f"choose one of {list(METHODS)}"
        )
