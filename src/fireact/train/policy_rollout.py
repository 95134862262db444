"""The rollout function and the reward function that objective=grpo is given (conf/objective/grpo.yaml).

`PolicyRollout(model, questions, samples, step)`: the model being trained runs one trajectory per
(question, sample number) through the rollout engine (fireact.agents.rollout) with the real tool,
prompted in the format it is trained in, token in, token out: each trajectory keeps the ids the
policy saw and sampled and each sampled id's log-probability as it was drawn. Every trajectory is
appended to `path` (the run folder's rollouts.jsonl), so the file says what the policy did at each
step; a resumed run takes a step's trajectories from the file when it holds them all (a run stopped
between a step's rollouts and its last update), and otherwise samples them again under the same
seeds, writing only the (question, sample) records the file does not hold yet.

`TaskReward(trajectory)`: the task's score of the answer, less a format penalty and a cost per tool
call. Any callable from a Trajectory to a float can take its place (`objective.reward._target_`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

from torch import nn

from fireact.agents.rollout import Rollout
from fireact.llm.base import request_seed
from fireact.llm.hf import HFBackend
from fireact.tasks.base import Question, Task
from fireact.tools.base import Tool
from fireact.trajectory import Trajectory
from fireact.trajectory_files import append_jsonl, read_jsonl

log = logging.getLogger(__name__)


class TaskReward:
    """The reward of a trajectory: the task's score (`metric`: em or f1) of its answer, less
    `format_penalty` when a reply had no action or an invalid one, or no answer was given, less `search_cost` per
    tool call."""

    def __init__(self, metric: str = "em", format_penalty: float = 0.0, search_cost: float = 0.0):
        if metric not in ("em", "f1"):
            raise ValueError(f"objective.reward.metric must be em or f1, got {metric!r}")
        self.metric, self.format_penalty, self.search_cost = metric, format_penalty, search_cost

    def __call__(self, trajectory: Trajectory) -> float:
        score = trajectory.em if self.metric == "em" else trajectory.f1
        malformed = trajectory.format_errors > 0 or trajectory.answer is None
        return score - self.format_penalty * malformed - self.search_cost * trajectory.tool_calls


class PolicyRollout:
    """task: the task the questions come from (it scores the answers; the data's task). method: the
    method's class with its settings (a partial), built here in `format`, the format trained in, so
    the policy is prompted as it is trained. tool, noise: the environment. temperature, top_p: how
    the policy samples (the objective takes log-probabilities under the same temperature).
    tool_workers: tool calls run at once. seed: the run's seed. path: where the trajectories are
    written and read back (null: nowhere)."""

    def __init__(self, task: Task | None, method: Callable, tool: Tool, noise, format, temperature: float = 1.0,
                 top_p: float = 1.0, tool_workers: int = 8, seed: int = 0, path: str | None = None):
        if task is None:
            raise ValueError("objective=grpo samples on the training questions of data.task; use data=questions")
        if temperature <= 0:
            raise ValueError(f"objective.rollout.temperature={temperature}: a group of greedy trajectories is one "
                             f"trajectory repeated; sample above 0 (e.g. 1.0)")
        self.task, self.method, self.tool, self.noise = task, method(format=format.name), tool, noise
        self.temperature, self.top_p, self.tool_workers, self.seed = temperature, top_p, tool_workers, seed
        self.path = Path(path) if path else None
        self.tokenizer = None
        self.engine: Rollout | None = None
        self.recorded: dict[tuple[str, int], Trajectory] | None = None  # the file's, by (qid, sample)

    def attach(self, tokenizer) -> None:
        """The trained model's tokenizer: the rollouts are its ids."""
        self.tokenizer = tokenizer

    def __call__(self, model: nn.Module, questions: list[Question], samples: list[int], step: int) -> list[Trajectory]:
        """Trajectory i is questions[i]'s sample number samples[i], drawn at rollout step `step`."""
        trajectories = self.read_back(questions, samples) or self.sample(model, questions, samples, step)
        self.record(trajectories)
        return trajectories

    def sample(self, model: nn.Module, questions: list[Question], samples: list[int], step: int) -> list[Trajectory]:
        """The policy's trajectories, each under a seed from (the step's seed, question, sample,
        round, attempt): a step sampled again draws as it first did from the same weights. The
        model samples in eval mode (no dropout), its weights shared with the backend, not copied."""
        if self.tokenizer is None:
            raise RuntimeError("PolicyRollout.attach(tokenizer) first: the rollouts are the trained model's ids")
        if self.engine is None or self.engine.llm.lm is not model:
            policy = HFBackend.of(model, self.tokenizer, name="policy", temperature=self.temperature, top_p=self.top_p)
            self.method.check(policy, self.tool)
            labels = {"backend": "hf", "model": "policy", "tool": self.tool.name, "noise": self.noise.name}
            self.engine = Rollout(policy, self.method, self.task, self.tool, self.noise,
                                  tool_workers=self.tool_workers, labels=labels)
        self.engine.llm.clear_caches()  # the weights moved since the last step
        self.engine.seed = request_seed(self.seed, "grpo", step)
        training = model.training
        model.eval()
        try:
            return self.engine.run(questions, samples=samples)
        finally:
            model.train(training)

    def read_back(self, questions: list[Question], samples: list[int]) -> list[Trajectory] | None:
        """The trajectories as `path` holds them, or None if it lacks any."""
        if self.recorded is None:
            self.recorded = {t.key: t for t in read_jsonl(self.path)[0]} if self.path and self.path.exists() else {}
        keys = [(q.qid, sample) for q, sample in zip(questions, samples)]
        if not all(key in self.recorded for key in keys):
            return None
        log.info("rollout step: %d trajectories read back from %s", len(keys), self.path)
        return [self.recorded[key] for key in keys]

    def record(self, trajectories: list[Trajectory]) -> None:
        """Append the trajectories not yet in `path`."""
        for trajectory in trajectories:
            if trajectory.key not in self.recorded:
                if self.path is not None:
                    append_jsonl(self.path, trajectory)
                self.recorded[trajectory.key] = trajectory

    def close(self) -> None:
        self.engine = None
        self.tool.close()
