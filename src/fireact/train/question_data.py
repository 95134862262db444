"""The data of objective=grpo: a task's training questions, `batch_size` a step in a seeded order,
resumable mid-epoch like the trajectory data (fireact.train.datamodule.ResumableLoader). A batch
is {"questions": [Question, ...], "step": the rollout step}; the objective samples and rewards the
trajectories it trains on (fireact.train.objectives.GRPO, fireact.train.policy_rollout)."""

from __future__ import annotations

import logging

import pandas as pd
from torch.utils.data import DistributedSampler

from fireact.tasks.base import Question, Task
from fireact.train.datamodule import ResumableDataModule, ResumableLoader

log = logging.getLogger(__name__)


class QuestionDataModule(ResumableDataModule):
    """task: where the questions come from (an instantiated conf/task member). batch_size: questions
    per step (per device). limit: the first N questions (null: all). seed: the order's.
    tokenizer, context_length: given to every data module; questions need neither."""

    gives = "questions"  # what an objective's `trains_on` must be (fireact.train.objectives)

    def __init__(self, task: Task, batch_size: int = 4, limit: int | None = None, seed: int = 0,
                 num_workers: int = 0, tokenizer=None, context_length: int | None = None):
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be at least 1, got {batch_size}")
        self.task, self.batch_size, self.limit, self.seed, self.num_workers = task, batch_size, limit, seed, num_workers
        # The training run's MLflow dataset: its name and where it was read from.
        self.dataset_name, self.dataset_source = f"{task.name}:{task.split}", task.source
        self.train_set: list[Question] | None = None
        self.val_set: list = []  # no validation: a rollout's reward is measured where it is sampled
        self.stats: dict[str, int] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        questions = self.task.questions()[: self.limit]
        if not questions:
            raise ValueError(f"data.task ({self.task.name}) gives no questions; check data.task.n and data.task.start")
        self.train_set = questions
        self.stats = {"questions": len(questions)}
        log.info("question data: %d questions", len(questions))

    def table(self) -> pd.DataFrame:
        """The training questions, a row each."""
        return pd.DataFrame([{"task": self.task.name, "qid": q.qid, "question": q.question, "gold": q.gold}
                             for q in self.train_set])

    def train_dataloader(self) -> ResumableLoader:
        self.setup("fit")
        world, rank = self._replicas()
        sampler = DistributedSampler(self.train_set, num_replicas=world, rank=rank, shuffle=True, seed=self.seed)
        return self.resumable_loader(self.train_set, sampler, _question_batch, self.batch_size, self.num_workers,
                                     token_batches=False)

    def transfer_batch_to_device(self, batch: dict, device, dataloader_idx: int) -> dict:
        """Questions are not tensors: they stay; the objective puts its rows on the model's device."""
        return batch


def _question_batch(questions: list[Question]) -> dict:
    return {"questions": questions}
