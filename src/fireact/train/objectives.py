"""What a training step minimises, over the agent's own tokens (conf/objective/*.yaml).

Every objective reads labels masked as in SFT (fireact.train.templates): the prompt and the
tool observations carry IGNORE_INDEX, so only thoughts and actions are scored or trained.

- `SFT`: next-token cross-entropy on the labeled tokens.
- `DPO` (Rafailov et al. 2023, TRL's "sigmoid" loss; label smoothing is cDPO): on pairs of
  trajectories for the same question and prompt, chosen = a success, rejected = a failure,
  -log σ(β [(log π(c) - log π_ref(c)) - (log π(r) - log π_ref(r))]), each log-probability the
  sum over the trajectory's labeled tokens. The reference is the model as training starts:
  for LoRA and QLoRA the same weights with the adapter switched off (no second copy in
  memory), for full fine-tuning a frozen copy.

An objective is called with the model and a batch and returns (loss, metrics); a preference
batch holds the chosen rows first, then the rejected rows in the same order
(fireact.train.preference_data).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from fireact.train.templates import IGNORE_INDEX


class SFT(nn.Module):
    name = "sft"
    needs_pairs = False

    def attach(self, model: nn.Module) -> None:
        """Nothing to keep of the starting model."""

    def forward(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return labeled_loss(model, batch), {}


class DPO(nn.Module):
    """beta: how far the policy may move from the reference (TRL's default 0.1).
    label_smoothing: the assumed share of pairs whose preference is wrong (0: plain DPO)."""

    name = "dpo"
    needs_pairs = True

    def __init__(self, beta: float = 0.1, label_smoothing: float = 0.0):
        super().__init__()
        if beta <= 0:
            raise ValueError(f"objective.beta must be positive, got {beta}")
        if not 0 <= label_smoothing < 0.5:
            raise ValueError(f"objective.label_smoothing must be in [0, 0.5), got {label_smoothing}")
        self.beta, self.label_smoothing = beta, label_smoothing
        self.reference: nn.Module | None = None  # a frozen copy (full fine-tuning) or None (an adapter)

    def attach(self, model: nn.Module) -> None:
        """Keep the starting model as the reference: the adapter switched off, or a frozen copy."""
        if not hasattr(model, "disable_adapter"):
            self.reference = copy.deepcopy(model).eval().requires_grad_(False)

    def reference_logps(self, model: nn.Module, batch: dict) -> torch.Tensor:
        with torch.no_grad():
            if self.reference is not None:
                return sequence_logps(self.reference, batch)
            with model.disable_adapter():
                return sequence_logps(model, batch)

    def forward(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        policy = sequence_logps(model, batch)
        reference = self.reference_logps(model, batch)
        pairs = policy.shape[0] // 2
        loss, chosen_rewards, rejected_rewards = dpo_loss(
            policy[:pairs], policy[pairs:], reference[:pairs], reference[pairs:], self.beta, self.label_smoothing
        )
        metrics = {
            "reward_accuracy": (chosen_rewards > rejected_rewards).float().mean(),
            "reward_margin": (chosen_rewards - rejected_rewards).mean(),
            "chosen_reward": chosen_rewards.mean(),
            "rejected_reward": rejected_rewards.mean(),
        }
        return loss, metrics


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor,
    reference_rejected: torch.Tensor,
    beta: float,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The mean DPO loss over pairs, and each pair's implicit rewards β (log π - log π_ref)."""
    chosen_rewards = beta * (policy_chosen - reference_chosen)
    rejected_rewards = beta * (policy_rejected - reference_rejected)
    margin = chosen_rewards - rejected_rewards
    losses = -(1 - label_smoothing) * F.logsigmoid(margin) - label_smoothing * F.logsigmoid(-margin)
    return losses.mean(), chosen_rewards.detach(), rejected_rewards.detach()




def labeled_logits(model: nn.Module, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The logits at the positions whose next label is not IGNORE_INDEX, [labeled, vocab]; those
    labels; and the [rows, length - 1] mask of where they are.

    Trained trajectories mask the prompt and the tool observations, so over half the positions
    carry no label, yet the model's own forward takes float32 logits over the whole vocabulary
    (49,152 for SmolLM2; the projection is a fifth of its forward multiply-adds) at every
    position: ~0.4 GB of peak memory for a LoRA batch of 4 x 316 tokens. A forward pre-hook on
    the output embedding hands it only the labeled positions' hidden states, so whatever the
    model applies after it (soft-capping, scaling) still applies. Models without an output
    embedding get their full logits, then the labeled positions are picked.
    """
    labels = batch["labels"]
    targets = labels[:, 1:]
    keep = targets != IGNORE_INDEX
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None:
        return model(**inputs).logits[:, :-1][keep], targets[keep], keep

    def labeled_positions(module, args):
        hidden = args[0]
        if hidden.shape[:2] != labels.shape:
            raise RuntimeError(f"the output embedding got hidden states of shape {tuple(hidden.shape)} for labels "
                               f"of shape {tuple(labels.shape)}; this model cannot use labeled_logits")
        return (hidden[:, :-1][keep].unsqueeze(0), *args[1:])

    handle = head.register_forward_pre_hook(labeled_positions)
    try:
        logits = model(**inputs).logits[0]
    finally:
        handle.remove()
    return logits, targets[keep], keep


def labeled_loss(model: nn.Module, batch: dict) -> torch.Tensor:
    """The causal LM loss of `model(**batch).loss` (mean next-token cross-entropy over the labeled
    positions), equal to it up to float rounding, with the vocabulary projection run only there."""
    logits, targets, _ = labeled_logits(model, batch)
    return F.cross_entropy(logits.float(), targets)


def sequence_logps(model: nn.Module, batch: dict) -> torch.Tensor:
    """Each row's log-probability of its labeled tokens (their sum), [rows]."""
    logits, targets, keep = labeled_logits(model, batch)
    token_logps = -F.cross_entropy(logits.float(), targets, reduction="none")
    rows = keep.nonzero()[:, 0]
    return token_logps.new_zeros(keep.shape[0]).index_add(0, rows, token_logps)
