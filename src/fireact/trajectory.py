"""The one schema that passes between modules: `Trajectory`, its steps and its token trace.

Files are read into it and written from it by fireact.trajectory_files; the prompt formats
(Alpaca, chat) render it in fireact.formats.

The ReAct text format is one line per field, in rounds:
    Thought: ...
    Action: search[query]
    Observation: ...
A field may run over several lines; a line that starts no field continues the last one.
"""

from __future__ import annotations

import base64
import dataclasses
import re
from array import array
from dataclasses import dataclass, field, replace
from typing import Any


FIELDS = ("Thought", "Action", "Observation")
# How every Reflexion reflection begins, in the released trajectories and in the cues the
# reflexion method prefills (fireact.agents.methods.REFLECTIONS): what marks a reflection round.
REFLECTION_MARKER = "Now that I haven't solved the task within"
_FIELD_LINE = re.compile(r"^(Thought|Action|Observation):(?: |$)")
_ACTION_CALL = re.compile(r"^\s*(\w+)\[(.*)\]\s*$", re.DOTALL)


@dataclass
class Step:
    """One round: a thought, an action call `action[argument]`, and what came back.

    `argument` is None when the model wrote an action that is not of the form name[arg];
    `action` then holds the raw text, so writing the step back reproduces it. A step with
    no action at all (a trailing thought) has action "" and argument None.
    """

    thought: str = ""
    action: str = ""
    argument: str | None = None
    observation: str | None = None

    @property
    def action_text(self) -> str:
        return self.action if self.argument is None else f"{self.action}[{self.argument}]"

    @property
    def is_finish(self) -> bool:
        return self.argument is not None and self.action.lower() == "finish"

    @property
    def is_tool_call(self) -> bool:
        return self.argument is not None and self.action.lower() != "finish"

    @property
    def is_reflection(self) -> bool:
        """A Reflexion round: its thought holds the reflection cue (REFLECTION_MARKER)."""
        return REFLECTION_MARKER in self.thought


def parse_action(text: str) -> tuple[str, str | None]:
    """`search[foo]` -> ("search", "foo"); anything else -> (text, None)."""
    match = _ACTION_CALL.match(text)
    if match is None:
        return text.strip(), None
    return match.group(1), match.group(2)


@dataclass
class TokenTrace:
    """What a local engine's rollout fed the model and what it sampled, as token ids in order: the
    first prompt, then for each model call the ids the policy sampled and the ids the harness added
    before the next call (the observation, the cues). What was sampled is never tokenized again, so
    the sequence is the one the policy saw and wrote, and a trainer scores exactly those tokens.

    format: the prompt format the ids were rendered in (fireact.formats). ids: the whole
    sequence. sampled: the [start, end) spans of ids the policy sampled (the rest the harness put
    there). logprobs: each sampled id's log-probability as it was drawn, in order. Written
    compactly (`to_record`): ids as base64 int32, logprobs as base64 float32."""

    format: str = ""
    ids: list[int] = field(default_factory=list)
    sampled: list[list[int]] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)

    def add(self, ids: list[int], logprobs: list[float] | None = None) -> None:
        """Append ids: the policy's with their `logprobs`, the harness's without."""
        if logprobs is not None and ids:
            if len(logprobs) != len(ids):
                raise ValueError(f"{len(ids)} sampled ids with {len(logprobs)} log-probabilities")
            if self.sampled and self.sampled[-1][1] == len(self.ids):
                self.sampled[-1][1] += len(ids)  # continues the span before it
            else:
                self.sampled.append([len(self.ids), len(self.ids) + len(ids)])
            self.logprobs.extend(logprobs)
        self.ids.extend(ids)

    def mask(self) -> list[int]:
        """1 for each id the policy sampled, 0 for the harness's."""
        mask = [0] * len(self.ids)
        for start, end in self.sampled:
            mask[start:end] = [1] * (end - start)
        return mask

    def to_record(self) -> dict[str, Any]:
        return {"format": self.format, "ids": _pack("i", self.ids), "sampled": self.sampled,
                "logprobs": _pack("f", self.logprobs)}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> "TokenTrace":
        trace = cls(record["format"], _unpack("i", record["ids"]), [list(span) for span in record["sampled"]],
                    _unpack("f", record["logprobs"]))
        if sum(end - start for start, end in trace.sampled) != len(trace.logprobs):
            raise ValueError(f"a token trace with {len(trace.logprobs)} log-probabilities for spans {trace.sampled}")
        return trace


def _pack(kind: str, values: list) -> str:
    return base64.b64encode(array(kind, values).tobytes()).decode("ascii")


