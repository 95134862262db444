"""An evaluation run: model × backend × method × task × tool × noise over n questions.

Trajectories are appended to `trajectories.jsonl` in the output folder as each question
finishes; rerunning the same command (same folder) skips the questions already there, so
a killed run resumes. `resume=false` starts the folder afresh.
"""

from __future__ import annotations

from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig

from fireact import tracking
from fireact.agents.runner import load_written, run_agent
from fireact.evaluate.summary import print_summary, summarize
from fireact.trajectory import append_jsonl


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Run (or finish) the evaluation and log it as one MLflow run (stage "evaluate")."""
    with tracking.start_run(cfg, stage="evaluate"):  # fails here, before any work, if the store is down
        return _evaluate(cfg)


def _evaluate(cfg: DictConfig) -> dict[str, float]:
    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "trajectories.jsonl"
    if not cfg.resume:
        path.unlink(missing_ok=True)
    task = instantiate(cfg.task)
    questions = task.questions()
    done = {qid: t for qid, t in load_written([path]).items() if qid in {q.qid for q in questions}}

    def write(trajectory):
        append_jsonl(path, trajectory)
        done[trajectory.qid] = trajectory

    run_agent(cfg, task, questions, done, write, desc="evaluate")

    trajectories = [done[q.qid] for q in questions]
    summary = summarize(trajectories)
    title = f"evaluate · {task.name} · {trajectories[0].method if trajectories else ''} · {cfg.model.name}"
    tracking.log_evaluation(trajectories, summary, out_dir, title=title)  # summary.json, per-question table, plots
    print_summary(summary, title=title)
    print(f"trajectories: {path}\nsummary:      {out_dir / 'summary.json'}")
    return summary
