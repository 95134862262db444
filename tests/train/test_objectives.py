"""The training objectives against hand computations, and what they may and may not train:
DPO's loss and rewards, log 2 when the policy is its reference, no gradient at any masked
(prompt or observation) position, and a few DPO steps that order a pair as preferred; GRPO's
group advantages, clipped loss and KL by hand, KL 0 at the reference, and no change from a
group whose rewards are equal."""

import math
from functools import partial

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from fireact.train.objectives import DPO, GRPO, SFT, dpo_loss, group_advantages, grpo_loss, sequence_logps

IGNORE = -100


def grpo(**settings) -> GRPO:
    """GRPO on batches that are rows already (scored here): no rollout or reward function."""
    return GRPO(rollout=None, reward=None, **settings)


def tiny_model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(config).eval()


def pair_batch() -> dict:
    """Two pairs: rows 0-1 chosen, rows 2-3 rejected; a prompt, an observation, right padding."""
    torch.manual_seed(1)
    ids = torch.randint(0, 97, (4, 12))
    mask = torch.ones_like(ids)
    mask[3, 9:] = 0
    labels = ids.clone()
    labels[:, :4] = IGNORE    # the prompt
    labels[:, 6:8] = IGNORE   # an observation
    labels[3, 9:] = IGNORE    # padding
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def test_dpo_loss_and_rewards_equal_a_hand_computation():
    policy_chosen, policy_rejected = torch.tensor([-1.0, -2.0]), torch.tensor([-3.0, -1.0])
    reference_chosen, reference_rejected = torch.tensor([-1.5, -2.0]), torch.tensor([-2.5, -1.5])
    loss, chosen, rejected = dpo_loss(policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta=0.5)
    # margins: 0.5 * ((-1 + 1.5) - (-3 + 2.5)) = 0.5 and 0.5 * ((-2 + 2) - (-1 + 1.5)) = -0.25
    assert chosen.tolist() == [0.25, 0.0] and rejected.tolist() == [-0.25, 0.25]
    expected = (math.log(1 + math.exp(-0.5)) + math.log(1 + math.exp(0.25))) / 2
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    smoothed, _, _ = dpo_loss(policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta=0.5,
                              label_smoothing=0.1)
    sigmoid = lambda x: 1 / (1 + math.exp(-x))
    expected = sum(-0.9 * math.log(sigmoid(m)) - 0.1 * math.log(sigmoid(-m)) for m in (0.5, -0.25)) / 2
    assert smoothed.item() == pytest.approx(expected, abs=1e-6)


def test_sequence_logps_sum_the_labeled_tokens_only():
    model, batch = tiny_model(), pair_batch()
    logps = torch.log_softmax(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits, -1)
    targets = batch["labels"][:, 1:]
    expected = [sum(logps[row, t, targets[row, t]].item() for t in range(11) if targets[row, t] != IGNORE)
                for row in range(4)]
    assert sequence_logps(model, batch).tolist() == pytest.approx(expected, abs=1e-4)


def lora(model):
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
    return get_peft_model(model, config)


@pytest.mark.parametrize("adapter", [True, False], ids=["lora", "full"])
def test_with_the_policy_equal_to_its_reference_the_loss_is_log_2(adapter):
    model = lora(tiny_model()) if adapter else tiny_model()
    objective = DPO(beta=0.1)
    objective.attach(model)
    assert (objective.reference.copy is None) == adapter  # LoRA keeps no second copy
    loss, metrics = objective(model, pair_batch())
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6)
    assert metrics["reward_margin"].item() == pytest.approx(0.0, abs=1e-6)


def norm_output_gradient(objective, model, batch) -> torch.Tensor:
    """The loss's gradient at each position's final hidden state (after the last norm, where no
    position mixes with another): what each position's prediction is trained by."""
    kept = {}
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    handle = base.model.norm.register_forward_hook(lambda m, a, out: kept.setdefault("hidden", out) if torch.is_grad_enabled() else None)
    try:
        loss, _ = objective(model, batch)
    finally:
        handle.remove()
    kept["hidden"].retain_grad()
    loss.backward()
    return kept["hidden"].grad.abs().sum(-1)  # [rows, positions]