def _unpack(kind: str, text: str) -> list:
    values = array(kind)
    values.frombytes(base64.b64decode(text))
    return values.tolist()


@dataclass
class Trajectory:
    task: str
    qid: str
    question: str
    gold: str
    method: str = "react"
    steps: list[Step] = field(default_factory=list)
    answer: str | None = None
    em: float | None = None
    f1: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    wall_time: float = 0.0  # seconds from the trajectory's first model request to its finish
    started_at: float = 0.0  # when that first request went out (Unix time; 0 in older records)
    backend: str = ""
    model: str = ""
    tool: str = ""
    noise: str = ""
    seed: int | None = None
    sample: int = 0  # which of the question's sampled trajectories (0: the first or only one)
    format_errors: int = 0  # replies with no action after the re-asks, and actions the tool could not run
    error: str | None = None  # why it ended without an answer (no finish[] within the rounds, a refused request)
    meta: dict[str, Any] = field(default_factory=dict)
    tokens: TokenTrace | None = None  # a local engine's rollout: the ids fed and sampled

    @property
    def turns(self) -> int:
        """Model replies: a step without an observation that is followed by another step was
        written in the same reply as the next one (a reply holding several actions)."""
        return sum(step.observation is not None for step in self.steps[:-1]) + bool(self.steps)

    @property
    def key(self) -> tuple[str, int]:
        """What a run writes once: the question and the sample."""
        return self.qid, self.sample

    @property
    def tool_calls(self) -> int:
        return sum(step.is_tool_call for step in self.steps)

    def to_dict(self) -> dict[str, Any]:
        record = dataclasses.asdict(replace(self, tokens=None))
        record["tokens"] = None if self.tokens is None else self.tokens.to_record()
        return record

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> "Trajectory":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(record) - known
        if unknown:
            raise ValueError(f"unknown trajectory fields {sorted(unknown)}")
        data = dict(record)
        data["steps"] = [Step(**step) for step in data.get("steps", [])]
        if data.get("tokens") is not None:
            data["tokens"] = TokenTrace.from_record(data["tokens"])
        return cls(**data)

    # --- the ReAct text format -------------------------------------------------------
    def react_text(self) -> str:
        """The trajectory as ReAct lines, each ending in a newline (the released format)."""
        return "".join(render_step(step) for step in self.steps)


def render_step(step: Step) -> str:
    return "".join(f"{line}\n" for line in _step_lines(step))


def _step_lines(step: Step) -> list[str]:
    has_action = bool(step.action) or step.argument is not None
    lines = []
    if step.thought or not (has_action or step.observation is not None):
        lines.append(f"Thought: {step.thought}")
    if has_action:
        lines.append(f"Action: {step.action_text}")
    if step.observation is not None:
        lines.append(f"Observation: {step.observation}")
    return lines


def split_preamble(text: str) -> tuple[str, str]:
    """Text before the first Thought/Action/Observation line, and the rest.

    Some released records carry the end of the question there (MMLU's answer choices in the
    multitask Alpaca sets, the question itself in two chat records).
    """
    lines = text.split("\n")
    for index, line in enumerate(lines):
        if _FIELD_LINE.match(line):
            return "\n".join(lines[:index]), "\n".join(lines[index:])
    return text, ""


def parse_react_text(text: str) -> list[Step]:
    """Split ReAct lines into steps. Raises ValueError on text that is not ReAct lines."""
    preamble, _ = split_preamble(text)
    if preamble.strip():
        raise ValueError(f"text before the first Thought/Action/Observation: {preamble[:80]!r}")
    fields: list[list[str]] = []  # [name, value] pairs in order
    for line in text.split("\n"):
        match = _FIELD_LINE.match(line)
        if match:
            fields.append([match.group(1), line[match.end():]])
        elif fields:
            fields[-1][1] += "\n" + line
    if not fields:
        raise ValueError("no Thought/Action/Observation line")
    # The final line of a well-formed trace ends in "\n", which leaves one empty
    # continuation on the last field: strip exactly that.
    if text.endswith("\n"):
        fields[-1][1] = fields[-1][1][:-1]

    steps: list[Step] = []
    for name, value in fields:
        if name == "Thought" or not steps or (
            name == "Action" and steps[-1].action
        ) or (name == "Observation" and steps[-1].observation is not None):
            steps.append(Step())
        step = steps[-1]
        if name == "Thought":
            step.thought = value
        elif name == "Action":
            step.action, step.argument = parse_action(value)
        else:
            step.observation = value
    return steps


def final_answer(steps: list[Step]) -> str | None:
    for step in reversed(steps):
        if step.is_finish:
            return step.argument
    return None
