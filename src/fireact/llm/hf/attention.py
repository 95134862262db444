"""The hf backend's attention: a prefix every row shares is kept once and attended by all rows
(`shared_prefix_attention`), registered with transformers when a backend is built."""

from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

SHARED_PREFIX_ATTENTION = "fireact_shared_prefix"  # the name a model's attn_implementation is set to


def register_attention() -> None:
    """Make SHARED_PREFIX_ATTENTION a transformers attention implementation (sdpa's mask);
    idempotent."""
    AttentionInterface.register(SHARED_PREFIX_ATTENTION, shared_prefix_attention)
    AttentionMaskInterface.register(SHARED_PREFIX_ATTENTION, sdpa_mask)


def shared_prefix_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0,
                            shared_prefix=None, **kwargs):
    """Attention over [a prefix every row shares][each row's own tokens], the prefix's keys and
    values kept once (one row) instead of copied into every row: all rows' queries attend to it
    in one call. `key`, `value`, `attention_mask` cover the rows' own tokens.

    The prefix and the own tokens are attended apart, each giving its softmax's log-normaliser,
    and the two results merged with weights from those. Query heads are grouped by the key
    head they read (transformers' repeat_kv copies the keys instead), so no keys or values are
    copied, with a prefix or without. Training, and a GPU without a prefix, use transformers'
    sdpa attention; a GPU encoding prompts joins the prefix to each row for sdpa's kernels."""
    on_cpu = query.device.type == "cpu"
    if module.training or (shared_prefix is None and not on_cpu):
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    rows, heads, queries, dim = query.shape
    kv_heads, own = key.shape[1], key.shape[-2]
    group = heads // kv_heads  # query head h reads kv head h // group
    scale = scaling if scaling is not None else dim**-0.5
    if attention_mask is None:  # no padding: causal over the own tokens
        visible = torch.ones(queries, own, dtype=torch.bool, device=query.device).tril(own - queries)
    elif attention_mask.dtype == torch.bool:
        visible = attention_mask
    else:  # an additive mask
        visible = attention_mask == 0
    visible = visible.expand(rows, 1, queries, own)
    if not on_cpu and queries > 1:
        prefix_keys, prefix_values = shared_prefix[module.layer_idx]
        joined = lambda shared, own_part: torch.cat([shared.expand(rows, -1, -1, -1), own_part], dim=-2)
        everything = torch.cat([visible.new_ones(rows, 1, queries, prefix_keys.shape[-2]), visible], dim=-1)
        return sdpa_attention_forward(module, query, joined(prefix_keys, key), joined(prefix_values, value), everything,
                                      scaling=scaling, dropout=dropout, **kwargs)
    visible = visible.repeat(1, 1, group, 1)  # per grouped query
    grouped = query.reshape(rows, kv_heads, group * queries, dim)  # [rows, kv heads, group x queries, dim]
    out, own_norm = _attend(grouped, key, value, visible, scale)
    if shared_prefix is not None:
        prefix_keys, prefix_values = shared_prefix[module.layer_idx]  # [1, kv heads, prefix, dim]
        all_rows = grouped.transpose(0, 1).reshape(1, kv_heads, rows * group * queries, dim)
        from_prefix, prefix_norm = _attend(all_rows, prefix_keys, prefix_values, None, scale)
        from_prefix = from_prefix.reshape(kv_heads, rows, group * queries, dim).transpose(0, 1)
        prefix_norm = prefix_norm.reshape(kv_heads, rows, group * queries).transpose(0, 1)
        own_norm = own_norm.masked_fill(~visible.any(-1), float("-inf"))  # a query that sees no own token
        top = torch.maximum(prefix_norm, own_norm)
        prefix_weight, own_weight = (prefix_norm - top).exp()[..., None], (own_norm - top).exp()[..., None]
        out = (from_prefix.float() * prefix_weight + out.float() * own_weight) / (prefix_weight + own_weight)
    return out.reshape(rows, heads, queries, dim).transpose(1, 2).to(query.dtype), None


def _attend(query, key, value, visible, scale):
    """Softmax attention and its log-normaliser (logsumexp of the visible scores) per query:
    torch's flash kernel on CPU, the plain computation elsewhere. `visible`: a boolean mask
    broadcast over heads, or None for all keys visible."""
    attend = flash_attend_cpu if query.device.type == "cpu" else plain_attend
    return attend(query, key, value, visible, scale)


def flash_attend_cpu(query, key, value, visible, scale):
    mask = None if visible is None else torch.zeros(visible.shape, dtype=query.dtype).masked_fill(~visible, float("-inf"))
    return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(query, key, value, attn_mask=mask, scale=scale)


def plain_attend(query, key, value, visible, scale):
    scores = (query.float() @ key.float().transpose(-1, -2)) * scale
    if visible is not None:
        scores = scores.masked_fill(~visible, float("-inf"))
    norm = scores.logsumexp(-1)
    return (scores - norm[..., None]).exp().nan_to_num() @ value.float(), norm