def rollout_batch(model, rewards=(1.0, 0.0, 0.0, 1.0), groups=(0, 0, 1, 1)) -> dict:
    """pair_batch's four rows as two groups of two rollouts, with their rewards, each token's
    log-probability as `model` would have sampled it (old_logps, at the id's position)."""
    batch = pair_batch()
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
    old = torch.zeros(batch["input_ids"].shape)
    old[:, 1:] = torch.log_softmax(logits[:, :-1], -1).gather(-1, batch["input_ids"][:, 1:, None])[..., 0]
    return {**batch, "old_logps": old, "rewards": torch.tensor(rewards), "groups": torch.tensor(groups),
            "rollout": {"reward": 0.5}}


@pytest.mark.parametrize("objective", [SFT(), DPO(beta=0.5), grpo(beta=0.1)], ids=["sft", "dpo", "grpo"])
def test_no_masked_position_gets_a_gradient(objective):
    model = lora(tiny_model())
    batch = rollout_batch(model) if isinstance(objective, GRPO) else pair_batch()
    objective.attach(model)
    if isinstance(objective, DPO):  # move the policy off its reference, so DPO's gradient is not zero by symmetry
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.5)
    grad = norm_output_gradient(objective, model, batch)
    trained = batch["labels"][:, 1:] != IGNORE  # position t predicts token t + 1
    assert (grad[:, :-1][~trained] == 0).all() and (grad[:, -1] == 0).all()
    assert (grad[:, :-1][trained] > 0).all()


def test_dpo_steps_raise_the_chosen_over_the_rejected():
    model = lora(tiny_model())
    objective = DPO(beta=0.5)
    objective.attach(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    batch = pair_batch()
    margins = []
    for _ in range(20):
        loss, metrics = objective(model, batch)
        margins.append(metrics["reward_margin"].item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    final_loss, final = objective(model, batch)
    assert margins[0] == pytest.approx(0.0, abs=1e-6) and final["reward_margin"].item() > 0.5
    assert final["reward_accuracy"].item() == 1.0 and final_loss.item() < math.log(2)


def test_group_advantages_equal_a_hand_computation():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.5, 0.5, 0.5, 0.5])
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    std = math.sqrt(4 * 0.25 / 3)  # group 0: mean 0.5, unbiased std
    expected = [0.5 / (std + 1e-4), -0.5 / (std + 1e-4), -0.5 / (std + 1e-4), 0.5 / (std + 1e-4)]
    assert group_advantages(rewards, groups).tolist()[:4] == pytest.approx(expected, abs=1e-6)
    assert group_advantages(rewards, groups).tolist()[4:] == [0.0] * 4  # equal rewards: exactly no advantage
    assert group_advantages(rewards, groups, scale=False).tolist() == [0.5, -0.5, -0.5, 0.5, 0.0, 0.0, 0.0, 0.0]


@pytest.mark.parametrize("rewards", [(0.85, 0.85, 0.85), (1 / 3, 1 / 3, 1 / 3), (0.1, 0.1, 0.1, 0.1, 0.1)],
                         ids=["0.85x3", "f1-thirds", "0.1x5"])
def test_tied_groups_of_any_size_get_exactly_no_advantage(rewards):
    groups = torch.zeros(len(rewards), dtype=torch.long)
    assert group_advantages(torch.tensor(rewards), groups).tolist() == [0.0] * len(rewards)
    assert group_advantages(torch.tensor(rewards), groups, scale=False).tolist() == [0.0] * len(rewards)


