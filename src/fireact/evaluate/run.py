"""An evaluation run: model × backend × method × task × tool × noise over n questions.

Trajectories are appended to `trajectories.jsonl` in the output folder as each question
finishes; rerunning the same command (same folder) skips the questions already there, so
a killed run resumes. The folder's `run_config.yaml` records the settings its trajectories
were written under, and a rerun with other settings stops before any work (see
fireact.run_folder). `resume=false` starts the folder afresh: its old files go when
the first new trajectory is written, so a run that fails before that loses nothing.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from hydra.utils import instantiate
from omegaconf import DictConfig

from fireact import threads, tracking
from fireact.agents.runner import (Agent, check_rollout_settings, load_written, resolve_method_format, run_agent,
                                   speed_keys, to_run)
from fireact.evaluate import manifest as manifests
from fireact.evaluate.files import write_evaluation
from fireact.evaluate.stats import POWER, SIGNIFICANCE, detectable_difference
from fireact.evaluate.summary import print_summary, summarize
from fireact.run_folder import RunFolder
from fireact.trajectory_files import append_jsonl

log = logging.getLogger(__name__)

OUTPUTS = ("summary.json", "per_question.csv", "plots/turns.png")


def not_results(cfg: DictConfig) -> tuple[str, ...]:
    """The keys that do not change what evaluate writes: the rollout's speed keys, task.n (more
    questions resume the folder) and the agent's name."""
    return (*speed_keys(cfg), "task.n", "agent")


def evaluation_manifest(cfg: DictConfig, task, questions, agent: Agent, out_dir: Path) -> dict:
    """What the evaluation's numbers compare with (fireact.evaluate.manifest): from the agent that
    ran; when nothing ran, from the folder's summary (its first run's environment) with this
    run's questions, else from agent parts built for it."""
    if agent.llm is None:
        written = manifests.read(out_dir)
        if written is not None:
            return {**written, **manifests.question_set(task, questions)}
        tool = instantiate(cfg.tool)
        try:
            return manifests.build(task, questions, instantiate(cfg.method), tool, instantiate(cfg.noise))
        finally:
            tool.close()
    return manifests.build(task, questions, agent.method, agent.tool, agent.noise)


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Run (or finish) the evaluation and log it as one MLflow run (stage "evaluate"). Everything
    that can stop it on bad input or a service that is down is checked before the run opens."""
    resolve_method_format(cfg)  # method.format=auto: the model's own
    tracking.check(cfg)  # the tracking store first: down, nothing else is done
    task = instantiate(cfg.task)
    questions = task.questions()  # a bad task or n fails here, before the folder is touched
    check_rollout_settings(cfg)
    smallest = detectable_difference(len(questions))
    log.info("%d questions: %s (two-sided, alpha %.2f, power %.1f)", len(questions),
             f"an EM difference between two agents below {smallest:.3f} is unlikely to be detected" if smallest < 1
             else "too few for any EM difference between two agents to be detected reliably", SIGNIFICANCE, POWER)
    out_dir = Path(cfg.output_dir)
    path = out_dir / "trajectories.jsonl"
    folder = RunFolder(out_dir, cfg, results=[path.name], not_results=not_results(cfg))
    fresh = not cfg.resume
    if not fresh:
        folder.check()  # written under other settings: stop now, naming the keys
    keys = {(q.qid, 0) for q in questions}  # one trajectory (sample 0) per question
    done = {} if fresh else {key: t for key, t in load_written([path]).items() if key in keys}

    def write(trajectory):
        folder.before_first_result(fresh, also=OUTPUTS)
        append_jsonl(path, trajectory)
        done[trajectory.key] = trajectory

    with threads.computing(cfg.threads), Agent(cfg, needed=bool(to_run(questions, done))) as agent, \
            tracking.start_run(cfg, stage="evaluate", tags={"agent": cfg.agent} if cfg.get("agent") else None):
        tracking.log_dataset(pd.DataFrame([asdict(q) for q in questions]), context="evaluation", source=task.source,
                             name=f"{task.name}:{task.split}[{task.start}:{task.start + len(questions)}]")
        run_agent(cfg, agent, task, questions, done, write, desc="evaluate")
        trajectories = [done[q.qid, 0] for q in questions]
        summary = summarize(trajectories)
        manifest = evaluation_manifest(cfg, task, questions, agent, out_dir)
        tracking.log_params(manifests.as_params(manifest))
        title = f"evaluate · {task.name} · {trajectories[0].method} · {cfg.model.name}"
        tracking.log_evaluation(summary, write_evaluation(trajectories, summary, out_dir, title=title, manifest=manifest))
    print_summary(summary, title=title)
    print(f"trajectories: {path}\nsummary:      {out_dir / 'summary.json'}")
    return summary
