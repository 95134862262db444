"""How far a rollout is from the machine's limit: the fp32 matmul peak, and the FLOPs a model's
forward passes did.

FLOPs of a forward over `rows` x `q` new tokens, `context` tokens already cached before them:
2 x (parameters outside the embedding) per token, 2 x vocabulary x hidden per row whose logits
are kept (logits_to_keep), and attention's 4 x layers x hidden per token per position it attends
to (scores and the weighted sum). Padding counts: it is computed. A shared prefix kept apart
(fireact.llm.hf, the `shared_prefix` argument) counts as attended context.
"""

from __future__ import annotations

import time

import torch


def matmul_peak_gflops(size: int = 2048, seconds: float = 3.0) -> float:
    """The best rate of square fp32 matmuls over `seconds`, in GFLOP/s (2 n^3 per product)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)  # warm-up
    best, until = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < until:
        start = time.perf_counter()
        torch.mm(a, b)
        best = max(best, 2 * size**3 / (time.perf_counter() - start) / 1e9)
    return best


class FlopCounter:
    """Counts the FLOPs of every forward of `lm` (a transformers causal LM) while attached."""

    def __init__(self, lm: torch.nn.Module):
        config = lm.config.get_text_config(decoder=True)
        self.layers, self.hidden, self.vocab = config.num_hidden_layers, config.hidden_size, config.vocab_size
        embedding = lm.get_input_embeddings().weight.numel()
        self.body_params = sum(p.numel() for p in lm.parameters()) - embedding
        if not config.tie_word_embeddings:  # an untied head is counted apart, per kept row
            self.body_params -= lm.get_output_embeddings().weight.numel()
        self.flops, self.tokens = 0, 0
        self._hook = lm.register_forward_pre_hook(self._count, with_kwargs=True)

    def _count(self, module, args, kwargs) -> None:
        ids = kwargs["input_ids"] if kwargs.get("input_ids") is not None else args[0]
        rows, q = ids.shape
        past = kwargs.get("past_key_values")
        shared = kwargs.get("shared_prefix")
        before = (past.get_seq_length() if past is not None else 0) + (shared[0][0].shape[-2] if shared else 0)
        keep = kwargs.get("logits_to_keep") or q
        attended = q * before + q * (q + 1) // 2  # per row: each new token sees the cache and the new tokens up to itself
        self.tokens += rows * q
        self.flops += (2 * self.body_params * rows * q + 2 * self.vocab * self.hidden * rows * min(keep, q)
                       + 4 * self.layers * self.hidden * rows * attended)

    def reset(self) -> None:
        self.flops, self.tokens = 0, 0

    def close(self) -> None:
        self._hook.remove()