def test_a_batch_of_tied_groups_skips_the_step():
    """Rewards 0.85 (e.g. F1, or EM less a search cost) in a group of 4: no loss, so the
    module skips the step and AdamW neither moves a weight nor keeps state (a float32 mean once gave
    them advantages of 6e-4, all one sign, and a full step)."""
    model = lora(tiny_model())
    loss, metrics = grpo()(model, rollout_batch(model, rewards=(0.85, 0.85, 0.85, 0.85), groups=(0, 0, 0, 0)))
    assert loss is None and metrics["groups_without_signal"].item() == 1.0


def test_a_group_of_one_is_a_clear_error():
    with pytest.raises(ValueError, match="group of one trajectory"):
        group_advantages(torch.tensor([1.0, 0.0, 1.0]), torch.tensor([0, 0, 1]))


def test_grpo_loss_equals_a_hand_computation():
    # Row 0 has tokens 0-1 (advantage 1), row 1 token 2 (advantage -1); a third row of the
    # batch had no advantage and was not run, but counts in the mean.
    old = torch.log(torch.tensor([0.4, 0.3, 0.25]))
    ratios = torch.tensor([1.1, 2.0, 0.7])
    logps = old + ratios.log()
    rows = torch.tensor([0, 0, 1])
    loss, metrics = grpo_loss(logps, old, torch.tensor([1.0, -1.0]), rows, normaliser=3, clip=0.2)
    # row 0: -(min(1.1, 1.1) + min(2.0, 1.2)) / 2 = -1.15; row 1: -min(-0.7, -0.8) = 0.8
    assert loss.item() == pytest.approx((-1.15 + 0.8) / 3, abs=1e-6)
    assert metrics["clip_fraction"].item() == pytest.approx(2 / 3) and "kl" not in metrics
    assert (metrics["clip_high"].item(), metrics["clip_low"].item()) == pytest.approx((1 / 3, 1 / 3))
    reference = logps + torch.log(torch.tensor([0.5, 1.0, 2.0]))  # ref / policy probability ratios
    with_kl, metrics = grpo_loss(logps, old, torch.tensor([1.0, -1.0]), rows, normaliser=3, clip=0.2,
                                 reference_logps=reference, beta=0.1)
    k3 = [r - math.log(r) - 1 for r in (0.5, 1.0, 2.0)]  # exp(d) - d - 1 with d = log(ref / policy)
    assert metrics["kl"].item() == pytest.approx(sum(k3) / 3, abs=1e-6)
    assert with_kl.item() == pytest.approx((-1.15 + 0.1 * (k3[0] + k3[1]) / 2 + 0.8 + 0.1 * k3[2]) / 3, abs=1e-6)
    # dapo: the tokens' sum over the batch's token count; dr_grpo: over rows x max_length (here 3 x 5)
    summed, _ = grpo_loss(logps, old, torch.tensor([1.0, -1.0]), rows, normaliser=4, clip=0.2, per_row_mean=False)
    assert summed.item() == pytest.approx((-1.1 - 1.2 + 0.8) / 4, abs=1e-6)


def test_the_clip_fraction_counts_only_tokens_the_clip_takes_out_of_the_gradient():
    """A ratio off by more than the clip counts only on the side where the min picks the clipped
    term: below 1 - clip with a negative advantage, above 1 + clip with a positive one."""
    old = torch.log(torch.tensor([0.4, 0.3, 0.25, 0.2]))
    ratios = torch.tensor([0.7, 2.0, 1.5, 0.5])  # advantages +1, +1, -1, -1
    logps = (old + ratios.log()).requires_grad_()
    loss, metrics = grpo_loss(logps, old, torch.tensor([1.0, -1.0]), torch.tensor([0, 0, 1, 1]), normaliser=2, clip=0.2)
    loss.backward()
    clipped = logps.grad == 0
    assert clipped.tolist() == [False, True, False, True]
    assert metrics["clip_fraction"].item() == clipped.float().mean().item() == 0.5
    assert (metrics["clip_high"].item(), metrics["clip_low"].item()) == (0.25, 0.25)


