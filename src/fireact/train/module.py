"""The LightningModule: a transformers causal LM (plain, LoRA or QLoRA) trained on masked labels."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from transformers import get_scheduler

from fireact.logs import route_transformers
from fireact.train.templates import IGNORE_INDEX

route_transformers()


class CausalLMModule(pl.LightningModule):
    """Trains `model` with AdamW on its trainable parameters and a warmup + decay schedule.

    Checkpoints hold only the trainable weights (the adapter for LoRA), so a checkpoint of a
    7B LoRA run is megabytes, not the whole base model; the frozen base comes from
    `model.path` again on resume.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        lr: float = 2e-4,
        weight_decay: float = 0.0,
        warmup_ratio: float = 0.03,
        scheduler: str = "cosine",
    ):
        super().__init__()
        self.model = model
        self.lr = lr
        self.weight_decay = weight_decay
        self.warmup_ratio = warmup_ratio
        self.scheduler = scheduler
        self.strict_loading = False  # frozen weights are not in the checkpoint (on_save_checkpoint)
        self.save_hyperparameters(ignore=["model"])
        # For the end-of-run summary (this process's share; the logger has the full curves).
        self.losses: list[float] = []
        self.examples_seen = 0
        self.tokens_seen = 0

    def forward(self, **batch):
        return self.model(**batch)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = labeled_loss(self.model, batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["input_ids"].size(0))
        self.losses.append(loss.item())
        self.examples_seen += batch_examples(batch)
        self.tokens_seen += batch_tokens(batch)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        loss = labeled_loss(self.model, batch)
        self.log("val/loss", loss, prog_bar=True, sync_dist=True, batch_size=batch["input_ids"].size(0))

    def configure_optimizers(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        total = self.trainer.estimated_stepping_batches
        schedule = get_scheduler(
            self.scheduler, optimizer, num_warmup_steps=int(self.warmup_ratio * total), num_training_steps=total
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    # --- checkpoints hold the trainable weights only --------------------------------------
    def _trainable_names(self) -> set[str]:
        return {name for name, p in self.named_parameters() if p.requires_grad}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        trainable = self._trainable_names()
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        trainable = self._trainable_names()
        saved = set(checkpoint["state_dict"])
        if saved != trainable:
            raise ValueError(
                f"the checkpoint's weights do not match this run's trainable weights "
                f"({len(saved - trainable)} unexpected, {len(trainable - saved)} missing, e.g. "
                f"{sorted((saved ^ trainable))[:3]}); resume with the same model.path and finetune settings"
            )


def labeled_loss(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    """The causal LM loss of `model(**batch).loss` (mean next-token cross-entropy over the
    positions whose next label is not IGNORE_INDEX), with the vocabulary projection run only
    at those positions.

    Trained trajectories mask the prompt and the tool observations, so over half the positions
    carry no label, yet the model's own loss takes float32 logits over the whole vocabulary
    (49,152 for SmolLM2; the projection is a fifth of its forward multiply-adds) at every
    position, with their log-softmax and gradient: ~0.4 GB of peak memory for a LoRA batch of
    4 x 316 tokens. A forward pre-hook on the output embedding hands it only the labeled
    positions' hidden states, so whatever the model applies after it (soft-capping, scaling)
    still applies; loss and gradients equal the model's own up to float rounding. Models
    without an output embedding get their own loss.
    """
    labels = batch.get("labels")
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if labels is None or head is None:
        return model(**batch).loss
    targets = labels[:, 1:]
    keep = targets != IGNORE_INDEX

    def labeled_positions(module, args):
        hidden = args[0]
        if hidden.shape[:2] != labels.shape:
            raise RuntimeError(f"the output embedding got hidden states of shape {tuple(hidden.shape)} for labels "
                               f"of shape {tuple(labels.shape)}; this model cannot use labeled_loss")
        return (hidden[:, :-1][keep].unsqueeze(0), *args[1:])

    handle = head.register_forward_pre_hook(labeled_positions)
    try:
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    finally:
        handle.remove()
    return F.cross_entropy(logits[0].float(), targets[keep])


def batch_examples(batch: dict) -> int:
    """Examples in a batch (for Lightning's ThroughputMonitor: examples/s)."""
    return batch["input_ids"].size(0)


def batch_tokens(batch: dict) -> int:
    """Non-padding tokens in a batch (for Lightning's ThroughputMonitor: tokens/s)."""
    return int(batch["attention_mask"].sum())
