"""What the agent's own samples become: preference pairs (DPO) and capped successes (RFT).

`generate samples=k` (at a temperature) writes k trajectories per training question, the
successes to trajectories.jsonl and the failures to failures.jsonl. A pair is one success
(chosen) and one failure (rejected) of the same task, question and method, so both share the
prompt; identical trajectories are counted once, failures without a single step (a backend
error) are left out, and at most `per_question` pairs are drawn per question, seeded.

Rejection-sampling fine-tuning trains on the successes, each distinct trajectory once and at
most `per_question` of them per question (`distinct_per_question`, data.per_question in the
SFT data config), so easy questions do not crowd out the rest.

pairs.jsonl holds one {"chosen": <trajectory>, "rejected": <trajectory>} per line
(fireact.trajectory's records), the form `objective=dpo` trains on. preference.jsonl holds the
same pairs in the conversational preference format of TRL's DPOTrainer and most preference
tools: {"prompt": [the user's question], "chosen": [the turns after it], "rejected": [...]},
the turns as in chat.jsonl (assistant Thought/Action, user Observation).
"""

from __future__ import annotations

import itertools
import json
import random
from dataclasses import dataclass
from pathlib import Path

from fireact.trajectory_files import ReadReport, read_jsonl

from fireact.formats import Chat
from fireact.trajectory import Trajectory

PAIRS, PREFERENCE = "pairs.jsonl", "preference.jsonl"
SAMPLED = ("trajectories.jsonl", "failures.jsonl")  # what generate writes


@dataclass(frozen=True)
class Pair:
    chosen: Trajectory
    rejected: Trajectory


def build_pairs(trajectories: list[Trajectory], per_question: int = 4, seed: int = 0) -> list[Pair]:
    """Up to `per_question` (success, failure) pairs per question, in the questions' first-seen order."""
    if per_question < 1:
        raise ValueError(f"pairs per question must be at least 1, got {per_question}")
    groups: dict[tuple[str, str, str], dict[str, list[Trajectory]]] = {}
    for t in trajectories:
        group = groups.setdefault((t.task, t.qid, t.method), {"chosen": [], "rejected": []})
        if t.em == 1.0:
            group["chosen"].append(t)
        elif t.em is not None and t.steps:  # scored and wrong; an unscored (released) one is no failure
            group["rejected"].append(t)
    rng = random.Random(seed)
    pairs = []
    for group in groups.values():
        combinations = list(itertools.product(_distinct(group["chosen"]), _distinct(group["rejected"])))
        for i in sorted(rng.sample(range(len(combinations)), min(per_question, len(combinations)))):
            pairs.append(Pair(*combinations[i]))
    return pairs


def distinct_per_question(trajectories: list[Trajectory], per_question: int) -> list[Trajectory]:
    """Each question's first `per_question` distinct trajectories, in file order."""
    if per_question < 1:
        raise ValueError(f"data.per_question must be at least 1 (or null for all), got {per_question}")
    groups: dict[tuple[str, str], list[Trajectory]] = {}
    for t in trajectories:
        groups.setdefault((t.task, t.qid), []).append(t)
    kept = {id(t) for group in groups.values() for t in _distinct(group)[:per_question]}
    return [t for t in trajectories if id(t) in kept]


def _distinct(trajectories: list[Trajectory]) -> list[Trajectory]:
    seen: dict[str, Trajectory] = {}
    for t in trajectories:
        seen.setdefault(t.react_text(), t)
    return list(seen.values())


def write_pairs(path: str | Path, pairs: list[Pair]) -> None:
    with Path(path).open("w", encoding="utf-8") as out:
        for pair in pairs:
            record = {"chosen": pair.chosen.to_dict(), "rejected": pair.rejected.to_dict()}
            out.write(json.dumps(record, ensure_ascii=False) + "\n")


def write_preference(path: str | Path, pairs: list[Pair]) -> None:
    with Path(path).open("w", encoding="utf-8") as out:
        for pair in pairs:
            chosen, rejected = Chat().record(pair.chosen)["messages"], Chat().record(pair.rejected)["messages"]
            record = {"prompt": chosen[:1], "chosen": chosen[1:], "rejected": rejected[1:]}
            out.write(json.dumps(record, ensure_ascii=False) + "\n")


def read_pairs(path: str | Path) -> tuple[list[Pair], ReadReport]:
    path = Path(path)
    report = ReadReport(str(path))
    pairs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            pairs.append(Pair(Trajectory.from_dict(record["chosen"]), Trajectory.from_dict(record["rejected"])))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            report.failures.append((f"line {number}", f"{type(err).__name__}: {err}"))
    return pairs, report


def load_pairs(path: str | Path, per_question: int = 4, seed: int = 0) -> list[Pair]:
    """Pairs from a pairs.jsonl, or built from a generate output folder (its two files)."""
    path = Path(path).expanduser()
    if path.is_dir() and (path / PAIRS).is_file():
        path = path / PAIRS
    if path.is_file():
        pairs, report = read_pairs(path)
        report.warn()
    elif path.is_dir() and any((path / name).is_file() for name in SAMPLED):
        trajectories = []
        for name in SAMPLED:
            if (path / name).is_file():
                read, report = read_jsonl(path / name)
                report.warn()
                trajectories += read
        pairs = build_pairs(trajectories, per_question, seed)
    else:
        raise FileNotFoundError(
            f"data.path={str(path)!r} is neither a {PAIRS} nor a folder with {' or '.join(SAMPLED)}; point it at "
            f"the output of `generate samples=4 backend.temperature=0.7` (successes and failures) or at a {PAIRS}"
        )
    if not pairs:
        raise ValueError(
            f"data.path={str(path)!r} gives no preference pairs: no question has both a success and a failure; "
            f"sample more per question (generate samples=...) or at a higher backend.temperature"
        )
    return pairs
