"""What a training step minimises, over the agent's own tokens (conf/objective/*.yaml).

Every objective reads labels masked as in SFT (fireact.train.examples): the prompt and the
tool observations carry IGNORE_INDEX, so only thoughts and actions are scored or trained.

- `SFT`: next-token cross-entropy on the labeled tokens.
- `DPO` (Rafailov et al. 2023, TRL's "sigmoid" loss; label smoothing is cDPO): on pairs of
  trajectories for the same question and prompt, chosen = a success, rejected = a failure,
  -log σ(β [(log π(c) - log π_ref(c)) - (log π(r) - log π_ref(r))]), each log-probability the
  sum over the trajectory's labeled tokens. The reference is the model as training starts:
  for LoRA and QLoRA the same weights with the adapter switched off (no second copy in
  memory), for full fine-tuning a frozen copy.
- `GRPO` (Shao et al. 2024, DeepSeekMath; multi-turn with the tool in the loop as in Search-R1):
  its batches are questions (fireact.train.question_data). It is given a rollout function and a
  reward function (fireact.train.policy_rollout): for each question the policy being trained
  samples `group_size` trajectories, token in, token out, and each is rewarded. A trajectory's
  advantage is its reward minus its group's mean (divided by the group's std with
  `scale_rewards`), and the loss is PPO's clipped surrogate over the token ids the policy sampled,
  the ratio taken against the log-probabilities they were drawn with, plus `beta` times the k3
  estimate of the KL to the reference. With `num_iterations` above 1 the same rollouts make that
  many updates, one after the other, and the clip binds. `loss_type` says how token losses become
  the loss, with TRL's names: "grpo" (each trajectory's token mean, then the mean over
  trajectories), "dapo" (the sum over the batch's sampled tokens over their count) and "dr_grpo"
  (the sum over trajectories x max_length, a constant).

Each objective names the data it trains on (`trains_on`), matched against the data module's
`gives`: "trajectories" (SFT), "pairs" (DPO), "questions" (GRPO).

An objective turns a batch into the token rows it trains on (`rows`: the batch itself, or GRPO's
rollouts of the batch's questions), and is called with the model and those rows to return (loss,
metrics); a preference batch holds the chosen rows first, then the rejected rows in the same order
(fireact.train.preference_data).
"""

from __future__ import annotations

import copy
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from fireact.tasks.base import Question
from fireact.train.examples import IGNORE_INDEX, sampled_example
from fireact.trajectory import Trajectory


class Reference(nn.Module):
    """The model as training starts, to score against: for an adapter (LoRA, QLoRA) the same
    weights with the adapter switched off, for full fine-tuning a frozen copy."""

    def __init__(self):
        super().__init__()
        self.copy: nn.Module | None = None

    def attach(self, model: nn.Module) -> None:
        if not hasattr(model, "disable_adapter"):
            self.copy = copy.deepcopy(model).eval().requires_grad_(False)

    def forward(self, score, model: nn.Module, batch: dict) -> torch.Tensor:
        """score(reference model, batch), without gradients."""
        with torch.no_grad():
            if self.copy is not None:
                return score(self.copy, batch)
            with model.disable_adapter():
                return score(model, batch)


def disable_dropout(model: nn.Module) -> None:
    """Dropout off in every layer (LoRA's too), as TRL does for DPO and GRPO: the policy's
    log-probabilities are compared with the reference's and the sampling-time ones, and dropout
    noise in one side only would count as a change of policy."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
        if isinstance(getattr(module, "attention_dropout", None), float):  # transformers' attention layers
            module.attention_dropout = 0.0


class Objective(nn.Module):
    """What every objective has: `attach` keeps what it needs of the starting model and its
    tokenizer; `rows` turns a batch into the token rows it trains on; `close` releases what it holds."""

    def attach(self, model: nn.Module, tokenizer=None) -> None:
        """Nothing to keep of the starting model."""

    def rows(self, model: nn.Module, batch: dict) -> dict:
        """The batch's token rows: the batch itself."""
        return batch

    def close(self) -> None:
        """Nothing to release."""


