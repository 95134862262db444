"""Online experience for objective=grpo: the policy being trained samples its own trajectories.

The data are a task's training questions, `batch_size` a step in a seeded order (resumable
mid-epoch like the trajectory data). When a step's questions reach the training loop
(Lightning's `on_before_batch_transfer`, after the previous step's update), the policy runs
`group_size` trajectories for each of them through the rollout engine (fireact.agents.rollout)
with the real tool, prompted in the format it is trained in, each under its own seed. Every
trajectory is rewarded (the task's score, less a format penalty and a cost per tool call), so
the objective sees rows of the agent's own tokens, each with its reward and its question's
group number. Every trajectory is also appended to `<output_dir>/rollouts.jsonl`, sample number
rollout step x group_size + its place in the group, so the file says what the policy did at each
step. A resumed run takes a step's trajectories from the file when it holds them all (a run
stopped between a step's rollouts and its last update), and otherwise samples them again under
the same seeds, writing only the (question, sample) records the file does not hold yet.

The rollouts are token in, token out (fireact.agents.rollout): the rows are the ids the policy
saw and sampled, labeled only where it sampled them, with each sampled id's log-probability as it
was drawn (the old log-probabilities of GRPO's ratio). Nothing is tokenized again: a reply the
parser repaired is trained as written, a forced finish[] is not trained at all, and the harness's
cues carry no label.

With `num_iterations` above 1 a step's rollouts go into that many optimizer steps, one after the
other (the loader yields the step's questions again; the rollouts are kept, not sampled again).
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
from fireact.train.templates import sampled_example
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
    num_iterations: optimizer steps on each step's rollouts (TRL's num_iterations).
    temperature, top_p: how the policy samples. reward: fireact.train.rollout_data.Reward's
    settings. tool_workers: tool calls run at once. The other settings are TrajectoryDataModule's."""

    gives = "rollouts"
    loader_gives_tokens = False  # a step's questions; they become tokens after the rollouts

    def __init__(self, task: Task, method, tool, noise, format, tokenizer, group_size: int = 4,
                 num_iterations: int = 1, temperature: float = 1.0, top_p: float = 1.0,
                 reward: dict | None = None, tool_workers: int = 8, **settings):
        super().__init__(path=f"task {task.name}", format=format, tokenizer=tokenizer,
                         val_fraction=0.0, group_by_length=False, **settings)
        if group_size < 2:
            raise ValueError(f"data.group_size={group_size}: GRPO compares trajectories within a group, so it needs at least 2")
        if not isinstance(num_iterations, int) or num_iterations < 1:
            raise ValueError(f"data.num_iterations={num_iterations!r}: the optimizer steps on each step's rollouts, "
                             f"an integer >= 1 (1: one update per sampled batch)")
        if temperature <= 0:
            raise ValueError(f"data.temperature={temperature}: a group of greedy trajectories is one trajectory repeated; "
                             f"set data.temperature above 0 (e.g. 1.0)")
        self.task, self.method, self.tool, self.noise = task, method(format=format.name), tool, noise
        self.dataset_name, self.dataset_source = f"{task.name}:{task.split}", task.source
        self.group_size, self.temperature, self.top_p = group_size, temperature, top_p
        self.reward = Reward(**(reward or {}))
        self.tool_workers = tool_workers
        self.iterations = num_iterations
        # The loader yields a step's questions (a list); they become token batches after the rollouts.
        self.collate_tokens, self.collate = self.collate, list
        self.policy: HFBackend | None = None
        self.rollouts: Rollout | None = None
        self.recorded: dict[tuple[str, int], Trajectory] | None = None  # rollouts.jsonl, by (qid, sample)
        self.rolled: dict[tuple, dict] = {}  # the current rollout step's token batches, by their questions

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
        """A step's questions in, the policy's rewarded trajectories out as token rows; the same
        rows again for the step's later iterations."""
        if not (isinstance(batch, list) and batch and isinstance(batch[0], Question)):
            return batch
        step = self.trainer.global_step // self.iterations  # the rollout step
        key = (step, tuple(q.qid for q in batch))
        if key not in self.rolled:
            self.rolled = {key: self.roll(batch, step)}
        return dict(self.rolled[key])

    def roll(self, batch: list[Question], step: int) -> dict:
        """The rollout step's trajectories for the questions (from rollouts.jsonl when it holds them
        all, else sampled), rewarded, as token rows."""
        questions = [q for q in batch for _ in range(self.group_size)]
        samples = [step * self.group_size + g for _ in batch for g in range(self.group_size)]
        started = time.perf_counter()
        trajectories = self.read_back(questions, samples) or self.sample(questions, samples, step)
        seconds = time.perf_counter() - started
        self.record(trajectories)
        rewards = [self.reward(t) for t in trajectories]
        if any(t.tokens is None for t in trajectories):
            raise ValueError(f"{ROLLOUTS} holds trajectories without token traces (written before rollouts kept their "
                             f"tokens); move it away to sample the step again")
        examples = [sampled_example(t.tokens, self.max_length) for t in trajectories]
        tokens = self.collate_tokens([{"input_ids": e.input_ids, "labels": e.labels} for e in examples])
        tokens["old_logps"] = torch.zeros(tokens["input_ids"].shape)
        for row, example in enumerate(examples):
            tokens["old_logps"][row, : len(example.logprobs)] = torch.tensor(example.logprobs)
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
            "truncated": sum(e.truncated for e in examples) / n,
            "rollout_seconds": seconds,
        }
        return tokens

    def sample(self, questions: list[Question], samples: list[int], step: int) -> list[Trajectory]:
        """The policy's trajectories, each under a seed from (the step's seed, question, sample,
        round, attempt): a step sampled again draws as it first did from the same weights."""
        model = self.trainer.lightning_module.model
        if self.policy is None:
            self.policy = HFBackend.of(model, self.tokenizer, name="policy", temperature=self.temperature, top_p=self.top_p)
            labels = {"backend": "hf", "model": "policy", "tool": self.tool.name, "noise": self.noise.name}
            self.rollouts = Rollout(self.policy, self.method, self.task, self.tool, self.noise,
                                    tool_workers=self.tool_workers, labels=labels)
        self.policy.clear_caches()
        self.rollouts.seed = request_seed(self.seed, "grpo", step)
        training = model.training
        model.eval()
        try:
            return self.rollouts.run(questions, samples=samples)
        finally:
            model.train(training)

    def read_back(self, questions: list[Question], samples: list[int]) -> list[Trajectory] | None:
        """The step's trajectories as <output_dir>/rollouts.jsonl holds them, or None if it lacks any."""
        if self.recorded is None:
            path = Path(self.trainer.default_root_dir) / ROLLOUTS
            self.recorded = {t.key: t for t in read_jsonl(path)[0]} if path.exists() else {}
        keys = [(q.qid, sample) for q, sample in zip(questions, samples)]
        if not all(key in self.recorded for key in keys):
            return None
        log.info("rollout step: %d trajectories read back from %s", len(keys), ROLLOUTS)
        return [self.recorded[key] for key in keys]

    def record(self, trajectories: list[Trajectory]) -> None:
        """Append the trajectories not yet in <output_dir>/rollouts.jsonl."""
        path = Path(self.trainer.default_root_dir) / ROLLOUTS
        for trajectory in trajectories:
            if trajectory.key not in self.recorded:
                append_jsonl(path, trajectory)
                self.recorded[trajectory.key] = trajectory

    def teardown(self, stage: str | None = None) -> None:
        self.policy = self.rollouts = None
        self.rolled = {}
        self.tool.close()
