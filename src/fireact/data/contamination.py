"""Training questions that are also evaluation questions, compared by normalised text.

The released training data holds 55 StrategyQA dev questions (in 59 trajectories); none of
the 500 HotpotQA evaluation questions, Bamboogle or MMLU test.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fireact.tasks import Task
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
