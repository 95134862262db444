"""The LightningModule: a transformers causal LM (plain, LoRA or QLoRA) trained on masked labels
with an objective (fireact.train.objectives: SFT by default, DPO on preference pairs, GRPO on
the policy's own rollouts of the batch's questions)."""

from __future__ import annotations

from collections.abc import Callable

import pytorch_lightning as pl
import torch
from transformers import get_scheduler

from fireact import threads
from fireact.logs import route_transformers
from fireact.train.objectives import SFT, Objective
from fireact.train.strategies import shard_layers

route_transformers()


class CausalLMModule(pl.LightningModule):
    """Trains `model`'s trainable parameters with `optimizer` (a partial: called with them) and a
    learning rate that warms up linearly over `warmup_ratio` of the steps, then follows the
    transformers schedule `lr_schedule` (cosine, linear, constant_with_warmup, ...).

    Checkpoints hold only the trainable weights (the adapter for LoRA), so a checkpoint of a
    7B LoRA run is megabytes, not the whole base model; the frozen base comes from
    `model.path` again on resume; so does DPO's reference, which is the model as loaded.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        optimizer: Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer],
        lr_schedule: str,
        warmup_ratio: float,
        objective: Objective | None = None,
        tokenizer=None,
    ):
        super().__init__()
        self.model = model
        self.objective = objective if objective is not None else SFT()
        self.objective.attach(model, tokenizer)
        self.make_optimizer = optimizer
        self.lr_schedule = lr_schedule
        self.warmup_ratio = warmup_ratio
        self.strict_loading = False  # frozen weights are not in the checkpoint (on_save_checkpoint)
        self.save_hyperparameters(ignore=["model", "objective", "tokenizer", "optimizer"])
        # For the end-of-run summary (this process's share; the logger has the full curves).
        self.losses: list[float] = []
        self.metrics: list[dict[str, float]] = []  # the objective's own, per step (DPO: reward accuracy, margin)
        self.examples_seen = 0
        self.tokens_seen = 0
        self._step_loss = 0.0  # this process's share of the current optimizer step's loss so far

    def forward(self, **batch):
        return self.model(**batch)

    def configure_model(self) -> None:
        """Under trainer=fsdp (a device mesh), shard the model over the data-parallel processes."""
        from torch.distributed.fsdp import FSDPModule

        if self.device_mesh is not None and not isinstance(self.model, FSDPModule):  # not sharded yet
            shard_layers(self.model, self.device_mesh["data_parallel"])

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor | None:
        """The objective's loss; None (the step skipped, the weights and optimizer state untouched)
        when the objective finds nothing to learn from the batch (GRPO: every group's rewards equal).

        An objective that sums over the optimizer step (SFT) gets the step's labeled tokens over
        all processes (`step_tokens`) and returns this batch's share of the step's loss. The
        strategies average gradients over processes and Lightning (or DeepSpeed) divides by the
        accumulated batches, so the share is scaled back by both: the step's gradient is then
        that of one batch holding all its examples. The step's loss is logged once, at its last batch.
        """
        # In place, so that the callbacks (throughput) count the rows trained: GRPO's batch of
        # questions becomes the token rows of their rollouts.
        batch.update(self.objective.rows(self.model, batch))
        step_tokens, step_last = batch.pop("step_tokens", None), batch.pop("step_last", True)
        over_step = step_tokens is not None and self.objective.sums_over_step
        if over_step:
            batch["step_tokens"] = self.trainer.strategy.reduce(step_tokens, reduce_op="sum")
        loss, metrics = self.objective(self.model, batch)
        batch.pop("step_tokens", None)
        size = batch["input_ids"].size(0)
        for name, value in metrics.items():
            self.log(f"train/{name}", value, batch_size=size)
        self.metrics.append({name: value.item() for name, value in metrics.items()})
        self.examples_seen += batch_examples(batch)
        self.tokens_seen += batch_tokens(batch)
        if loss is None:
            if self.trainer.world_size > 1:  # every process must take part in the gradient all-reduce
                return sum(0.0 * p.sum() for p in self.model.parameters() if p.requires_grad)
            return None
        if not over_step:
            self.log("train/loss", loss, prog_bar=True, batch_size=size)
            self.losses.append(loss.item())
            return loss
        self._step_loss = self._step_loss + loss.detach()
        if step_last:
            step_loss = self.trainer.strategy.reduce(self._step_loss, reduce_op="sum")
            self._step_loss = 0.0
            self.log("train/loss", step_loss, prog_bar=True, batch_size=size)
            self.losses.append(step_loss.item())
        return loss * self.trainer.world_size * self.trainer.accumulate_grad_batches

    def on_train_batch_start(self, batch: dict, batch_idx: int) -> None:
        threads.refresh()  # cores given back or taken as our other processes start and end

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        loss, metrics = self.objective(self.model, self.objective.rows(self.model, batch))
        size = batch["input_ids"].size(0)
        self.log("val/loss", loss, prog_bar=True, sync_dist=True, batch_size=size)
        for name, value in metrics.items():
            self.log(f"val/{name}", value, sync_dist=True, batch_size=size)

    def teardown(self, stage: str) -> None:
        self.objective.close()  # GRPO: its rollout engine and tool

    def configure_optimizers(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = self.make_optimizer(params)
        total = self.trainer.estimated_stepping_batches
        schedule = get_scheduler(
            self.lr_schedule, optimizer, num_warmup_steps=int(self.warmup_ratio * total), num_training_steps=total
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    # --- checkpoints hold the trainable weights only --------------------------------------
    def _trainable_names(self) -> set[str]:
        return {name for name, p in self.named_parameters() if p.requires_grad}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        trainable = self._trainable_names()
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "state_dict" not in checkpoint:  # the strategy loaded the weights itself (FSDP2, DeepSpeed)
            return
        trainable = self._trainable_names()
        saved = set(checkpoint["state_dict"])
        if saved != trainable:
            raise ValueError(
                f"the checkpoint's weights do not match this run's trainable weights "
                f"({len(saved - trainable)} unexpected, {len(trainable - saved)} missing, e.g. "
                f"{sorted((saved ^ trainable))[:3]}); resume with the same model.path and finetune settings"
            )


def batch_examples(batch: dict) -> int:
    """Examples in a batch (for Lightning's ThroughputMonitor: examples/s)."""
    return batch["input_ids"].size(0)


def batch_tokens(batch: dict) -> int:
    """Non-padding tokens in a batch (for Lightning's ThroughputMonitor: tokens/s)."""
    return int(batch["attention_mask"].sum())
