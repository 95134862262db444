"""The training objectives against hand computations, and what they may and may not train:
DPO's loss and rewards, log 2 when the policy is its reference, no gradient at any masked
(prompt or observation) position, and a few DPO steps that order a pair as preferred."""

import math

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from fireact.train.objectives import DPO, SFT, dpo_loss, sequence_logps

IGNORE = -100


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
    assert (objective.reference is None) == adapter  # LoRA keeps no second copy
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


@pytest.mark.parametrize("objective", [SFT(), DPO(beta=0.5)], ids=["sft", "dpo"])
def test_no_masked_position_gets_a_gradient(objective):
    model, batch = lora(tiny_model()), pair_batch()
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
