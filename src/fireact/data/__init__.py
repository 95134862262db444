"""Training data: convert trajectories to one ReAct format, label the released sets, mix, export.

    source.load() -> Loaded  (sources.py: ReleasedSource, TrajectoryFiles; importer.py labels)
    plan(available, task_mix, method_mix, n) -> targets; sample(pool, targets, seed)  (mix.py)
    write_dataset / write_manifest  (export.py); build_dataset ties them together (build.py)
"""

from fireact.data.build import BuildResult, build_dataset, build_from_config
from fireact.data.contamination import Overlap, find_overlaps
from fireact.data.convert import to_react
from fireact.data.export import write_dataset
from fireact.data.importer import ReleasedSet, import_released
from fireact.data.mix import count_cells, plan, sample
from fireact.data.sources import Loaded, ReleasedSource, TrajectoryFiles

__all__ = [
    "BuildResult",
    "Loaded",
    "Overlap",
    "ReleasedSet",
    "ReleasedSource",
    "TrajectoryFiles",
    "build_dataset",
    "build_from_config",
    "count_cells",
    "find_overlaps",
    "import_released",
    "plan",
    "sample",
    "to_react",
    "write_dataset",
]
