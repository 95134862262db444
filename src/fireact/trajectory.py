"""The one schema that passes between modules: `Trajectory`, its steps, readers and writers.

Formats read into and written from it:
- our JSONL (one `Trajectory.to_dict()` per line),
- the released Alpaca records {instruction, input, output},
- OpenAI chat fine-tuning records {messages: [...]},
- the released evaluation trajectory files ({index: {em, f1, gt, pred, traj, ...}}), whose
  `traj` is either an Alpaca-prompted string or a list of chat messages.

The ReAct text format is one line per field, in rounds:
    Thought: ...
    Action: search[query]
    Observation: ...
A field may run over several lines; a line that starts no field continues the last one.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import re
from array import array
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Iterator

log = logging.getLogger(__name__)

ALPACA_HEADER = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{question}\n\n### Response:\n"
)
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

    format: the prompt format the ids were rendered in (fireact.agents.formats). ids: the whole
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
    format_errors: int = 0
    error: str | None = None
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


# --- chat messages -------------------------------------------------------------------
def steps_to_messages(question: str, steps: list[Step]) -> list[dict[str, str]]:
    """Steps back to chat turns; steps with no observation share the next step's reply."""
    messages = [{"role": "user", "content": question}]
    reply: list[str] = []
    for step in steps:
        reply += _step_lines(replace(step, observation=None))
        if step.observation is not None or step is steps[-1]:
            messages.append({"role": "assistant", "content": "\n".join(reply)})
            reply = []
        if step.observation is not None:
            messages.append({"role": "user", "content": f"Observation: {step.observation}"})
    return messages


def messages_to_steps(messages: list[dict[str, str]], repairs: list[str] | None = None) -> tuple[str, list[Step]]:
    """[user question, assistant Thought/Action, user Observation, ...] -> (question, steps).

    Two quirks of the released chat sets are repaired and noted in `repairs`: a record whose
    first message is the assistant's (the question is then the text before its first
    Action line), and an assistant message that only echoes an "Observation:" (dropped: the
    environment's observation follows as the user's turn).
    """
    repairs = [] if repairs is None else repairs
    if not messages:
        raise ValueError("chat record has no messages")
    first = messages[0]
    if first.get("role") == "user":
        question, rest = first["content"], messages[1:]
    elif first.get("role") == "assistant":
        question, content = split_preamble(first["content"])
        if not question.strip() or not content:
            raise ValueError("chat record must start with the user's question")
        repairs.append("question taken from the first assistant message")
        rest = [{"role": "assistant", "content": content}] + messages[1:]
    else:
        raise ValueError(f"chat record starts with role {first.get('role')!r}, not the user's question")
    steps: list[Step] = []
    for message in rest:
        role, content = message.get("role"), message.get("content", "")
        if role == "assistant" and content.startswith("Observation: "):
            repairs.append("dropped an observation written by the assistant")
        elif role == "assistant":
            steps.extend(parse_react_text(content if content.startswith(FIELDS) else "Thought: " + content))
        elif role == "user":
            if not content.startswith("Observation: ") or not steps:
                raise ValueError(f"user turn is not an observation of a previous action: {content[:80]!r}")
            steps[-1].observation = content[len("Observation: "):]
        else:
            raise ValueError(f"unexpected role {role!r}")
    return question, steps


# --- readers -------------------------------------------------------------------------
@dataclass
class ReadReport:
    """What a reader could not parse: (record key or line number, reason)."""

    path: str
    failures: list[tuple[str, str]] = field(default_factory=list)
    repairs: list[tuple[str, str]] = field(default_factory=list)

    def warn(self) -> None:
        for key, reason in self.failures:
            log.warning("%s: %s could not be read: %s", self.path, key, reason)
        if self.repairs:
            log.info("%s: %d records repaired while reading (first: %s, %s)", self.path, len(self.repairs), *self.repairs[0])