@pytest.mark.parametrize("adapter", [True, False], ids=["lora", "full"])
def test_with_the_policy_equal_to_its_reference_the_kl_is_0(adapter):
    model = lora(tiny_model()) if adapter else tiny_model()
    objective = grpo(beta=0.5)
    objective.attach(model)
    assert (objective.reference.copy is None) == adapter
    loss, metrics = objective(model, rollout_batch(model))
    without_kl, _ = grpo(beta=0.0)(model, rollout_batch(model))
    assert metrics["kl"].item() == pytest.approx(0.0, abs=1e-6)
    assert loss.item() == pytest.approx(without_kl.item(), abs=1e-6)


def test_a_group_with_equal_rewards_gets_no_gradient_and_all_equal_skips_the_step():
    model = lora(tiny_model())
    grad = norm_output_gradient(grpo(), model, rollout_batch(model, rewards=(1.0, 0.0, 1.0, 1.0)))
    assert (grad[2:] == 0).all() and (grad[:2] > 0).any()  # group 1's rows: no gradient at all
    loss, metrics = grpo()(model, rollout_batch(model, rewards=(0.0, 0.0, 1.0, 1.0)))
    assert loss is None and metrics["groups_without_signal"].item() == 1.0


def test_grpo_steps_raise_the_reward_of_the_better_trajectory():
    """The policy moves toward the trajectory with the higher reward within each group."""
    model = lora(tiny_model())
    objective = grpo()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    batch = rollout_batch(model)
    start = sequence_logps(model, batch).detach()
    for _ in range(10):
        loss, _ = objective(model, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    moved = sequence_logps(model, batch).detach() - start
    assert moved[0] > 0 and moved[3] > 0 and moved[1] < 0 and moved[2] < 0  # rewards 1, 0, 0, 1


@pytest.mark.parametrize("objective", [DPO(beta=0.1), grpo(beta=0.1), grpo(beta=0.0)], ids=["dpo", "grpo-kl", "grpo"])
def test_policy_objectives_train_without_dropout(objective):
    """LoRA dropout 0.5 and attention dropout in the config: after attach, two forwards of the
    policy in train mode give the same log-probabilities (TRL turns dropout off for DPO and GRPO)."""
    config = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         attention_dropout=0.3)
    torch.manual_seed(0)
    model = get_peft_model(LlamaForCausalLM(config), LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                                lora_dropout=0.5))
    model.train()
    batch = pair_batch()
    assert not torch.equal(sequence_logps(model, batch), sequence_logps(model, batch))  # dropout on
    objective.attach(model)
    assert torch.equal(sequence_logps(model, batch), sequence_logps(model, batch))


@pytest.mark.parametrize("rewards", [(0.85, 0.85, 0.85), (1 / 3, 1 / 3, 1 / 3)], ids=["0.85x3", "f1-thirds"])
def test_a_step_of_tied_groups_changes_no_weight_and_no_adam_state(rewards):
    """Through Lightning as a run trains: a GRPO step whose groups all tie is skipped, so AdamW
    keeps no state and no weight moves (a float32 mean once gave such groups advantages of 6e-4,
    all one sign, and a full step)."""
    import pytorch_lightning as pl

    from fireact.train.module import CausalLMModule

    model = lora(tiny_model())
    batch = rollout_batch(model, rewards=(*rewards, *rewards), groups=(0, 0, 0, 1, 1, 1))
    batch = {**batch, **{k: torch.cat([batch[k], batch[k][:2]]) for k in ("input_ids", "attention_mask", "labels", "old_logps")}}
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    module = CausalLMModule(model, objective=grpo(), optimizer=partial(torch.optim.AdamW, lr=1e-2),
                            lr_schedule="cosine", warmup_ratio=0.03)
    trainer = pl.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, torch.utils.data.DataLoader([batch], batch_size=None))
    assert trainer.optimizers[0].state == {} or all(not s for s in trainer.optimizers[0].state.values())
    assert all(torch.equal(before[name], p) for name, p in model.named_parameters())
    assert module.metrics[0]["groups_without_signal"] == 1.0
