"""An evaluation's files: trajectories.jsonl, summary.json, per_question.csv, plots/turns.png.
Written by the stages that score trajectories (evaluate, rescore); fireact.tracking logs them."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from fireact.evaluate.plots import turns_histogram
from fireact.evaluate.summary import method_used
from fireact.trajectory import Trajectory
from fireact.trajectory_files import write_jsonl

PER_QUESTION = "per_question.csv"
PER_QUESTION_COLUMNS = ["qid", "em", "f1", "turns", "tool_calls", "answer", "gold", "method_used", "error"]


def per_question_table(trajectories: Sequence[Trajectory]) -> pd.DataFrame:
    """One row per trajectory: qid, em, f1, turns, tool_calls, answer, gold, method_used, error."""
    rows = [
        {
            "qid": t.qid, "em": t.em, "f1": t.f1, "turns": t.turns, "tool_calls": t.tool_calls,
            "answer": t.answer, "gold": t.gold, "method_used": method_used(t), "error": t.error,
        }
        for t in trajectories
    ]
    return pd.DataFrame(rows, columns=PER_QUESTION_COLUMNS)


def write_evaluation(trajectories: Sequence[Trajectory], summary: Mapping[str, float], out_dir: str | Path,
                     title: str = "", manifest: Mapping | None = None) -> dict[str, Path]:
    """Write out_dir/{trajectories.jsonl (unless there), summary.json (with the `manifest`, when
    given: fireact.evaluate.manifest), per_question.csv, plots/turns.png}."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "trajectories": out_dir / "trajectories.jsonl",
        "summary": out_dir / "summary.json",
        "per_question": out_dir / PER_QUESTION,
    }
    if not files["trajectories"].exists():  # an evaluate run has appended it already
        write_jsonl(files["trajectories"], trajectories)
    files["summary"].write_text(json.dumps({**summary, **({"manifest": dict(manifest)} if manifest else {})}, indent=2))
    per_question_table(trajectories).to_csv(files["per_question"], index=False)
    files["turns_plot"] = turns_histogram(
        [t.turns for t in trajectories], out_dir / "plots" / "turns.png", title=title or "turns per trajectory"
    )
    return files


def read_scores(folder: str | Path) -> dict[str, dict[str, float]]:
    """{qid: {em, f1}} of the evaluation written to `folder`: the questions it was run on."""
    table = pd.read_csv(Path(folder) / PER_QUESTION, dtype={"qid": str})
    return {row.qid: {"em": float(row.em), "f1": float(row.f1)} for row in table.itertuples()}