class SFT(Objective):
    """The mean cross-entropy over the labeled tokens of a whole optimizer step: a batch that comes
    with its step's token count (`step_tokens`, all processes and accumulated batches) returns its
    share, the sum of its tokens' losses over that count; a batch without (validation) its own mean."""

    name = "sft"
    trains_on = "trajectories"
    sums_over_step = True

    def forward(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        step_tokens = batch.get("step_tokens")
        if step_tokens is None:
            return labeled_loss(model, batch), {}
        batch = {k: v for k, v in batch.items() if k != "step_tokens"}
        return labeled_loss(model, batch, reduction="sum") / step_tokens, {}


class DPO(Objective):
    """beta: how far the policy may move from the reference (TRL's default 0.1).
    label_smoothing: the assumed share of pairs whose preference is wrong (0: plain DPO)."""

    name = "dpo"
    trains_on = "pairs"
    sums_over_step = False  # a mean over the batch's pairs

    def __init__(self, beta: float = 0.1, label_smoothing: float = 0.0):
        super().__init__()
        if beta <= 0:
            raise ValueError(f"objective.beta must be positive, got {beta}")
        if not 0 <= label_smoothing < 0.5:
            raise ValueError(f"objective.label_smoothing must be in [0, 0.5), got {label_smoothing}")
        self.beta, self.label_smoothing = beta, label_smoothing
        self.reference = Reference()

    def attach(self, model: nn.Module, tokenizer=None) -> None:
        disable_dropout(model)
        self.reference.attach(model)

    def forward(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        policy = sequence_logps(model, batch)
        reference = self.reference(sequence_logps, model, batch)
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


LOSS_TYPES = ("grpo", "dapo", "dr_grpo")


class GRPO(Objective):
    """rollout: the rollout function, (model, questions, sample numbers, rollout step) -> one
    Trajectory each with its token trace (fireact.train.policy_rollout.PolicyRollout); its
    `temperature` is the one log-probabilities are taken under, as the tokens were drawn.
    reward: the reward function, Trajectory -> float (fireact.train.policy_rollout.TaskReward).
    group_size: trajectories per question (GRPO's G, at least 2). num_iterations: optimizer steps
    on each step's rollouts (TRL's num_iterations; the data's loader yields a step's questions that
    many times). clip: PPO's ε, the ratio's allowed move per update. beta: weight of the KL to the
    reference (0, TRL's default: no reference kept). scale_rewards: divide advantages by the
    group's reward std (false: Dr. GRPO's unscaled advantages). loss_type: grpo | dapo | dr_grpo
    (module doc). max_length: tokens kept of each trajectory (null: the model's context), and
    dr_grpo's constant."""

    name = "grpo"
    trains_on = "questions"
    sums_over_step = False  # normalised over the batch's trajectories

    def __init__(self, rollout: Callable[..., list[Trajectory]], reward: Callable[[Trajectory], float],
                 group_size: int = 4, num_iterations: int = 1, clip: float = 0.2, beta: float = 0.0,
                 scale_rewards: bool = True, loss_type: str = "grpo", max_length: int | None = None):
        super().__init__()
        if group_size < 2:
            raise ValueError(f"objective.group_size={group_size}: GRPO compares trajectories within a group, "
                             f"so it needs at least 2")
        if not isinstance(num_iterations, int) or num_iterations < 1:
            raise ValueError(f"objective.num_iterations={num_iterations!r}: the optimizer steps on each step's "
                             f"rollouts, an integer >= 1 (1: one update per sampled batch)")
        if loss_type not in LOSS_TYPES:
            raise ValueError(f"objective.loss_type={loss_type!r}: choose one of {list(LOSS_TYPES)}")
        if not 0 < clip < 1:
            raise ValueError(f"objective.clip must be in (0, 1), got {clip}")
        if beta < 0:
            raise ValueError(f"objective.beta must be 0 (no KL term) or positive, got {beta}")
        self.rollout, self.reward = rollout, reward
        self.group_size, self.num_iterations = group_size, num_iterations
        self.clip, self.beta, self.scale_rewards = clip, beta, scale_rewards
        self.loss_type, self.max_length = loss_type, max_length
        self.temperature = getattr(rollout, "temperature", 1.0)
        self.pad_id = 0
        self.reference = Reference()
        self.rolled: dict[tuple, dict] = {}  # the current rollout step's rows, by their questions

    def attach(self, model: nn.Module, tokenizer=None) -> None:
        """Dropout off; the reference kept (beta > 0); max_length checked against the model's
        context; the tokenizer to the rollout function (its rollouts are the model's ids)."""
        context = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        if self.max_length is None:
            self.max_length = context
        elif context is not None and self.max_length > context:
            raise ValueError(f"objective.max_length={self.max_length} is longer than the model's context "
                             f"({context} tokens); set objective.max_length to at most {context}")
        if self.loss_type == "dr_grpo" and not self.max_length:
            raise ValueError("objective.loss_type=dr_grpo divides by trajectories x max_length; set objective.max_length")
        disable_dropout(model)
        if self.beta > 0:  # without a KL term nothing is scored against the reference
            self.reference.attach(model)
        if tokenizer is not None:
            if hasattr(self.rollout, "attach"):
                self.rollout.attach(tokenizer)
            self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def rows(self, model: nn.Module, batch: dict) -> dict:
        """A batch of questions ({"questions", "step": the rollout step}) in, the policy's rewarded
        trajectories out as token rows; the same rows again for the step's later iterations (and
        for every batch of the step's, under gradient accumulation). A batch that is rows already
        (input_ids, labels, old_logps, rewards, groups, rollout: scored elsewhere) trains as it is."""
        if "questions" not in batch:
            return batch
        step, questions = batch["step"], batch["questions"]
        key = (step, tuple(q.qid for q in questions))
        if key not in self.rolled:
            if any(known[0] != step for known in self.rolled):
                self.rolled = {}
            self.rolled[key] = self.roll(model, questions, step)
        device = next(model.parameters()).device
        return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in self.rolled[key].items()}

    def roll(self, model: nn.Module, batch: list[Question], step: int) -> dict:
        """The rollout step's trajectories for the questions, rewarded, as token rows: the ids the
        policy saw and sampled, labeled only where it sampled them, with each sampled id's
        log-probability as it was drawn (`old_logps`)."""
        questions = [q for q in batch for _ in range(self.group_size)]
        samples = [step * self.group_size + g for _ in batch for g in range(self.group_size)]
        started = time.perf_counter()
        trajectories = self.rollout(model, questions, samples, step)
        seconds = time.perf_counter() - started
        if any(t.tokens is None for t in trajectories):
            raise ValueError("the rollout function returned trajectories without token traces (a rollouts.jsonl "
                             "written before rollouts kept their tokens?); GRPO trains on the ids that were sampled")
        rewards = [float(self.reward(t)) for t in trajectories]
        examples = [sampled_example(t.tokens, self.max_length) for t in trajectories]
        ids = [torch.tensor(e.input_ids) for e in examples]
        rows = {
            "input_ids": pad_sequence(ids, batch_first=True, padding_value=self.pad_id),
            "attention_mask": pad_sequence([torch.ones_like(i) for i in ids], batch_first=True),
            "labels": pad_sequence([torch.tensor(e.labels) for e in examples], batch_first=True,
                                   padding_value=IGNORE_INDEX),
            "old_logps": pad_sequence([torch.tensor(e.logprobs) for e in examples], batch_first=True),
            "rewards": torch.tensor(rewards, dtype=torch.float32),
            "groups": torch.arange(len(batch)).repeat_interleave(self.group_size),
        }
        n = len(trajectories)
        rows["rollout"] = {
            "reward": sum(rewards) / n,
            "em": sum(t.em for t in trajectories) / n,
            "turns": sum(t.turns for t in trajectories) / n,
            "tool_calls": sum(t.tool_calls for t in trajectories) / n,
            "format_errors": sum(t.format_errors > 0 for t in trajectories) / n,
            "completion_tokens": sum(t.completion_tokens for t in trajectories) / n,
            "truncated": sum(e.truncated for e in examples) / n,
            "rollout_seconds": seconds,
        }
        return rows

    def close(self) -> None:
        self.rolled = {}
        if hasattr(self.rollout, "close"):
            self.rollout.close()

    def token_logps(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        return token_logps(model, batch, self.temperature)

    def forward(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        """Returns loss None when no trajectory has an advantage and there is no KL term: the
        step would change nothing, so it is skipped."""
        advantages = group_advantages(batch["rewards"], batch["groups"], self.scale_rewards)
        metrics = {name: torch.as_tensor(value, dtype=torch.float32) for name, value in batch["rollout"].items()}
        metrics["groups_without_signal"] = _groups_without_signal(batch["rewards"], batch["groups"])
        rows = batch["rewards"].shape[0]
        # Rows with no advantage add nothing to the loss but its denominator: without a KL term
        # they need no forward.
        used = torch.arange(rows, device=advantages.device) if self.beta > 0 else advantages.nonzero()[:, 0]
        if used.numel() == 0:
            return None, metrics
        tensors = {key: batch[key][used] for key in ("input_ids", "attention_mask", "labels")}
        logps, token_rows = self.token_logps(model, tensors)
        sampled = tensors["labels"][:, 1:] != IGNORE_INDEX
        old_logps = batch["old_logps"][used][:, 1:][sampled]  # each token's as it was drawn
        reference = self.reference(self.token_logps, model, tensors)[0] if self.beta > 0 else None
        normaliser = {"grpo": rows, "dapo": int((batch["labels"][:, 1:] != IGNORE_INDEX).sum()),
                      "dr_grpo": rows * (self.max_length or 0)}[self.loss_type]
        loss, token_metrics = grpo_loss(logps, old_logps, advantages[used], token_rows, normaliser, self.clip,
                                        reference, self.beta, per_row_mean=self.loss_type == "grpo")
        return loss, {**metrics, **token_metrics}


def group_advantages(rewards: torch.Tensor, groups: torch.Tensor, scale: bool = True, eps: float = 1e-4) -> torch.Tensor:
    """Each reward minus its group's mean, over its group's std (unbiased, as TRL) + eps when `scale`.

    A group whose rewards are all equal gets advantages of exactly 0, whatever the rewards and the
    group's size: its mean, taken in floating point, need not equal them (three rewards of 0.85 have
    a float32 mean 6e-8 off, which the std + eps would turn into advantages of 6e-4, all one sign).
    A group of one member has no one to be compared with: an error."""
    rewards = rewards.double()
    count = torch.zeros_like(rewards).index_add(0, groups, torch.ones_like(rewards))
    if (count[groups] < 2).any():
        raise ValueError(f"a GRPO group of one trajectory (group sizes {count[count > 0].long().tolist()}): its reward "
                         f"is compared with nobody's, so it has no advantage; sample objective.group_size >= 2 per question")
    low = torch.full_like(rewards, float("inf")).scatter_reduce(0, groups, rewards, "amin")
    high = torch.full_like(rewards, float("-inf")).scatter_reduce(0, groups, rewards, "amax")
    mean = torch.zeros_like(rewards).index_add(0, groups, rewards) / count.clamp(min=1)
    centered = torch.where((low == high)[groups], 0.0, rewards - mean[groups])
    if scale:
        var = torch.zeros_like(rewards).index_add(0, groups, centered**2) / (count - 1).clamp(min=1)
        centered = centered / (var.sqrt()[groups] + eps)
    return centered.float()


def grpo_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    token_rows: torch.Tensor,
    normaliser: int,
    clip: float,
    reference_logps: torch.Tensor | None = None,
    beta: float = 0.0,
    per_row_mean: bool = True,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The GRPO loss from per-token log-probabilities (policy, sampling-time, reference) and
    per-row advantages; token i belongs to row token_rows[i] of the used rows. per_row_mean: each
    used row's token mean, summed (loss_type grpo); else the tokens' sum; over `normaliser`.

    Metrics: clip_fraction, the share of tokens the clip took out of the gradient (ratio below
    1 - clip with a negative advantage, or above 1 + clip with a positive one: only there does
    the min pick the clipped term), and its low and high parts; ratio, the mean importance ratio;
    kl, the mean per-token k3 KL when there is a reference."""
    ratio = torch.exp(logps - old_logps)
    advantage = advantages[token_rows]
    surrogate = torch.minimum(ratio * advantage, ratio.clamp(1 - clip, 1 + clip) * advantage)
    per_token = -surrogate
    metrics = {}
    if reference_logps is not None and beta > 0:
        delta = reference_logps - logps
        token_kl = torch.exp(delta) - delta - 1
        per_token = per_token + beta * token_kl
        metrics["kl"] = token_kl.detach().mean()
    if per_row_mean:
        used = advantages.shape[0]
        tokens = torch.zeros(used, device=logps.device).index_add(0, token_rows, torch.ones_like(logps))
        loss = (torch.zeros(used, device=logps.device).index_add(0, token_rows, per_token) / tokens.clamp(min=1)).sum()
    else:
        loss = per_token.sum()
    ratio = ratio.detach()
    low = ((ratio < 1 - clip) & (advantage < 0)).float()
    high = ((ratio > 1 + clip) & (advantage > 0)).float()
    metrics.update(clip_fraction=(low + high).mean(), clip_low=low.mean(), clip_high=high.mean(), ratio=ratio.mean())
    return loss / normaliser, metrics


def _groups_without_signal(rewards: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """The share of groups whose rewards are all equal (no advantage, nothing learned from them)."""
    equal = [bool((rewards[groups == g] == rewards[groups == g][0]).all()) for g in groups.unique()]
    return torch.tensor(sum(equal) / len(equal))


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


def labeled_loss(model: nn.Module, batch: dict, reduction: str = "mean") -> torch.Tensor:
    """The causal LM loss of `model(**batch).loss` (mean next-token cross-entropy over the labeled
    positions), equal to it up to float rounding, with the vocabulary projection run only there;
    reduction="sum": their sum."""
    logits, targets, _ = labeled_logits(model, batch)
    return F.cross_entropy(logits.float(), targets, reduction=reduction)


def token_logps(model: nn.Module, batch: dict, temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Each labeled token's log-probability under `model` (logits over `temperature`), [labeled],
    and the row it belongs to."""
    logits, targets, keep = labeled_logits(model, batch)
    return -F.cross_entropy(logits.float() / temperature, targets, reduction="none"), keep.nonzero()[:, 0]


def sequence_logps(model: nn.Module, batch: dict) -> torch.Tensor:
    """Each row's log-probability of its labeled tokens (their sum), [rows]."""
    logps, rows = token_logps(model, batch)
    return logps.new_zeros(batch["labels"].shape[0]).index_add(0, rows, logps)
