"""Aggregate metrics of a set of trajectories, and the table printed at the end of a run."""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from fireact.evaluate.stats import with_interval, with_intervals
from fireact.terminal import show
from fireact.trajectory import Trajectory


def method_used(trajectory: Trajectory) -> str:
    """What the agent did, read off the steps (FireAct's labels): reflexion if a reflection
    thought is present, cot if it finished in one round with no tool call, else react."""
    if any(step.is_reflection for step in trajectory.steps):
        return "reflexion"
    if trajectory.turns == 1 and trajectory.tool_calls == 0:
        return "cot"
    return "react"


def busy_seconds(trajectories: Sequence[Trajectory]) -> float:
    """How long the run was working on at least one of these trajectories: the length of the
    union of their [started_at, started_at + wall_time] spans (so pauses between resumed runs
    and questions running one after another are both counted right)."""
    spans = sorted((t.started_at, t.started_at + t.wall_time) for t in trajectories)
    busy, end = 0.0, float("-inf")
    for start, stop in spans:
        if stop > end:
            busy += stop - max(start, end)
            end = stop
    return busy


def summarize(trajectories: Sequence[Trajectory], n_questions: int | None = None) -> dict[str, float]:
    """Means over `n_questions` (questions missing from `trajectories` count as failures), with
    95% bootstrap intervals of EM and F1 over those questions (fireact.evaluate.stats)."""
    n = n_questions if n_questions is not None else len(trajectories)
    if n == 0:
        return {"n": 0}
    turns = [t.turns for t in trajectories] or [0]
    used = Counter(method_used(t) for t in trajectories)
    missing = [0.0] * (n - len(trajectories))
    em = [t.em or 0.0 for t in trajectories] + missing
    f1 = [t.f1 or 0.0 for t in trajectories] + missing
    busy = busy_seconds(trajectories)
    summary = {
        "n": n,
        "completed": len(trajectories),
        "em": sum(em) / n,
        "f1": sum(f1) / n,
        **with_intervals({"em": em, "f1": f1}),
        "turns_mean": statistics.fmean(turns),
        "turns_std": statistics.pstdev(turns),
        "tool_calls_mean": statistics.fmean([t.tool_calls for t in trajectories] or [0]),
        "format_error_rate": sum(t.format_errors > 0 for t in trajectories) / n,
        "failed": sum(t.error is not None for t in trajectories),
        "prompt_tokens_mean": statistics.fmean([t.prompt_tokens for t in trajectories] or [0]),
        "completion_tokens_mean": statistics.fmean([t.completion_tokens for t in trajectories] or [0]),
        # latency: one trajectory's first request to its finish; throughput: trials per second
        # of the run's working time; time_per_trial = 1 / throughput (the paper's "time per trial")
        "latency_mean": statistics.fmean([t.wall_time for t in trajectories] or [0.0]),
        "throughput": len(trajectories) / busy if busy > 0 else 0.0,
        "time_per_trial": busy / max(len(trajectories), 1),
        "cost_per_trial": sum(t.cost for t in trajectories) / max(len(trajectories), 1),
    }
    for method in ("react", "cot", "reflexion"):
        summary[f"share_{method}"] = used[method] / max(len(trajectories), 1)
    tasks = sorted({t.task for t in trajectories})
    if len(tasks) > 1:
        for task in tasks:
            of_task = [t for t in trajectories if t.task == task]
            summary[f"em_{task}"] = sum(t.em or 0.0 for t in of_task) / len(of_task)
    return summary


# The unit each value is in, shown beside its name (the summary.json keys stay as they are).
UNITS = {"latency_mean": "s", "time_per_trial": "s", "throughput": "trials/s", "cost_per_trial": "USD",
         "prompt_tokens_mean": "tokens", "completion_tokens_mean": "tokens", "cost_usd": "USD"}
CAPTION = ("completed: questions with a trajectory; failed: of those, ended without an answer (no finish[] "
           "within method.max_rounds, or a request the backend refused); format_error_rate: the share with a "
           "reply that held no action or an action the tool could not run")


def print_summary(summary: dict[str, float], title: str, console: Console | None = None) -> None:
    """A two-column table of the values, printed at the end of a run (EM and F1 with their intervals)."""
    table = Table(title=f"{title} (EM, F1: 95% bootstrap intervals over {summary.get('n', 0)} questions)",
                  caption=CAPTION if "failed" in summary else None, caption_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        if key.endswith(("_ci_low", "_ci_high")):
            continue
        table.add_row(f"{key} ({UNITS[key]})" if key in UNITS else key, with_interval(summary, key))
    show(table, to=console)
