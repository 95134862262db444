"""The training data: trajectories in, masked token sequences out, batched by length.

Input (`data.path`), any of:
- a Trajectory JSONL (fireact.trajectory.write_jsonl; what build_data writes),
- a build_data output folder (its trajectories.jsonl),
- a released Alpaca file (data/finetune/alpaca_format/*.json),
- a released/exported OpenAI chat JSONL ({"messages": [...]} per line).
A relative path is looked up in the current folder, then in the data folder
(fireact.paths.data_dir(): e.g. "finetune/alpaca_format/hotpotqa.json").
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

import pandas as pd
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, DistributedSampler
from transformers import DataCollatorForSeq2Seq
from transformers.trainer_pt_utils import DistributedLengthGroupedSampler

from fireact.data.export import TRAJECTORIES
from fireact.data.pairs import distinct_per_question
from fireact.paths import data_dir
from fireact.train.examples import Example, IGNORE_INDEX, build_example, sampled_example
from fireact.trajectory import Trajectory
from fireact.trajectory_files import read_trajectory_file

log = logging.getLogger(__name__)


def find_trajectory_file(folder: Path) -> Path:
    """The trajectory JSONL of a build_data output folder."""
    path = folder / TRAJECTORIES
    if not path.is_file():
        raise FileNotFoundError(
            f"data.path={str(folder)!r} is a folder without {TRAJECTORIES} (what build_data writes); "
            f"set data.path to a build_data output folder or to a trajectory file itself"
        )
    return path


def load_trajectories(path: str | Path) -> list[Trajectory]:
    """Read any supported training input (see the module doc); warns about unreadable records."""
    path = Path(path).expanduser()
    if not path.exists() and not path.is_absolute() and (data_dir() / path).exists():
        path = data_dir() / path
    if path.is_dir():
        path = find_trajectory_file(path)
    if not path.exists():
        raise FileNotFoundError(
            f"data.path={str(path)!r} does not exist; point it at a trajectory JSONL, a build_data output "
            f"folder, or a released file such as data/finetune/alpaca_format/hotpotqa.json"
        )
    try:
        trajectories, report = read_trajectory_file(path)
    except ValueError as err:
        raise ValueError(f"data.path={str(path)!r}: {err}") from err
    report.warn()
    if not trajectories:
        raise ValueError(f"data.path={str(path)!r} holds no readable trajectory ({len(report.failures)} unreadable records)")
    return trajectories


class ResumableLoader(DataLoader):
    """A training DataLoader that a run resumed mid-epoch continues where it stopped, and that tells
    each batch how many tokens its optimizer step trains.

    Lightning restores the step count from a checkpoint but restarts the epoch's iteration.
    This loader's state is how many of the epoch's batches went into finished optimizer
    steps; the resumed epoch, drawn in the same seeded order, skips them. The skip is read at
    the first batch, not when the iterator is made: Lightning makes it before restoring.

    The batches of one optimizer step (`accumulate_grad_batches` of them) are read together. Token
    batches each get `step_tokens`, the labeled tokens of all of them on this process, and
    `step_last` on the step's last batch: a loss normalised by the step's tokens (SFT) is then the
    same however the step's examples are split into batches and processes (TRL's num_items_in_batch).
    `iterations`: how many optimizer steps each step's batches go into, one after the other (GRPO's
    num_iterations: the same rollouts, several updates). Batches that are not tokens yet (GRPO's
    questions, `token_batches` false) get `step` instead: which step of batches they are, counted
    over the run and the same for a step's repeats (GRPO's rollout step). `trainer` is set by the
    DataModule.
    """

    trainer: pl.Trainer | None = None
    token_batches = True
    iterations = 1
    _skip = 0
    _epoch_start_step = 0

    def __len__(self) -> int:
        return super().__len__() * self.iterations

    def __iter__(self):
        batches = super().__iter__()
        accumulate = self.trainer.accumulate_grad_batches if self.trainer is not None else 1

        def steps():
            for number in itertools.count(self._epoch_start_step // self.iterations):
                step = list(itertools.islice(batches, accumulate))
                if not step:
                    return
                for _ in range(self.iterations):
                    yield from step if self.token_batches else ({**batch, "step": number} for batch in step)

        def resumed():
            skip, self._skip = self._skip, 0
            if not skip and self.trainer is not None:
                self._epoch_start_step = self.trainer.global_step
            rest = itertools.islice(steps(), skip, None)
            if not self.token_batches:
                yield from rest
                return
            while step := list(itertools.islice(rest, accumulate)):
                tokens = sum(labeled_tokens(batch["labels"]) for batch in step)
                for i, batch in enumerate(step):
                    yield {**batch, "step_tokens": torch.tensor(tokens), "step_last": i == len(step) - 1}

        return resumed()

    def state_dict(self) -> dict[str, int]:
        if self.trainer is None:
            return {"epoch_start_step": 0, "batches_done": 0}
        steps = self.trainer.global_step - self._epoch_start_step
        return {"epoch_start_step": self._epoch_start_step,
                "batches_done": steps * self.trainer.accumulate_grad_batches}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state["batches_done"] < len(self):  # saved mid-epoch; a finished epoch starts the next afresh
            self._epoch_start_step = state["epoch_start_step"]
            self._skip = state["batches_done"]


def labeled_tokens(labels: torch.Tensor) -> int:
    """The tokens a batch trains: those whose label (the next token's) is not masked."""
    return int((labels[:, 1:] != IGNORE_INDEX).sum())


class ResumableDataModule(pl.LightningDataModule):
    """A data module whose training loader resumes mid-epoch (ResumableLoader): Lightning keeps the
    loader's state in checkpoints. `iterations`: optimizer steps per step's batches (set by the
    training run from the objective: GRPO's num_iterations)."""

    iterations = 1

    def __init__(self):
        super().__init__()
        self.train_loader: ResumableLoader | None = None
        self._loader_state: dict[str, int] | None = None

    # (The loader's own state is not restored when configure_optimizers has already asked for
    # estimated_stepping_batches, which builds the loader before the checkpoint is loaded.)
    def state_dict(self) -> dict:
        return {"train_loader": self.train_loader.state_dict()} if self.train_loader is not None else {}

    def load_state_dict(self, state: dict) -> None:
        self._loader_state = state.get("train_loader")
        if self.train_loader is not None and self._loader_state is not None:
            self.train_loader.load_state_dict(self._loader_state)

    def _replicas(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    def resumable_loader(self, dataset, sampler, collate, batch_size: int, num_workers: int,
                         token_batches: bool = True) -> ResumableLoader:
        """The training loader over `dataset` in `sampler`'s order, its state restored if a
        checkpoint gave one."""
        loader = ResumableLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate,
                                 num_workers=num_workers)
        loader.trainer = getattr(self, "trainer", None)
        loader.token_batches = token_batches
        loader.iterations = self.iterations
        if self._loader_state is not None:
            loader.load_state_dict(self._loader_state)
        self.train_loader = loader
        return loader


class TrajectoryDataModule(ResumableDataModule):
    """Tokenized, masked trajectories with a seeded validation split and length-grouped batches.

    path: the training input (module doc). format: the prompt format trained in, a
        fireact.formats format (conf/format/).
    tokenizer: the model's tokenizer; context_length: the model's context (max positions).
    batch_size: examples per device per step. max_length: tokens per example (null: the
        model's context). too_long: "truncate" (cut, counted in `stats`) or "error".
    train_on_observations: also put the loss on tool observations (default: agent tokens only).
    val_fraction: share of examples held out for validation (seeded by `seed`).
    limit: use only the first `limit` trajectories of the file.
    per_question: keep at most this many distinct trajectories per question (null: all); for
        sampled successes (rejection-sampling fine-tuning), fireact.data.pairs.
    group_by_length: batch examples of similar length (less padding) instead of plain shuffling.
    """

    gives = "trajectories"  # what an objective's `trains_on` must be (fireact.train.objectives)

    def __init__(
        self,
        path: str,
        format,
        tokenizer,
        context_length: int | None = None,
        batch_size: int = 4,
        max_length: int | None = None,
        too_long: str = "truncate",
        train_on_observations: bool = False,
        val_fraction: float = 0.1,
        limit: int | None = None,
        per_question: int | None = None,
        group_by_length: bool = True,
        seed: int = 0,
        num_workers: int = 0,
    ):
        super().__init__()
        if too_long not in ("truncate", "error"):
            raise ValueError(f"data.too_long must be 'truncate' or 'error', got {too_long!r}")
        if not 0 <= val_fraction < 1:
            raise ValueError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be at least 1, got {batch_size}")
        if max_length is None:
            max_length = context_length
        elif context_length is not None and max_length > context_length:
            raise ValueError(
                f"data.max_length={max_length} is longer than the model's context ({context_length} tokens); "
                f"set data.max_length to at most {context_length}"
            )
        self.path = path
        # The training run's MLflow dataset: its name and where it was read from.
        self.dataset_name, self.dataset_source = Path(str(path)).name, str(path)
        self.format = format
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.too_long = too_long
        self.train_on_observations = train_on_observations
        self.val_fraction = val_fraction
        self.limit = limit
        self.per_question = per_question
        self.batch_size = batch_size
        self.group_by_length = group_by_length
        self.seed = seed
        self.num_workers = num_workers
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "right"
        self.collate = DataCollatorForSeq2Seq(tokenizer, padding="longest", label_pad_token_id=IGNORE_INDEX)
        self.train_set: list[dict] | None = None
        self.trajectories: list[Trajectory] = []  # what setup read, after per_question and limit
        self.val_set: list[dict] = []
        self.stats: dict[str, int] = {}

    # --- preparing ------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        """Read, tokenize, mask, split. Idempotent; raises before training on unusable data."""
        if self.train_set is not None:
            return
        trajectories = load_trajectories(self.path)
        if self.per_question is not None:
            trajectories = distinct_per_question(trajectories, self.per_question)
        trajectories = trajectories[: self.limit]
        self.trajectories = trajectories
        examples = [self.encode(t) for t in trajectories]
        truncated = [t.qid for t, e in zip(trajectories, examples) if e.truncated]
        if truncated and self.too_long == "error":
            raise ValueError(
                f"{len(truncated)} of {len(examples)} trajectories in {self.path} are longer than "
                f"data.max_length={self.max_length} tokens (first: qid {truncated[0]}); raise data.max_length "
                f"or set data.too_long=truncate to cut them"
            )
        usable = [e for e in examples if e.trainable_tokens > 0]
        if not usable:
            raise ValueError(
                f"no trainable tokens in {self.path} after masking: all {len(examples)} trajectories have "
                f"no agent tokens (thought/action) within data.max_length={self.max_length} "
                f"({len(truncated)} were truncated); check the file has agent steps, raise data.max_length, "
                f"or set data.train_on_observations=true"
            )
        order = torch.randperm(len(usable), generator=torch.Generator().manual_seed(self.seed)).tolist()
        n_val = round(len(usable) * self.val_fraction) if len(usable) > 1 else 0
        records = [{"input_ids": e.input_ids, "labels": e.labels} for e in usable]
        self.val_set = [records[i] for i in order[:n_val]]
        self.train_set = [records[i] for i in sorted(order[n_val:])]
        self.stats = {
            "trajectories": len(trajectories),
            "truncated": len(truncated),
            "dropped_no_trainable_tokens": len(examples) - len(usable),
            "train_examples": len(self.train_set),
            "val_examples": len(self.val_set),
            "train_tokens": sum(len(r["input_ids"]) for r in self.train_set),
            "train_trainable_tokens": sum(sum(x != IGNORE_INDEX for x in r["labels"]) for r in self.train_set),
        }
        if truncated:
            log.warning("%d trajectories were longer than %d tokens and were truncated", len(truncated), self.max_length)
        log.info("training data: %s", self.stats)

    def table(self) -> pd.DataFrame:
        """What the model trains on, a row a trajectory read (before masking and the validation
        split): logged as the training run's MLflow dataset."""
        return pd.DataFrame([{"task": t.task, "method": t.method, "qid": t.qid, "question": t.question,
                              "trajectory": t.react_text()} for t in self.trajectories])

    def record_length(self, record: dict) -> int:
        """What length-grouped batching sorts by."""
        return len(record["input_ids"])

    def encode(self, trajectory: Trajectory) -> Example:
        """A trajectory a local engine sampled in this format: the ids it sampled (fireact.agents.rollout),
        trained where the policy sampled them. Any other (an API's, another format's, a released
        file's): rendered in this format and tokenized, trained on its agent segments."""
        segments = self.format.segments(trajectory, self.tokenizer)
        trace = trajectory.tokens
        # The trace's own prompt must be this format's, in this tokenizer: then it was sampled here.
        if (trace is not None and trace.format == self.format.name and not self.train_on_observations
                and trace.ids[: len(segments[0].ids)] == segments[0].ids):
            return sampled_example(trace, self.max_length)
        return build_example(segments, self.train_on_observations, self.max_length)

    # --- loading --------------------------------------------------------------------
    def train_dataloader(self) -> ResumableLoader:
        self.setup("fit")
        world, rank = self._replicas()
        # A DistributedSampler subclass is left alone by Lightning, so length grouping
        # survives multi-process training; with one process it is a seeded shuffle.
        if self.group_by_length:
            # Grouped by the examples of one optimizer step, over all processes and accumulated
            # batches: every split of a step (processes x accumulation) then trains the same examples.
            accumulate = self.trainer.accumulate_grad_batches if getattr(self, "trainer", None) is not None else 1
            lengths = [self.record_length(r) for r in self.train_set]
            sampler = DistributedLengthGroupedSampler(
                self.batch_size * world * accumulate, lengths=lengths, num_replicas=world, rank=rank, seed=self.seed
            )
        else:
            sampler = DistributedSampler(self.train_set, num_replicas=world, rank=rank, shuffle=True, seed=self.seed)
        return self.resumable_loader(self.train_set, sampler, self.collate, self.batch_size, self.num_workers)

    def val_dataloader(self) -> DataLoader | list:
        self.setup("fit")
        if not self.val_set:
            return []
        world, rank = self._replicas()
        sampler = DistributedSampler(self.val_set, num_replicas=world, rank=rank, shuffle=False)
        return DataLoader(
            self.val_set, batch_size=self.batch_size, sampler=sampler,
            collate_fn=self.collate, num_workers=self.num_workers,
        )
