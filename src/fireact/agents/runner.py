"""Run an agent over questions from a config, writing trajectories as they finish.

Shared by `evaluate` (student rollouts on evaluation questions) and `generate` (teacher
rollouts on training questions): builds the backend, method, tool and noise from their
config groups, skips questions already written (resume), and runs the rest in chunks with
a progress bar.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from fireact.agents.rollout import Rollout
from fireact.llm.pricing import cost
from fireact.tasks.base import Question, Task
from fireact.trajectory import Trajectory, read_jsonl

log = logging.getLogger(__name__)


def load_written(paths: Sequence[Path]) -> dict[str, Trajectory]:
    """Trajectories already in these JSONL files, by qid (first record wins).

    A torn or corrupt line (a run killed mid-write) is reported and dropped from the file,
    so its question is run again and the file stays one record per line.
    """
    written: dict[str, Trajectory] = {}
    for path in paths:
        if not path.exists():
            continue
        trajectories, report = read_jsonl(path)
        report.warn()
        if report.failures:
            tmp = path.with_suffix(".tmp")
            tmp.write_text("".join(json.dumps(t.to_dict(), ensure_ascii=False) + "\n" for t in trajectories), encoding="utf-8")
            tmp.replace(path)
        for t in trajectories:
            written.setdefault(t.qid, t)
    return written


def run_agent(
    cfg: DictConfig,
    task: Task,
    questions: Sequence[Question],
    done: dict[str, Trajectory],
    on_finish: Callable[[Trajectory], None],
    desc: str,
) -> None:
    """Run cfg's agent over the questions not in `done`; `on_finish` writes each trajectory."""
    for key in ("chunk_size", "tool_workers"):
        if not isinstance(cfg[key], int) or cfg[key] < 1:
            raise ValueError(f"{key}={cfg[key]!r}: must be an integer >= 1; set {key}=1 or more")
    todo = [q for q in questions if q.qid not in done]
    log.info("%d questions: %d already written, %d to run", len(questions), len(questions) - len(todo), len(todo))
    if not todo:
        return
    method, tool, noise = instantiate(cfg.method), instantiate(cfg.tool), instantiate(cfg.noise)
    llm = instantiate(cfg.backend)
    price = OmegaConf.to_container(cfg.model.price, resolve=True)
    rollout = Rollout(
        llm, method, task, tool, noise,
        cost=lambda prompt_tokens, completion_tokens, seconds: cost(price, prompt_tokens, completion_tokens, seconds),
        seed=cfg.seed, tool_workers=cfg.tool_workers,
        labels={"backend": llm.backend, "model": llm.model, "tool": tool.name, "noise": noise.name},
    )
    try:
        with tqdm(total=len(questions), initial=len(questions) - len(todo), desc=desc, unit="q") as bar:
            def finished(trajectory: Trajectory) -> None:
                on_finish(trajectory)
                bar.update(1)

            for start in range(0, len(todo), cfg.chunk_size):
                rollout.run(todo[start:start + cfg.chunk_size], on_finish=finished)
    finally:
        llm.close()
        tool.close()
