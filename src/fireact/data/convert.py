"""Turn a trajectory of any method into the unified ReAct format the student is trained on.

- react: rounds of Thought / Action / Observation, kept as they are.
- reflexion: the same, reflection thoughts included (they are what teaches the change of
  strategy).
- cot: one round, the reasoning as the thought and `finish[answer]` as the action, no tool
  call. A CoT rollout's text ("Thought: ... Answer: X", or the reasoning alone with the
  answer in `Trajectory.answer`) is split into the two.
- io: one round with no thought, `finish[answer]`.
- search_r1: its search and answer steps are ReAct's search[] and finish[], kept as they are.

The method label is kept: it says where the trajectory came from, which is what the mix
selects on; only the steps change.
"""

from __future__ import annotations

import copy
import re
from dataclasses import replace
from typing import Callable

from fireact.trajectory import Step, Trajectory, final_answer

_ANSWER_LINE = re.compile(r"^\s*Answer:[ \t]*(.*?)\s*$", re.MULTILINE)


def is_single_finish(steps: list[Step]) -> bool:
    """One round that answers at once: no tool call, the shape of a converted CoT or IO trace."""
    return len(steps) == 1 and steps[0].is_finish


def to_react(trajectory: Trajectory) -> Trajectory:
    """A copy of `trajectory` whose steps are in the unified ReAct format (see module doc)."""
    if trajectory.method not in _CONVERTERS:
        raise ValueError(
            f"trajectory {trajectory.task}/{trajectory.qid}: unknown method {trajectory.method!r}; "
            f"choose one of {sorted(_CONVERTERS)}"
        )
    steps = _CONVERTERS[trajectory.method](trajectory)
    return replace(trajectory, steps=steps, answer=final_answer(steps), meta=copy.deepcopy(trajectory.meta))


def _copy(steps: list[Step]) -> list[Step]:
    return [replace(step) for step in steps]


def _react(trajectory: Trajectory) -> list[Step]:
    if not trajectory.steps:
        raise ValueError(f"{trajectory.method} trajectory {trajectory.task}/{trajectory.qid} has no steps")
    return _copy(trajectory.steps)


def _cot(trajectory: Trajectory) -> list[Step]:
    if is_single_finish(trajectory.steps):
        return _copy(trajectory.steps)
    reasoning, written_answer = _split_answer(_text_of(trajectory))
    answer = _answer_of(trajectory, written_answer)
    return [Step(thought=reasoning, action="finish", argument=answer)]


def _io(trajectory: Trajectory) -> list[Step]:
    _, written_answer = _split_answer(_text_of(trajectory))
    return [Step(action="finish", argument=_answer_of(trajectory, written_answer))]


_CONVERTERS: dict[str, Callable[[Trajectory], list[Step]]] = {
    "io": _io,
    "cot": _cot,
    "react": _react,
    "reflexion": _react,
    "search_r1": _react,  # search and answer steps: already ReAct's
}
METHODS = tuple(_CONVERTERS)  # every method a trajectory can come from: what a method mix weighs


def _text_of(trajectory: Trajectory) -> str:
    """The model's text of a one-shot (CoT/IO) trajectory: its thoughts, in order."""
    text = "\n".join(step.thought for step in trajectory.steps if step.thought)
    return text.removeprefix("Thought:").strip()


def _split_answer(text: str) -> tuple[str, str | None]:
    """"reasoning\\nAnswer: X" -> ("reasoning", "X"); the last Answer: line counts."""
    matches = list(_ANSWER_LINE.finditer(text))
    if not matches:
        return text, None
    last = matches[-1]
    return text[: last.start()].strip(), last.group(1)


def _answer_of(trajectory: Trajectory, written_answer: str | None) -> str:
    finish = final_answer(trajectory.steps)
    for answer in (trajectory.answer, finish, written_answer):
        if answer is not None and answer.strip():
            return answer.strip()
    raise ValueError(
        f"{trajectory.method} trajectory {trajectory.task}/{trajectory.qid} has no answer: set "
        f"Trajectory.answer, end with an `Answer: X` line, or end with finish[X]"
    )
