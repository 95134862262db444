"""Training questions that are also evaluation questions, compared by normalised text.

The released training data holds 55 StrategyQA dev questions (in 59 trajectories); none of
the 500 HotpotQA evaluation questions, Bamboogle or MMLU test. build_data writes what its
trajectories hold into its manifest; `questions_unseen_by` reads it back, so that an agent is
scored on the questions it was not trained on (`python -m fireact.rescore unseen_by=[...]`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fireact.data.export import MANIFEST
from fireact.tasks import Question, Task
from fireact.tasks.metrics import normalize_answer
from fireact.trajectory import Trajectory


def eval_set_name(task: Task) -> str:
    """e.g. "hotpotqa:dev[233-shuffle,0:500]", "strategyqa:dev"."""
    name = f"{task.name}:{'hub' if task.hub is not None else task.split}"
    if task.shuffle_seed is not None or task.start or task.n is not None:
        order = f"{task.shuffle_seed}-shuffle," if task.shuffle_seed is not None else ""
        end = "" if task.n is None else task.start + task.n
        name += f"[{order}{task.start}:{end}]"
    return name


@dataclass
class Overlap:
    """Training trajectories whose question is in one evaluation set."""

    eval_set: str
    questions: list[str] = field(default_factory=list)  # qids in the evaluation set
    trajectories: list[int] = field(default_factory=list)  # positions in the checked list

    def summary(self) -> dict:
        return {"questions": len(self.questions), "trajectories": len(self.trajectories), "qids": self.questions}


def find_overlaps(trajectories: list[Trajectory], eval_tasks: list[Task]) -> list[Overlap]:
    """One Overlap per evaluation set (the configured selection of each task), empty ones too."""
    by_question: dict[str, list[int]] = {}
    for position, trajectory in enumerate(trajectories):
        by_question.setdefault(normalize_answer(trajectory.question), []).append(position)
    overlaps = []
    for task in eval_tasks:
        overlap = Overlap(eval_set_name(task))
        for question in task.questions():
            positions = by_question.get(normalize_answer(question.question), [])
            if positions and question.qid not in overlap.questions:
                overlap.questions.append(question.qid)
                overlap.trajectories += positions
        overlap.trajectories = sorted(set(overlap.trajectories))
        overlaps.append(overlap)
    return overlaps


def drop_overlaps(trajectories: list[Trajectory], overlaps: list[Overlap]) -> list[Trajectory]:
    flagged = {position for overlap in overlaps for position in overlap.trajectories}
    return [t for position, t in enumerate(trajectories) if position not in flagged]


def seen_qids(manifest: Path, task_name: str) -> set[str]:
    """The qids of task_name's evaluation questions that a build_data output's trajectories hold.

    manifest: build_data's manifest.json or the folder that holds it. Only the evaluation sets
    that build_data checked are known (conf/build_data.yaml, contamination.eval_sets).
    """
    path = manifest / MANIFEST if manifest.is_dir() else manifest
    try:
        built = json.loads(path.read_text())["contamination"]["built"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{manifest}: no build_data manifest with a contamination check ({error!r}); "
                         "give a build_data output folder or its manifest.json") from error
    checked = [overlap for eval_set, overlap in built.items() if eval_set.split(":")[0] == task_name]
    if not checked:
        raise ValueError(f"{path} did not check {task_name} questions (it checked {sorted(built)}); add the task "
                         "to build_data's contamination.eval_sets and build the data again")
    return {qid for overlap in checked for qid in overlap["qids"]}


def questions_unseen_by(questions: Sequence[Question], manifests: Sequence[Path], task_name: str) -> list[Question]:
    """The questions that none of the manifests' training trajectories hold."""
    seen = set().union(*(seen_qids(manifest, task_name) for manifest in manifests))
    return [question for question in questions if question.qid not in seen]
