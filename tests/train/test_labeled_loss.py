"""The training loss projects onto the vocabulary only where there is a label, and equals the model's own loss."""

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from fireact.train.objectives import labeled_loss

IGNORE = -100


def tiny_model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(config).eval()  # eval: no dropout, so both losses see the same forward


def batch() -> dict:
    torch.manual_seed(1)
    ids = torch.randint(0, 97, (3, 12))
    mask = torch.ones_like(ids)
    mask[2, :4] = 0  # a left-padded row
    labels = ids.clone()
    labels[:, :5] = IGNORE   # the prompt
    labels[1, 7:9] = IGNORE  # an observation
    labels[2, :4] = IGNORE
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def grads(model) -> list[torch.Tensor]:
    return [p.grad.clone() for p in model.parameters() if p.grad is not None]


def test_loss_and_gradients_equal_the_models_own():
    model, inputs = tiny_model(), batch()
    own = model(**inputs).loss
    own.backward()
    expected = grads(model)
    model.zero_grad()
    ours = labeled_loss(model, inputs)
    ours.backward()
    assert torch.allclose(ours, own, atol=1e-6)
    for got, want in zip(grads(model), expected, strict=True):
        assert torch.allclose(got, want, atol=1e-6)


def test_the_hook_is_removed_and_the_head_sees_only_labeled_positions():
    model, inputs = tiny_model(), batch()
    seen = []
    model.get_output_embeddings().register_forward_hook(lambda m, a, out: seen.append(out.shape))
    labeled_loss(model, inputs)
    labeled = int((inputs["labels"][:, 1:] != IGNORE).sum())
    assert seen[-1][:-1] == (1, labeled)
    model(**inputs)  # a plain forward afterwards projects every position again
    assert seen[-1][:-1] == inputs["input_ids"].shape
