"""The released FireAct fine-tuning sets, each trajectory labelled with its task and method.

The four sets (data/finetune/alpaca_format; the gpt_format files hold the same records):
hotpotqa (500), hotpotqa_multimethod (734), multitask (1,344), multitask_multimethod (2,063).
Each is declared with the tasks and methods it holds (conf/data_source/released.yaml).

Task of a trajectory, first rule that applies:
1. the set holds one task: that task;
2. the question is MMLU-shaped ("Question: ..." then lines "A. ", "B. ", "C. ", "D. "): mmlu;
3. the question (normalised) is in a reference task's data (StrategyQA train_filtered/dev,
   HotpotQA dev, any hub split configured): that task;
4. the question occurs in a set that holds one task: that task;
5. otherwise the set's `fallback_task`. The multi-task sets hold HotpotQA, StrategyQA and
   MMLU; every one of their HotpotQA questions occurs in a HotpotQA-only set (rule 4) and the
   released StrategyQA questions come from StrategyQA train, of which only 56 questions are
   offline (rule 3), so the rest, not MMLU-shaped, are StrategyQA.

Method of a trajectory, first rule that applies:
1. the set holds one method: that method;
2. a thought contains the Reflexion marker ("Now that I haven't solved the task within"):
   reflexion;
3. the same record (question and steps) is in a set that holds one method: that method
   (ReAct trajectories that answer in one round without searching, 329 of them, look like CoT);
4. one round that finishes with no tool call: cot;
5. otherwise react.

Gold and qid come from the reference data when the question is there. Otherwise gold is
left empty (HotpotQA train, StrategyQA train and MMLU auxiliary-train questions are not
offline) and qid is a hash of the normalised question, so the same question has the same
qid in every set. `em` is the record's own final reward ("Episode finished, reward = ...":
the teacher run's score), which is 0 for 49 released Reflexion trajectories.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

from fireact.data.convert import is_single_finish
from fireact.data.mix import Cell, count_cells
from fireact.tasks import Question, Task
from fireact.tasks.base import METHODS
from fireact.tasks.metrics import normalize_answer
from fireact.trajectory_files import ReadReport, read_alpaca
from fireact.trajectory import Trajectory


_MMLU_SHAPE = re.compile(r"^Question:.*\nA\. .*\nB\. .*\nC\. .*\nD\. ", re.DOTALL)
_REWARD = re.compile(r"Episode finished, reward = (\w+)")
_REWARDS = {"true": 1.0, "1": 1.0, "false": 0.0, "0": 0.0}


@dataclass(frozen=True)
class ReleasedSet:
    """One released file and what it holds; `file` is relative to the data folder."""

    name: str
    file: str
    tasks: tuple[str, ...]
    methods: tuple[str, ...]
    fallback_task: str | None = None

    def __post_init__(self):
        if not self.tasks or not self.methods:
            raise ValueError(f"released set {self.name!r}: declare the tasks and methods it holds")
        unknown = sorted(set(self.methods) - set(METHODS))
        if unknown:
            raise ValueError(f"released set {self.name!r}: unknown methods {unknown}; choose from {list(METHODS)}")
        if len(self.tasks) > 1 and self.fallback_task not in self.tasks:
            raise ValueError(
                f"released set {self.name!r} holds several tasks {list(self.tasks)}: set fallback_task "
                f"to the one its unrecognised questions belong to"
            )


@dataclass
class ReferenceMatch:
    task: str
    split: str
    question: Question


def question_hash(text: str) -> str:
    return hashlib.sha1(normalize_answer(text).encode()).hexdigest()[:12]


def reference_index(tasks: list[Task]) -> dict[str, ReferenceMatch]:
    """Normalised question -> where it comes from, over every question of the given tasks."""
    index: dict[str, ReferenceMatch] = {}
    for task in tasks:
        split = "hub" if task.hub is not None else task.split
        for question in task.all_questions():
            index.setdefault(normalize_answer(question.question), ReferenceMatch(task.name, split, question))
    return index


def is_mmlu_shaped(question: str) -> bool:
    return bool(_MMLU_SHAPE.match(question))


def released_reward(trajectory: Trajectory) -> float | None:
    """The reward in the record's final observation, if it has one."""
    last = trajectory.steps[-1].observation if trajectory.steps else None
    match = _REWARD.search(last or "")
    return _REWARDS.get(match.group(1).lower()) if match else None


def record_key(trajectory: Trajectory) -> tuple[str, str]:
    """What makes two released records the same: the question and the steps (trailing blanks aside)."""
    return trajectory.question.strip(), trajectory.react_text().strip()