def _load_json(path: Path) -> Any:
    if not path.exists():
        raise FileNotFoundError(f"trajectory file {path} does not exist")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err


def _iter_jsonl(path: Path, report: ReadReport) -> Iterator[tuple[int, dict]]:
    if not path.exists():
        raise FileNotFoundError(f"trajectory file {path} does not exist")
    # Bytes first, then each line decoded alone: a line torn inside a multi-byte character (a
    # kill mid-write) is one bad line, not an error that stops the whole read.
    with path.open("rb") as lines:
        for number, raw in enumerate(lines, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                report.failures.append((f"line {number}", f"not UTF-8 text ({err.reason} at byte {err.start})"))
                continue
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as err:
                report.failures.append((f"line {number}", f"invalid JSON ({err.msg})"))
            except RecursionError:
                report.failures.append((f"line {number}", "invalid JSON (nested too deeply)"))


def read_jsonl(path: str | Path) -> tuple[list[Trajectory], ReadReport]:
    """Our own JSONL. A torn or corrupt line is reported with its line number, not fatal."""
    path = Path(path)
    report = ReadReport(str(path))
    trajectories = []
    for number, record in _iter_jsonl(path, report):
        try:
            trajectories.append(Trajectory.from_dict(record))
        except (TypeError, ValueError) as err:
            report.failures.append((f"line {number}", str(err)))
    return trajectories, report


def write_jsonl(path: str | Path, trajectories: Iterable[Trajectory]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for trajectory in trajectories:
            out.write(json.dumps(trajectory.to_dict(), ensure_ascii=False) + "\n")


def append_jsonl(path: str | Path, trajectory: Trajectory) -> None:
    """Append one record and flush it, so a killed run loses at most the line being written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as out:
        out.write(json.dumps(trajectory.to_dict(), ensure_ascii=False) + "\n")
        out.flush()


def _from_parsed(question: str, steps: list[Step], **fields: Any) -> Trajectory:
    fields.setdefault("task", "")
    fields.setdefault("gold", "")
    return Trajectory(question=question, steps=steps, answer=final_answer(steps), **fields)


def read_alpaca(path: str | Path, task: str = "") -> tuple[list[Trajectory], ReadReport]:
    """Released Alpaca records: instruction = question, output = ReAct text."""
    path = Path(path)
    report = ReadReport(str(path))
    records = _load_json(path)
    trajectories = []
    for index, record in enumerate(records):
        try:
            question = record["instruction"] + (f"\n{record['input']}" if record.get("input") else "")
            preamble, response = split_preamble(record["output"])
            if preamble.strip():
                question += "\n" + preamble
                report.repairs.append((f"record {index}", "question continued in the output"))
            steps = parse_react_text(response)
            trajectories.append(_from_parsed(question, steps, task=task, qid=str(index), meta={"source": path.name}))
        except (KeyError, TypeError, ValueError) as err:
            report.failures.append((f"record {index}", f"{type(err).__name__}: {err}"))
    return trajectories, report


def read_chat(path: str | Path, task: str = "") -> tuple[list[Trajectory], ReadReport]:
    """OpenAI chat fine-tuning records: {"messages": [user, assistant, user, ...]} per line."""
    path = Path(path)
    report = ReadReport(str(path))
    trajectories = []
    for number, record in _iter_jsonl(path, report):
        try:
            repairs: list[str] = []
            question, steps = messages_to_steps(record["messages"], repairs)
            report.repairs.extend((f"line {number}", reason) for reason in repairs)
            trajectories.append(_from_parsed(question, steps, task=task, qid=str(number - 1), meta={"source": path.name}))
        except (KeyError, TypeError, ValueError) as err:
            report.failures.append((f"line {number}", f"{type(err).__name__}: {err}"))
    return trajectories, report


def split_alpaca_prompt(text: str) -> tuple[str, str]:
    """An Alpaca-prompted string -> (question, response)."""
    head, marker, response = text.partition("\n\n### Response:\n")
    prefix = ALPACA_HEADER.split("{question}")[0]
    if not marker or not head.startswith(prefix):
        raise ValueError("not an Alpaca-prompted trajectory (header or '### Response:' missing)")
    return head[len(prefix):], response


def read_released_eval(path: str | Path, task: str = "hotpotqa") -> tuple[list[Trajectory], ReadReport]:
    """Released evaluation trajectories: {dev index: {em, f1, gt, pred, traj, ...}}."""
    path = Path(path)
    report = ReadReport(str(path))
    trajectories = []
    for key, entry in _load_json(path).items():
        try:
            if isinstance(entry["traj"], list):
                question, steps = messages_to_steps(entry["traj"])
                fmt = "chat"
            else:
                question, response = split_alpaca_prompt(entry["traj"])
                steps, fmt = parse_react_text(response), "alpaca"
            trajectories.append(
                _from_parsed(
                    question, steps, task=task, qid=str(key), gold=entry["gt"],
                    em=float(entry["em"]), f1=float(entry.get("f1", entry["em"])),
                    meta={"source": path.name, "format": fmt, "pred": entry.get("pred")},
                )
            )
        except (KeyError, TypeError, ValueError) as err:
            report.failures.append((f"key {key}", f"{type(err).__name__}: {err}"))
    return trajectories, report


FILE_FORMATS = ("trajectories", "chat", "alpaca", "released_eval")


def file_format(path: str | Path) -> str:
    """Which of FILE_FORMATS a file holds, read off its first record: a .jsonl is ours
    ("trajectories") or chat records ("messages"); a .json is a list of Alpaca records or a
    released evaluation file (an object keyed by question index). The one place that decides."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"trajectory file {path} does not exist")
    with path.open(encoding="utf-8") as text:
        if path.suffix == ".jsonl":
            first = next((line for line in text if line.strip()), "")
            try:
                return "chat" if "messages" in json.loads(first) else "trajectories"
            except (json.JSONDecodeError, TypeError):
                return "trajectories"  # read_jsonl reports the bad line
        if path.suffix == ".json":
            start = text.read(4096).lstrip()[:1]
            if start in ("[", "{"):
                return "alpaca" if start == "[" else "released_eval"
            raise ValueError(f"{path} is not a JSON list (Alpaca records) or object (a released evaluation file)")
    raise ValueError(f"{path}: expected a .jsonl (fireact trajectories or chat records) or a .json "
                     f"(Alpaca records or a released evaluation file)")


def read_trajectory_file(path: str | Path, task: str = "") -> tuple[list[Trajectory], ReadReport]:
    """Any file of FILE_FORMATS, by `file_format`; `task` labels the formats that do not record it."""
    fmt = file_format(path)
    if fmt == "trajectories":
        return read_jsonl(path)
    if fmt == "released_eval":
        return read_released_eval(path, task=task or "hotpotqa")
    return (read_chat if fmt == "chat" else read_alpaca)(path, task=task)


# --- writers -------------------------------------------------------------------------
def to_alpaca(trajectory: Trajectory) -> dict[str, str]:
    return {"instruction": trajectory.question, "input": "", "output": trajectory.react_text()}


def to_chat(trajectory: Trajectory) -> dict[str, list[dict[str, str]]]:
    return {"messages": steps_to_messages(trajectory.question, trajectory.steps)}


def write_alpaca(path: str | Path, trajectories: Iterable[Trajectory]) -> None:
    Path(path).write_text(json.dumps([to_alpaca(t) for t in trajectories], indent=4, ensure_ascii=False), encoding="utf-8")


def write_chat(path: str | Path, trajectories: Iterable[Trajectory]) -> None:
    with Path(path).open("w", encoding="utf-8") as out:
        for trajectory in trajectories:
            out.write(json.dumps(to_chat(trajectory), ensure_ascii=False) + "\n")
