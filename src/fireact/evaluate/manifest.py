"""What an evaluation's numbers can be compared with: its manifest.

Two EMs compare only when they were measured on the same questions, scored the same way, in the
same environment: the tool and what it searches (a corpus' hash, a retriever, top-k; recorded
files; a URL), and the noise. These are the manifest's ENVIRONMENT keys; numbers whose
environments differ are not comparable (Search-R1's users' top complaint: issues #40, #46).
The agent's protocol (method, prompt format, a hash of its first prompt, max rounds and tokens) is
what paired comparisons set side by side, so it is recorded and shown where it differs (PROTOCOL).

evaluate writes the manifest into summary.json ("manifest") and its MLflow params (manifest.*);
the pipeline's paired tests, rescore's paired table (from the files' trajectory labels) and
report's tables (from the runs' params) flag results whose environments differ.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

ENVIRONMENT = ("task", "split", "questions", "questions_hash", "metric", "tool", "tool_config", "noise")
PROTOCOL = ("method", "format", "prompt_hash", "max_rounds", "max_tokens")
# A config group that picks part of the environment, and the keys it sets: a table whose columns
# are that group sets those side by side on purpose.
GROUP_KEYS = {"task": ("task", "split", "questions", "questions_hash", "metric"), "tool": ("tool", "tool_config"),
              "noise": ("noise",)}
PLACEHOLDER = "{question}"  # the question a prompt is hashed with: the prompt's own text, not a question's


def json_hash(value: Any) -> str:
    """12 hex digits of the SHA-256 of `value` as canonical JSON."""
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def question_set(task, questions: Sequence) -> dict[str, Any]:
    """The manifest's keys that say which questions were asked and how answers were scored."""
    score = type(task).score
    return {
        "task": task.name,
        "split": task.split,
        "questions": len(questions),
        "questions_hash": json_hash([[q.qid, q.question, q.gold] for q in questions]),
        "metric": f"{score.__module__}.{score.__qualname__}",
    }


def build(task, questions: Sequence, method, tool, noise) -> dict[str, Any]:
    """The manifest of evaluating `method` with `tool` and `noise` on `task`'s `questions`."""
    return {
        **question_set(task, questions),
        "tool": tool.name,
        "tool_config": json.dumps(tool.result_config(), sort_keys=True, default=str),
        "noise": json.dumps({"name": noise.name, **noise.settings()}, sort_keys=True, default=str),
        "method": method.name,
        "format": method.format,
        "prompt_hash": json_hash(method.prompter(task)(PLACEHOLDER, [], 1)),
        "max_rounds": method.max_rounds,
        "max_tokens": method.max_tokens,
    }


def read(folder: str | Path) -> dict[str, Any] | None:
    """The manifest in an evaluation folder's summary.json; None for one written before manifests."""
    path = Path(folder) / "summary.json"
    return json.loads(path.read_text()).get("manifest") if path.exists() else None


def as_params(manifest: Mapping[str, Any]) -> dict[str, Any]:
    return {f"manifest.{key}": value for key, value in manifest.items()}


def of_trajectories(trajectories: Sequence) -> dict[str, Any]:
    """What a trajectory file says of its manifest: the tool, noise and method its trajectories
    are labelled with (a released file's are unlabelled: unknown)."""
    def labels(attribute: str) -> str | None:
        return ",".join(sorted({getattr(t, attribute) for t in trajectories if getattr(t, attribute)})) or None

    return {"tool": labels("tool"), "noise": labels("noise"), "method": labels("method")}


def differences(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> dict[str, list[str]]:
    """{"environment": keys that differ, "protocol": keys that differ}. What a manifest lacks (an
    evaluation from before manifests, a released file's unlabelled trajectories) is unknown, never
    a difference."""
    a, b = a or {}, b or {}
    return {group: [key for key in keys if a.get(key) is not None and b.get(key) is not None and a[key] != b[key]]
            for group, keys in (("environment", ENVIRONMENT), ("protocol", PROTOCOL))}


def incomparable(a_name: str, b_name: str, differ: Mapping[str, list[str]]) -> str | None:
    """The line that says why two results are not comparable, or None when they are."""
    if not differ["environment"]:
        return None
    return (f"NOT COMPARABLE: {a_name} and {b_name} were measured in different settings "
            f"(differing: {', '.join(differ['environment'])}); their difference is not the agents'.")