@dataclass
class Imported:
    """Every released set read and labelled, and the pool: the chosen sets, duplicates dropped."""

    sets: dict[str, list[Trajectory]]
    pool: list[Trajectory]
    reports: list[ReadReport] = field(default_factory=list)
    duplicates: int = 0

    def counts(self, name: str | None = None) -> Counter[Cell]:
        return count_cells(self.pool if name is None else self.sets[name])


def import_released(
    sets: list[ReleasedSet], data_dir: Path, reference: list[Task], use: list[str] | None = None
) -> Imported:
    """Read and label every set (labels need all of them), then pool the sets named in `use`."""
    names = [s.name for s in sets]
    use = names if use is None else list(use)
    unknown = sorted(set(use) - set(names))
    if unknown:
        raise ValueError(f"data_source.use names released sets {unknown} that are not declared; declared: {names}")

    raw: dict[str, list[Trajectory]] = {}
    reports = []
    for released in sets:
        raw[released.name], report = read_alpaca(Path(data_dir) / released.file)
        reports.append(report)

    single_task = {
        normalize_answer(t.question): released.tasks[0]
        for released in sets if len(released.tasks) == 1 for t in raw[released.name]
    }
    single_method = {
        record_key(t): released.methods[0]
        for released in sets if len(released.methods) == 1 for t in raw[released.name]
    }
    index = reference_index(reference)
    labelled = {
        released.name: [
            _label(t, released, position, index, single_task, single_method)
            for position, t in enumerate(raw[released.name])
        ]
        for released in sets
    }
    pool, duplicates = _pool([(name, labelled[name]) for name in use])
    return Imported(sets=labelled, pool=pool, reports=reports, duplicates=duplicates)


def _label(  # fills in the labels of a record just read (it is not shared yet)
    trajectory: Trajectory,
    released: ReleasedSet,
    position: int,
    index: dict[str, ReferenceMatch],
    single_task: dict[str, str],
    single_method: dict[tuple[str, str], str],
) -> Trajectory:
    normalised = normalize_answer(trajectory.question)
    match = index.get(normalised)
    task = _task_of(trajectory.question, normalised, released, match, single_task)
    method = _method_of(trajectory, released, single_method)
    known = match is not None and match.task == task
    trajectory.task, trajectory.method = task, method
    trajectory.qid = match.question.qid if known else question_hash(trajectory.question)
    trajectory.gold = match.question.gold if known else ""
    trajectory.em = released_reward(trajectory)
    trajectory.meta = {
        "source": "released",
        "sets": [released.name],
        "records": [f"{released.name}:{position}"],
        "gold_source": f"{match.task}:{match.split}" if known else None,
    }
    return trajectory


def _task_of(question, normalised, released, match, single_task) -> str:
    if len(released.tasks) == 1:
        return released.tasks[0]
    if "mmlu" in released.tasks and is_mmlu_shaped(question):
        return "mmlu"
    if match is not None and match.task in released.tasks:
        return match.task
    if single_task.get(normalised) in released.tasks:
        return single_task[normalised]
    return released.fallback_task


def _method_of(trajectory, released, single_method) -> str:
    if len(released.methods) == 1:
        return released.methods[0]
    if "reflexion" in released.methods and any(step.is_reflection for step in trajectory.steps):
        return "reflexion"
    if single_method.get(record_key(trajectory)) in released.methods:
        return single_method[record_key(trajectory)]
    if "cot" in released.methods and is_single_finish(trajectory.steps):
        return "cot"
    return "react"


def _pool(named_sets: list[tuple[str, list[Trajectory]]]) -> tuple[list[Trajectory], int]:
    """The union of the sets in order; a record seen before only adds its set to meta."""
    pool: dict[tuple[str, str], Trajectory] = {}
    duplicates = 0
    for name, trajectories in named_sets:
        for trajectory in trajectories:
            key = record_key(trajectory)
            if key not in pool:
                pool[key] = _copy_for_pool(trajectory)
                continue
            first = pool[key]
            if name in first.meta["sets"]:
                duplicates += 1  # the same record twice within one set
            else:
                first.meta["sets"].append(name)
            first.meta["records"].extend(trajectory.meta["records"])
    return list(pool.values()), duplicates


def _copy_for_pool(trajectory: Trajectory) -> Trajectory:
    """The pool's own record (its meta grows); steps are shared, nothing changes them."""
    meta = dict(trajectory.meta, sets=list(trajectory.meta["sets"]), records=list(trajectory.meta["records"]))
    return replace(trajectory, meta=meta)
