"""Online experience for objective=grpo: the policy being trained samples its own trajectories.

The data are a task's training questions, `batch_size` a step in a seeded order (resumable
mid-epoch like the trajectory data). When a step's questions reach the training loop
(Lightning's `on_before_batch_transfer`, after the previous step's update), the policy runs
`group_size` trajectories for each of them through the rollout engine (fireact.agents.rollout)
with the real tool, prompted in the format it is trained in, each under its own seed. Every
trajectory is rewarded (the task's score, less a format penalty and a cost per tool call) and
tokenized and masked exactly as SFT data (the prompt and the observations carry no label), so
the objective sees rows of the agent's own tokens, each with its reward and its question's
group number. Every trajectory is also appended to `<output_dir>/rollouts.jsonl`, sample number
step x group_size + its place in the group, so the file says what the policy did at each step; a
resumed run redoes the steps after its last checkpoint under the same seeds and writes only the
(question, sample) records the file does not hold yet.

The rollouts re-render each step from its parsed Thought/Action (as SFT data are), so the tokens
scored are the canonical rendering of what the policy wrote; a reply the parser repaired is
scored as repaired.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pandas as pd
import torch

from fireact.agents.rollout import Rollout
from fireact.llm.base import request_seed
from fireact.llm.hf import HFBackend
from fireact.tasks.base import Question, Task
from fireact.train.datamodule import TrajectoryDataModule
from fireact.trajectory import Trajectory, append_jsonl, read_jsonl

ROLLOUTS = "rollouts.jsonl"

log = logging.getLogger(__name__)


class Reward:
    """The reward of a trajectory: the task's score (`metric`: em or f1) of its answer, less
    `format_penalty` when a reply had no action or no answer was given, less `search_cost` per
    tool call."""

    def __init__(self, metric: str = "em", format_penalty: float = 0.0, search_cost: float = 0.0):
        if metric not in ("em", "f1"):
            raise ValueError(f"data.reward.metric must be em or f1, got {metric!r}")
        self.metric, self.format_penalty, self.search_cost = metric, format_penalty, search_cost

    def __call__(self, trajectory: Trajectory) -> float:
        score = trajectory.em if self.metric == "em" else trajectory.f1
        malformed = trajectory.format_errors > 0 or trajectory.answer is None
        return score - self.format_penalty * malformed - self.search_cost * trajectory.tool_calls


class RolloutDataModule(TrajectoryDataModule):
    """task, tool, noise: the rollout's parts (instantiated config groups); method: the method's
    class with its settings (a partial), built here in the data's format, so the policy is
    always prompted as it is trained. batch_size:
    questions per step; group_size: trajectories per question (GRPO's G, at least 2).
    temperature, top_p: how the policy samples. reward: fireact.train.rollout_data.Reward's
    settings. tool_workers: tool calls run at once. The other settings are TrajectoryDataModule's."""

    gives = "rollouts"
    loader_gives_tokens = False  # a step's questions; they become tokens after the rollouts

    def __init__(self, task: Task, method, tool, noise, format, tokenizer, group_size: int = 4,
                 temperature: float = 1.0, top_p: float = 1.0, reward: dict | None = None,
                 tool_workers: int = 8, **settings):
        super().__init__(path=f"task {task.name}", format=format, tokenizer=tokenizer,
                         val_fraction=0.0, group_by_length=False, **settings)
        if group_size < 2:
            raise ValueError(f"data.group_size={group_size}: GRPO compares trajectories within a group, so it needs at least 2")
        if temperature <= 0:
            raise ValueError(f"data.temperature={temperature}: a group of greedy trajectories is one trajectory repeated; "
                             f"set data.temperature above 0 (e.g. 1.0)")
        self.task, self.method, self.tool, self.noise = task, method(format=format.name), tool, noise
        self.dataset_name, self.dataset_source = f"{task.name}:{task.split}", task.source
        self.group_size, self.temperature, self.top_p = group_size, temperature, top_p
        self.reward = Reward(**(reward or {}))
        self.tool_workers = tool_workers
        # The loader yields a step's questions (a list); they become token batches after the rollouts.
        self.collate_tokens, self.collate = self.collate, list
        self.policy: HFBackend | None = None
        self.rollouts: Rollout | None = None
        self.written: set[tuple[str, int]] | None = None  # (qid, sample) already in rollouts.jsonl

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        questions = self.task.questions()[: self.limit]
        if not questions:
            raise ValueError(f"data.task ({self.task.name}) gives no questions; check data.task.n and data.task.start")
        self.train_set, self.val_set = questions, []
        self.stats = {"questions": len(questions), "group_size": self.group_size}
        log.info("rollout data: %d questions, %d trajectories each per step", len(questions), self.group_size)

    def table(self) -> pd.DataFrame:
        """The training questions, a row each."""
        return pd.DataFrame([{"task": self.task.name, "method": self.method.name, "qid": q.qid,
                              "question": q.question, "gold": q.gold} for q in self.train_set])

    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        """A step's questions in, the policy's rewarded and tokenized trajectories out."""
        if not (isinstance(batch, list) and batch and isinstance(batch[0], Question)):
            return batch
        model = self.trainer.lightning_module.model
        step = self.trainer.global_step
        if self.policy is None:
            self.policy = HFBackend.of(model, self.tokenizer, name="policy", temperature=self.temperature, top_p=self.top_p)
            labels = {"backend": "hf", "model": "policy", "tool": self.tool.name, "noise": self.noise.name}
            self.rollouts = Rollout(self.policy, self.method, self.task, self.tool, self.noise,
                                    tool_workers=self.tool_workers, labels=labels)
        self.policy.clear_caches()
        # Each request's seed comes from (this step's seed, question, sample, round, attempt):
        # a resumed step draws as it first did.
        self.rollouts.seed = request_seed(self.seed, "grpo", step)
        questions = [q for q in batch for _ in range(self.group_size)]
        samples = [step * self.group_size + g for _ in batch for g in range(self.group_size)]
        training = model.training
        model.eval()
        started = time.perf_counter()
        try:
            trajectories = self.rollouts.run(questions, samples=samples)
        finally:
            model.train(training)
        seconds = time.perf_counter() - started
        self.record(trajectories)
        rewards = [self.reward(t) for t in trajectories]
        tokens = self.collate_tokens([{"input_ids": e.input_ids, "labels": e.labels}
                                      for e in (self.encode(t) for t in trajectories)])
        tokens["rewards"] = torch.tensor(rewards, dtype=torch.float32)
        tokens["groups"] = torch.arange(len(batch)).repeat_interleave(self.group_size)
        n = len(trajectories)
        tokens["rollout"] = {
            "reward": sum(rewards) / n,
            "em": sum(t.em for t in trajectories) / n,
            "turns": sum(t.turns for t in trajectories) / n,
            "tool_calls": sum(t.tool_calls for t in trajectories) / n,
            "format_errors": sum(t.format_errors > 0 for t in trajectories) / n,
            "completion_tokens": sum(t.completion_tokens for t in trajectories) / n,
            "rollout_seconds": seconds,
        }
        return tokens

    def record(self, trajectories: list[Trajectory]) -> None:
        """Append the trajectories not yet in <output_dir>/rollouts.jsonl."""
        path = Path(self.trainer.default_root_dir) / ROLLOUTS
        if self.written is None:
            self.written = {t.key for t in read_jsonl(path)[0]} if path.exists() else set()
        for trajectory in trajectories:
            if trajectory.key not in self.written:
                append_jsonl(path, trajectory)
                self.written.add(trajectory.key)

    def teardown(self, stage: str | None = None) -> None:
        self.policy = self.rollouts = None
        self.tool.close()
