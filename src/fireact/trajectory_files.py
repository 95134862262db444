"""Trajectory files: what is read into fireact.trajectory.Trajectory and written from it.

- our JSONL (one `Trajectory.to_dict()` per line; `append_jsonl` writes as a run goes),
- the released Alpaca records {instruction, input, output} (fireact.formats.Alpaca's records),
- OpenAI chat fine-tuning records {messages: [...]} (fireact.formats.Chat's records),
- the released evaluation trajectory files ({index: {em, f1, gt, pred, traj, ...}}), whose
  `traj` is either an Alpaca-prompted string or a list of chat messages.

Readers return (trajectories, ReadReport): a record that cannot be read is reported, not fatal.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from fireact.formats import Alpaca, Chat, messages_to_steps, split_alpaca_prompt
from fireact.trajectory import Step, Trajectory, final_answer, parse_react_text, split_preamble

log = logging.getLogger(__name__)
# Repairs of known quirks (the released files have some) go to the run's log file, not the terminal
# (conf/hydra/default.yaml routes this logger); records that could not be read are warnings on both.
repairs_log = log.getChild("repairs")


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
            repairs_log.info("%s: %d records repaired while reading (first: %s, %s)", self.path, len(self.repairs),
                             *self.repairs[0])


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


def write_alpaca(path: str | Path, trajectories: Iterable[Trajectory]) -> None:
    records = [Alpaca().record(t) for t in trajectories]
    Path(path).write_text(json.dumps(records, indent=4, ensure_ascii=False), encoding="utf-8")


def write_chat(path: str | Path, trajectories: Iterable[Trajectory]) -> None:
    with Path(path).open("w", encoding="utf-8") as out:
        for trajectory in trajectories:
            out.write(json.dumps(Chat().record(trajectory), ensure_ascii=False) + "\n")
