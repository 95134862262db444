"""The `hf` backend: local generation with transformers on CPU or GPU.

The model is loaded once (a hub id, a local or merged checkpoint folder, or the embedded
default), optionally with a PEFT adapter merged in. Prompts are tokenized (chat message lists
through the tokenizer's chat template) and batched continuously: a submitted request joins the
running batch at the next `step` (`RunningBatch`: a slot per request, up to batch_size) and
leaves it when its reply ends; transformers' own stop-string criterion (built once per tuple of
stop strings) ends each sequence at its first stop string, and the text is cut there and at
end-of-sequence.

Decoding (greedy or sampled) reuses a shared prefix: agents' prompts all start with the same few-shot
examples, so the longest common token prefix of the requests that start a batch is encoded once
and its KV cache kept (a few, least recently used first out) for later batches that start with
it; a request joins a running batch only if it starts with that batch's prefix. The prefix's
keys and values stay one row: `shared_prefix_attention` (registered with transformers as the
model's attention) attends to them and to each row's own tokens, so a forward reads the prefix
once for the whole batch and never copies it into rows. Newcomers' own tokens are encoded in a
forward of their own, laid out [left padding][own tokens] (`BufferLayer`), then copied into
their slots (`SlotLayer`), where a row's own tokens start at column 0 and each decoding step
writes every row's token at that row's own column, masked per row, with position ids continuing
from the prefix; greedy, it gives the same tokens as `generate` up to float rounding. Sampling
draws each row from its temperature-scaled, top-p-cut distribution with its own generator,
seeded by the request's seed, so a prompt and a seed give the same completion whatever else
shares the batch.

An agent's next prompt is its last one extended (the reply, the observation): each request's own
KV cache (its tokens after the shared prefix, and the generated tokens fed back) is kept after
decoding (`HistoryCache`), and a later prompt that starts with those tokens loads them into its
row instead of encoding them again, so a question's next round encodes only its new tokens
(with the same tokens, greedy, as encoding it whole, up to float rounding).
"""

from __future__ import annotations

import copy
import ctypes
import itertools
import os
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Hashable, Sequence

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache, StopStringCriteria
from transformers import AttentionInterface
from transformers.cache_utils import Cache, DynamicLayer
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from fireact.dtypes import torch_dtype
from fireact.llm.base import ContinuousBatching, Completion, Prompt, TokenIds, cut_at_stop, request_seed
from fireact.llm.embedded import resolve_model_path
from fireact.logs import route_transformers, transformers_bars_off

route_transformers()

# A common prefix shorter than this is not worth a cache entry (the suffixes are encoded anyway).
MIN_SHARED_PREFIX = 32
# Columns a slot gets for its reply before the batch has to grow; a ReAct step (a thought and an
# action) usually fits. Reserving max_tokens for every row held columns that most rows never
# fill, in every layer (bench/NOTES.md, peak RSS).
REPLY_ROOM = 32

# glibc serves a block below its mmap threshold from its heap and keeps it there once freed, and
# by default that threshold rises to the largest mapped block freed (up to 32 MB): the running
# batch's slot buffers, reallocated as requests come and go, then stay resident after they are
# freed. A fixed threshold maps every block this size or larger apart, so that freeing it gives
# it back (bench/NOTES.md, peak RSS).
MMAP_THRESHOLD_BYTES = 4 * 2**20
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


class HFBackend(ContinuousBatching):
    """Generate with a transformers causal LM.

    model: the model group config (conf/model/*.yaml): `name` (logged with trajectories),
        `path` (hub id, local folder, or "embedded:<name>"), optional `adapter` (PEFT folder).
    device: "auto" (cuda when available), "cpu", "cuda" or "cuda:N".
    dtype: "auto" (float32 on CPU; bfloat16 on GPUs that support it, else float16),
        "float32", "bfloat16" or "float16".
    batch_size: the most requests decoding at once (the running batch's rows); more wait for a free slot.
    temperature: 0 for greedy decoding, above 0 to sample (with `top_p`).
    seed: makes sampling reproducible when the caller gives no per-request seeds: the backend's
        n-th such request samples under a seed made from (seed, n).
    prefix_cache_size: how many shared-prefix KV caches decoding keeps (0 turns the
        prefix cache off; each entry holds the prefix's keys and values, ~46 KB a token for
        SmolLM2-135M in float32).
    history_cache_tokens: how many tokens of finished requests' own KV caches are kept for
        prompts that extend them (a question's next round); least recently kept first out;
        0 turns it off.
    """

    backend = "hf"
    samples_tokens = True

    def __init__(
        self,
        model: Mapping,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 32,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
        prefix_cache_size: int = 4,
        history_cache_tokens: int = 16384,
    ):
        if not isinstance(model, Mapping) or not model.get("path"):
            raise ValueError(f"HFBackend needs the model config with a `path` (conf/model/*.yaml), got {model!r}")
        self.device = _device(device)
        self.dtype = _dtype(dtype, self.device)
        if self.device.type == "cpu":
            map_large_blocks()  # before the model loads: its blocks too
        self.model = model.get("name") or model["path"]
        self._configure(batch_size, temperature, top_p, seed, prefix_cache_size, history_cache_tokens)
        path = _model_path(model["path"])
        adapter = _adapter_path(model.get("adapter"))
        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
            with transformers_bars_off(path):
                lm = AutoModelForCausalLM.from_pretrained(path, dtype=self.dtype, device_map=str(self.device))
        except OSError as e:
            raise OSError(
                f"cannot load model.path={path!r}: {e}. Set model.path to a local checkpoint folder "
                f"or a hub id reachable from this machine."
            ) from e
        if adapter is not None:
            from peft import PeftModel

            # Merged once at load: generation then runs at the speed of the plain model.
            lm = PeftModel.from_pretrained(lm, str(adapter)).merge_and_unload()
        lm.eval()
        self._attach(lm, tokenizer)

    @classmethod
    def of(cls, lm: torch.nn.Module, tokenizer, name: str, batch_size: int = 32, temperature: float = 0.0,
           top_p: float = 1.0, seed: int | None = None, prefix_cache_size: int = 4,
           history_cache_tokens: int = 16384) -> "HFBackend":
        """A backend over a model already in memory, its weights shared, not copied: the policy
        being trained generates its own rollouts (objective=grpo). The caller puts the model in
        eval mode while it generates and calls `clear_caches()` after each update; the
        tokenizer is copied (the backend sets its own padding side)."""
        backend = cls.__new__(cls)
        backend.device = next(lm.parameters()).device
        backend.dtype = next(lm.parameters()).dtype
        backend.model = name
        backend._configure(batch_size, temperature, top_p, seed, prefix_cache_size, history_cache_tokens)
        backend._attach(lm, copy.deepcopy(tokenizer))
        return backend

    def _configure(self, batch_size: int, temperature: float, top_p: float, seed: int | None, prefix_cache_size: int,
                   history_cache_tokens: int) -> None:
        if batch_size < 1:
            raise ValueError(f"backend.batch_size must be at least 1, got {batch_size}")
        if temperature < 0:
            raise ValueError(f"backend.temperature must be 0 (greedy) or positive, got {temperature}")
        if not 0 < top_p <= 1:
            raise ValueError(f"backend.top_p must be in (0, 1], got {top_p}")
        if prefix_cache_size < 0:
            raise ValueError(f"backend.prefix_cache_size must be 0 (off) or more, got {prefix_cache_size}")
        if history_cache_tokens < 0:
            raise ValueError(f"backend.history_cache_tokens must be 0 (off) or more, got {history_cache_tokens}")
        self.batch_size = batch_size
        self.temperature = temperature
        self.top_p = top_p
        self.seed = seed
        self._seeded = 0  # requests that brought no seed
        self._waiting: deque[Row] = deque()
        self._batch: RunningBatch | None = None
        self.prefix_cache_size = prefix_cache_size
        self._prefixes: OrderedDict[tuple[int, ...], list[tuple[torch.Tensor, torch.Tensor]]] = OrderedDict()
        self._stop_criteria: dict[tuple[str, ...], StopStringCriteria] = {}
        self._history = HistoryCache(history_cache_tokens)

    def _attach(self, lm: torch.nn.Module, tokenizer) -> None:
        self.lm, self.tokenizer = lm, tokenizer
        self.lm.set_attn_implementation("fireact_shared_prefix")  # sdpa, but a shared prefix is kept once
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        eos = self.lm.generation_config.eos_token_id
        eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
        # After a sequence ends, generate() fills its row with the pad token: both mark the end.
        self._end_ids = {*eos, self.tokenizer.eos_token_id, self.tokenizer.pad_token_id} - {None}

    def clear_caches(self) -> None:
        """Drop the kept prefix and history caches: after a weight update (they were computed
        with the old weights), or to start cold."""
        self._prefixes.clear()
        self._history.clear()
        if self.device.type == "cpu":
            release_free_memory()

    def submit(self, key: Hashable, prompt: Prompt, stop: Sequence[str] = (), max_tokens: int = 256,
               seed: int | None = None) -> None:
        if self.lm is None:
            raise RuntimeError("this HFBackend was closed; build a new one to generate")
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
        if seed is None:
            seed = self._fresh_seed()
        generator = torch.Generator(self.device).manual_seed(seed) if self.temperature > 0 else None
        self._waiting.append(Row(key, self.encode(prompt), tuple(s for s in stop if s), max_tokens, generator))

    def step(self) -> list[tuple[Hashable, Completion]]:
        """Admit waiting requests into the running batch (their prompts encoded: each row's first
        token), then one decoding step for every row; the rows that ended leave the batch."""
        with torch.inference_mode():
            self._admit()
            batch = self._batch
            if batch is None:
                return []
            # Rows that ended at their first token leave before the step (it writes in every slot).
            finished = self._finish_ended(batch)
            if batch.active():
                self._decode_step(batch)
                finished += self._finish_ended(batch)
            if not batch.active():
                batch.release()
                self._batch = None
            elif batch.idle_share() >= 0.5 and not self._waiting:
                batch.compact()
        return finished

    @property
    def running(self) -> int:
        return len(self._waiting) + (0 if self._batch is None else self._batch.active())

    def _fresh_seed(self) -> int:
        """A seed for a request that brought none: from (seed, request number), or a fresh one."""
        self._seeded += 1
        if self.seed is None:
            return int(torch.randint(0, 2**62, ()).item())
        return request_seed(self.seed, self._seeded)

    def close(self) -> None:
        self.lm = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def encode(self, prompt: Prompt, special_tokens: bool = True) -> list[int]:
        if isinstance(prompt, TokenIds):
            return list(prompt)
        if isinstance(prompt, str):
            return self.tokenizer(prompt, add_special_tokens=special_tokens)["input_ids"]
        if self.tokenizer.chat_template is None:
            raise ValueError(
                f"model {self.model!r} has no chat template, so chat-message prompts cannot be rendered; "
                f"send string prompts or use a chat/instruct model"
            )
        return self.tokenizer.apply_chat_template(list(prompt), add_generation_prompt=True, return_dict=True)["input_ids"]

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)

    def _admit(self) -> None:
        """Waiting requests join the batch, in order, while it has room (batch_size rows): with no
        batch running, the first batch_size start one (with the shared prefix they have a cache
        for); with one running, they fill its free slots until one does not start with its shared
        prefix: that one and those after it wait until the batch ends (first come, first served:
        no request waits behind later ones)."""
        if not self._waiting:
            return
        if self._batch is None:
            rows = [self._waiting.popleft() for _ in range(min(self.batch_size, len(self._waiting)))]
            prefix, shared = self._shared_prefix([row.prompt for row in rows])
            layers = self.lm.config.get_text_config(decoder=True).num_hidden_layers
            self._batch = RunningBatch(prefix, tuple(rows[0].prompt[:prefix]), shared, layers, self.batch_size)
        else:
            batch, rows = self._batch, []
            while self._waiting and len(rows) < self.batch_size - batch.active() and batch.takes(self._waiting[0].prompt):
                rows.append(self._waiting.popleft())
            if not rows:
                return
        self._prefill(self._batch, rows)

    def _prefill(self, batch: "RunningBatch", rows: list["Row"]) -> None:
        """Encode the newcomers' prompts after the shared prefix (the own tokens a kept history covers
        are loaded, not encoded: the forward feeds only the last `new` columns, the longest part any
        row has no history for), in rows laid out [left padding][own tokens]; each row's first token
        comes from it, and its keys and values move into its slot of the batch."""
        prefix, pad = batch.prefix, self.tokenizer.pad_token_id
        suffixes = [row.prompt[prefix:] for row in rows]
        width = max(len(s) for s in suffixes)
        histories = [self._history.take(row.prompt, prefix) for row in rows]
        new = max(len(s) - len(h) for s, h in zip(suffixes, histories))
        cache = Cache(layers=[BufferLayer(width) for _ in batch.layers])
        if new < width:  # every row's own tokens before the last `new` columns are in its history
            for index, layer in enumerate(cache.layers):
                layer.load([h.layer(index, len(s) - new) for s, h in zip(suffixes, histories)], width - new)
        del histories
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), prefix + width), dtype=torch.long)
        mask[:, :prefix] = 1
        for index, suffix in enumerate(suffixes):
            ids[index, width - len(suffix) :] = torch.tensor(suffix)
            mask[index, prefix + width - len(suffix) :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        # Each real token's position counts the real tokens before it (as generate does).
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, prefix + width - new :]
        out = self.lm(input_ids=ids[:, width - new :], attention_mask=mask[:, prefix:], position_ids=positions,
                      past_key_values=cache, use_cache=True, logits_to_keep=1, shared_prefix=batch.shared)
        generators = [row.generator for row in rows] if self.temperature > 0 else None
        tokens = self._next_token(out.logits[:, -1], generators)
        slots = batch.place(rows)
        room = batch.room()
        for layer, computed in zip(batch.layers, cache.layers):  # a layer at a time: its prefill buffers go as its slots grow
            layer.reserve(len(batch.rows), room, batch.limit, like=computed.keys)
            layer.fill(slots, computed.keys, computed.values, [len(s) for s in suffixes])
            computed.release()
        for row, suffix in zip(rows, suffixes):
            row.length = len(suffix)
        self._take_tokens(rows, tokens)

    def _decode_step(self, batch: "RunningBatch") -> None:
        """One token for every row: each slot feeds its last token at its own column (free slots
        feed padding at column 0, their output unused)."""
        pad = self.tokenizer.pad_token_id
        decoding = [row is not None for row in batch.rows]
        tokens = [row.generated[-1] if live else pad for row, live in zip(batch.rows, decoding)]
        lengths = torch.tensor([row.length if live else 0 for row, live in zip(batch.rows, decoding)], device=self.device)
        width = int(lengths.max()) + 1
        visible = torch.arange(width, device=self.device)[None, :] <= lengths[:, None]
        slots = torch.arange(len(batch.rows), device=self.device)
        if width > batch.layers[0].capacity:  # a reply outgrew REPLY_ROOM
            for layer in batch.layers:
                layer.reserve(len(batch.rows), batch.room(), batch.limit)
        for layer in batch.layers:
            layer.aim(slots, lengths, width)
        out = self.lm(input_ids=torch.tensor(tokens, device=self.device)[:, None], attention_mask=visible[:, None, None, :],
                      position_ids=(lengths + batch.prefix)[:, None], past_key_values=batch.cache,
                      use_cache=True, logits_to_keep=1, shared_prefix=batch.shared)
        rows = [row for row, live in zip(batch.rows, decoding) if live]
        generators = [row.generator for row in rows] if self.temperature > 0 else None
        chosen = self._next_token(out.logits[torch.tensor(decoding, device=self.device), -1], generators)
        for row in rows:
            row.length += 1
        self._take_tokens(rows, chosen)

    def _take_tokens(self, rows: list[Row], chosen: tuple[list[int], list[float]]) -> None:
        """Append each row's generated token and its log-probability; a row ends at an
        end-of-sequence token, at max_tokens, or at its first stop string (transformers' criterion
        over its sequence's last tokens, one call per tuple of stop strings)."""
        for row, token, logprob in zip(rows, *chosen, strict=True):
            row.generated.append(token)
            row.logprobs.append(logprob)
            row.ended = token in self._end_ids or len(row.generated) >= row.max_tokens
        for stop in dict.fromkeys(row.stop for row in rows if row.stop and not row.ended):
            group = [row for row in rows if row.stop == stop and not row.ended]
            criterion = self._stop_criterion(list(stop))
            width, pad = criterion.maximum_token_len, self.tokenizer.pad_token_id
            tails = [(row.prompt[-width:] + row.generated)[-width:] for row in group]
            tails = torch.tensor([[pad] * (width - len(tail)) + tail for tail in tails])
            for row, hit in zip(group, criterion(tails, None).tolist()):
                row.ended = bool(hit)

    def _finish_ended(self, batch: "RunningBatch") -> list[tuple[Hashable, Completion]]:
        """The ended rows' completions; each one's own keys and values (prompt after the prefix, then
        the generated tokens fed back) are kept for a later prompt that extends them, and its slot
        is freed."""
        finished = []
        for slot, row in enumerate(batch.rows):
            if row is None or not row.ended:
                continue
            if self._history.capacity:
                fed = row.length - (len(row.prompt) - batch.prefix)
                self._history.put(History(tuple(row.prompt) + tuple(row.generated[:fed]), batch.prefix,
                                          [layer.row(slot, row.length) for layer in batch.layers]))
            batch.rows[slot] = None
            finished.append((row.key, self._completion(len(row.prompt), row, list(row.stop))))
        return finished

    def _next_token(self, logits: torch.Tensor, generators: list[torch.Generator] | None) -> tuple[list[int], list[float]]:
        """Each row's token, the argmax (greedy) or a draw from softmax(logits / temperature) cut to
        the smallest set of tokens whose probability reaches top_p; and its log-probability under
        log_softmax(logits / temperature) (greedy: temperature 1), the distribution a trainer scores."""
        logps = torch.log_softmax(logits.float() / (self.temperature if generators is not None else 1.0), dim=-1)
        if generators is None:
            tokens = logits.argmax(-1)
        else:
            probs = torch.softmax(logits.float() / self.temperature, dim=-1)
            if self.top_p < 1:
                sorted_probs, order = probs.sort(-1, descending=True)
                outside = sorted_probs.cumsum(-1) - sorted_probs >= self.top_p  # the mass before a token already reaches top_p
                probs = probs.scatter(-1, order, sorted_probs.masked_fill(outside, 0.0))
            tokens = torch.stack([torch.multinomial(row, 1, generator=g)[0] for row, g in zip(probs, generators)])
        return tokens.tolist(), logps.gather(-1, tokens[:, None])[:, 0].tolist()

    def _shared_prefix(self, prompts: list[list[int]]) -> tuple[int, list[tuple[torch.Tensor, torch.Tensor]] | None]:
        """The length of the token prefix all prompts share that has a KV cache, and that cache's
        keys and values per layer (one row). The longest common prefix of a batch is encoded and
        kept (extending a kept shorter one) when it is at least MIN_SHARED_PREFIX tokens longer
        than any kept."""
        if self.prefix_cache_size == 0:
            return 0, None
        limit = min(len(p) for p in prompts) - 1  # every row keeps a token to feed
        kept = max(
            (k for k in self._prefixes if len(k) <= limit and all(tuple(p[: len(k)]) == k for p in prompts)),
            key=len, default=(),
        )
        common = os.path.commonprefix(prompts)[:limit] if len(prompts) > 1 else []
        if len(common) >= len(kept) + MIN_SHARED_PREFIX:
            cache = DynamicCache(self._prefixes[kept], config=self.lm.config) if kept else DynamicCache(config=self.lm.config)
            new = torch.tensor([common[len(kept) :]], device=self.device)
            self.lm(input_ids=new, past_key_values=cache, use_cache=True, logits_to_keep=1)
            kept = tuple(common)
            self._prefixes[kept] = [(layer.keys, layer.values) for layer in cache.layers]
            while len(self._prefixes) > self.prefix_cache_size:
                self._prefixes.popitem(last=False)
        if not kept:
            return 0, None
        self._prefixes.move_to_end(kept)
        return len(kept), self._prefixes[kept]

    def _stop_criterion(self, stop: list[str]) -> StopStringCriteria:
        """Built once per tuple of stop strings: building it scans the whole vocabulary."""
        key = tuple(stop)
        if key not in self._stop_criteria:
            self._stop_criteria[key] = StopStringCriteria(self.tokenizer, list(stop))
        return self._stop_criteria[key]

    def _completion(self, prompt_tokens: int, row: Row, stop: list[str]) -> Completion:
        tokens = row.generated
        end = next((i for i, t in enumerate(tokens) if t in self._end_ids), len(tokens))
        text, stopped = cut_at_stop(self.tokenizer.decode(tokens[:end], skip_special_tokens=True), stop)
        sampled = {"token_ids": list(tokens), "logprobs": list(row.logprobs)}
        if stopped:  # generation halted on the token that completed the stop string
            return Completion(text, prompt_tokens, end, "stop", **sampled)
        if end < len(tokens):  # an end-of-sequence token, counted as generated
            return Completion(text, prompt_tokens, end + 1, "stop", **sampled)
        return Completion(text, prompt_tokens, len(tokens), "length", **sampled)


class BufferLayer(DynamicLayer):
    """A DynamicLayer whose keys and values live in buffers sized once for the whole generation
    (prompt + new tokens). DynamicLayer concatenates at every step, a copy of the whole cache per
    token: on CPU that copy cost as much as the step's attention."""

    def __init__(self, capacity: int):
        super().__init__()
        self.capacity, self.length = capacity, 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        rows, heads, _, dim = key_states.shape
        self._keys = key_states.new_empty((rows, heads, self.capacity, dim))
        self._values = value_states.new_empty((rows, heads, self.capacity, value_states.shape[-1]))
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + key_states.shape[-2]
        if end > self.capacity:
            raise RuntimeError(f"BufferLayer holds {self.capacity} tokens; {end} were written")
        self._keys[:, :, self.length : end] = key_states
        self._values[:, :, self.length : end] = value_states
        self.length = end
        self.keys, self.values = self._keys[:, :, :end], self._values[:, :, :end]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def load(self, rows: list[tuple[torch.Tensor, torch.Tensor] | None], length: int) -> None:
        """Start with `length` columns filled: row i's keys and values ([1, kv heads, n, dim]), where
        it has some, end at column `length`; every other column before it is zeros (padding,
        masked: zeros, not whatever memory held, keep the masked scores finite)."""
        keys, values = next(kv for kv in rows if kv is not None)
        self.lazy_initialization(keys.expand(len(rows), -1, -1, -1), values.expand(len(rows), -1, -1, -1))
        self._keys[:, :, :length] = 0
        self._values[:, :, :length] = 0
        for row, kv in enumerate(rows):
            if kv is not None:
                self._keys[row, :, length - kv[0].shape[-2] : length] = kv[0][0]
                self._values[row, :, length - kv[1].shape[-2] : length] = kv[1][0]
        self.length = length
        self.keys, self.values = self._keys[:, :, :length], self._values[:, :, :length]

    def release(self) -> None:
        """Free the buffers (the batch is done)."""
        self._keys = self._values = self.keys = self.values = None
        self.is_initialized, self.length = False, 0


@dataclass
class Row:
    """A request in the hf backend: waiting, then decoding in a slot of the running batch."""

    key: Hashable
    prompt: list[int]
    stop: tuple[str, ...]
    max_tokens: int
    generator: torch.Generator | None  # sampling only
    generated: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)  # each generated token's, as it was drawn
    length: int = 0  # own tokens (after the shared prefix) in its slot's cache
    ended: bool = False


class SlotLayer(DynamicLayer):
    """One layer's keys and values for a running batch: a slot (buffer row) per request, its own
    tokens from column 0 with room for its reply (REPLY_ROOM, more when a reply needs it). A
    decoding step writes each slot's new token at that slot's own column (`aim`) and attends to
    columns [0, width) of the slots in use, masked per row. The buffers grow (a copy) when a
    newcomer needs more slots or columns or a reply more columns, so that joining a batch never
    copies the requests already in it otherwise."""

    def __init__(self):
        super().__init__()
        self._keys = self._values = None
        self.width = 0
        self.rows: torch.Tensor | None = None
        self.at: torch.Tensor | None = None

    def reserve(self, slots: int, capacity: int, limit: int, like: torch.Tensor | None = None) -> None:
        """Room for `slots` rows of `capacity` columns: rows doubled (up to `limit`), columns grown
        by a quarter at least, so that a run's growing prompts and replies reallocate a few times,
        not at every admission or step; new room is zeros (masked columns must hold finite
        numbers). `like` gives the dtype and shape of a row (the buffers' own when None)."""
        like = self._keys if like is None else like
        have_slots, have_capacity = (0, 0) if self._keys is None else (self._keys.shape[0], self._keys.shape[2])
        if slots <= have_slots and capacity <= have_capacity:
            return
        slots = max(slots, min(limit, have_slots * 2)) if slots > have_slots else have_slots
        capacity = max(capacity, have_capacity * 5 // 4) if capacity > have_capacity else have_capacity
        shape = lambda like: (slots, like.shape[1], capacity, like.shape[-1])
        self.keys = self.values = None  # the last step's views would keep the old buffers alive beside the new
        keys, values = like.new_zeros(shape(like)), like.new_zeros(shape(like))
        if self._keys is not None:
            keys[:have_slots, :, :have_capacity] = self._keys
            values[:have_slots, :, :have_capacity] = self._values
        self._keys, self._values = keys, values
        self.dtype, self.device, self.is_initialized = like.dtype, like.device, True

    def fill(self, slots: list[int], keys: torch.Tensor, values: torch.Tensor, lengths: list[int]) -> None:
        """Row i of `keys`/`values` (a prefill's cache, right-aligned) into slot slots[i]: its last
        lengths[i] columns become the slot's columns [0, lengths[i])."""
        for index, (slot, length) in enumerate(zip(slots, lengths)):
            self._keys[slot, :, :length] = keys[index, :, keys.shape[-2] - length :]
            self._values[slot, :, :length] = values[index, :, values.shape[-2] - length :]

    def aim(self, rows: torch.Tensor, at: torch.Tensor, width: int) -> None:
        """The next forward: slot rows[i]'s token written at column at[i], `width` columns read."""
        self.rows, self.at, self.width = rows, at, width

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if key_states.shape[-2] != 1:
            raise RuntimeError("SlotLayer takes one token a row (a decoding step); prompts are encoded apart")
        slots = len(self.rows)
        self._keys[self.rows, :, self.at] = key_states[:, :, 0]
        self._values[self.rows, :, self.at] = value_states[:, :, 0]
        self.keys, self.values = self._keys[:slots, :, : self.width], self._values[:slots, :, : self.width]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return max(self.width - 1, 0)

    @property
    def capacity(self) -> int:
        """The columns each slot has room for."""
        return self._keys.shape[2]

    def row(self, slot: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A copy of slot `slot`'s first `length` columns ([1, kv heads, length, dim])."""
        return (self._keys[slot : slot + 1, :, :length].clone(), self._values[slot : slot + 1, :, :length].clone())

    def keep(self, slots: list[int], capacity: int) -> None:
        """Keep only these slots, in this order, and their first `capacity` columns (the batch compacts)."""
        index = torch.tensor(slots, device=self._keys.device)
        self.keys = self.values = None  # as in reserve: no view holds the old buffers
        self._keys = self._keys[:, :, :capacity].index_select(0, index)
        self._values = self._values[:, :, :capacity].index_select(0, index)

    def release(self) -> None:
        self._keys = self._values = self.keys = self.values = None
        self.is_initialized = False


class RunningBatch:
    """The hf backend's decoding batch: its shared prefix (length, tokens, keys and values), a
    slot per request (None: free), and the slots' caches (`SlotLayer`, one per model layer)."""

    def __init__(self, prefix: int, prefix_tokens: tuple[int, ...], shared, layers: int, limit: int):
        self.prefix, self.prefix_tokens, self.shared, self.limit = prefix, prefix_tokens, shared, limit
        self.cache = Cache(layers=[SlotLayer() for _ in range(layers)])
        self.layers: list[SlotLayer] = self.cache.layers
        self.rows: list[Row | None] = []

    def active(self) -> int:
        return sum(row is not None for row in self.rows)

    def takes(self, prompt: list[int]) -> bool:
        """Whether a prompt can join: it starts with the shared prefix and has a token after it."""
        return len(prompt) > self.prefix and tuple(prompt[: self.prefix]) == self.prefix_tokens

    def idle_share(self) -> float:
        return 1 - self.active() / len(self.rows)

    def place(self, rows: list[Row]) -> list[int]:
        """Slots for the newcomers (free ones first); each layer then reserves room() columns for them."""
        free = [slot for slot, row in enumerate(self.rows) if row is None]
        slots = []
        for row in rows:
            slot = free.pop(0) if free else len(self.rows)
            if slot == len(self.rows):
                self.rows.append(None)
            self.rows[slot] = row
            slots.append(slot)
        return slots

    def room(self) -> int:
        """The columns the rows in it need: each its own prompt tokens, what it generated and
        REPLY_ROOM more (at most max_tokens in all); a decoding step grows them when a reply needs more."""
        return max(len(row.prompt) - self.prefix + min(row.max_tokens, len(row.generated) + REPLY_ROOM)
                   for row in self.rows if row is not None)

    def compact(self) -> None:
        """Drop the free slots (their rows would still run through every decoding step) and the
        columns no row in it needs."""
        kept = [slot for slot, row in enumerate(self.rows) if row is not None]
        for layer in self.layers:
            layer.keep(kept, self.room())
        self.rows = [self.rows[slot] for slot in kept]

    def release(self) -> None:
        for layer in self.layers:
            layer.release()


@dataclass
class History:
    """A request's own tokens, the prompt's and those generated then fed back (`tokens` holds
    the whole sequence; its own part starts at `start`, the shared prefix's length at the
    time), and their keys and values per layer ([1, kv heads, own tokens, dim])."""

    tokens: tuple[int, ...]
    start: int
    layers: list[tuple[torch.Tensor, torch.Tensor] | None]

    def __len__(self) -> int:
        return len(self.tokens) - self.start

    def layer(self, index: int, count: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The first `count` own tokens' keys and values at layer `index` (None for none); the
        layer is then dropped from this history, so that a batch's loading frees as it goes."""
        if index >= len(self.layers):
            return None
        (keys, values), self.layers[index] = self.layers[index], None
        return (keys[:, :, :count], values[:, :, :count]) if count > 0 else None


class HistoryCache:
    """Finished requests' histories, at most `capacity` own tokens in all, least recently kept
    first out. A prompt takes the one that covers most of its own tokens (each is taken once:
    the prompt's own history, kept after its decoding, supersedes it)."""

    def __init__(self, capacity: int):
        self.capacity, self._size = capacity, 0
        self._kept: OrderedDict[int, History] = OrderedDict()
        self._ids = itertools.count()

    def take(self, prompt: list[int], start: int) -> History:
        """The kept history that covers most of prompt[start:-1] (the last token is always fed,
        for its logits), cut to what it covers; an empty History when none covers any."""
        prompt = tuple(prompt)
        best, covered = None, 0
        for key, history in self._kept.items():
            if history.start <= start:  # its keys and values begin at or before this prompt's own part
                shared = common_length(history.tokens, prompt, len(prompt) - 1) - start
                if shared > covered:
                    best, covered = key, shared
        if best is None:
            return History(prompt[:start], start, [])
        history = self._kept.pop(best)
        self._size -= len(history)
        cut = slice(start - history.start, start - history.start + covered)
        return History(prompt[: start + covered], start, [(k[:, :, cut], v[:, :, cut]) for k, v in history.layers])

    def put(self, history: History) -> None:
        if len(history) > self.capacity:
            return
        self._kept[next(self._ids)] = history
        self._size += len(history)
        while self._size > self.capacity:
            self._size -= len(self._kept.popitem(last=False)[1])

    def clear(self) -> None:
        self._kept.clear()
        self._size = 0


def common_length(a: tuple[int, ...], b: tuple[int, ...], limit: int) -> int:
    """How many leading tokens a and b share, at most `limit` (a binary search over slice
    comparisons: prefix equality holds up to some length and fails beyond it)."""
    low, high = 0, min(len(a), len(b), limit)
    while low < high:
        middle = (low + high + 1) // 2
        if a[:middle] == b[:middle]:
            low = middle
        else:
            high = middle - 1
    return low


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


AttentionInterface.register("fireact_shared_prefix", shared_prefix_attention)
AttentionMaskInterface.register("fireact_shared_prefix", sdpa_mask)


def map_large_blocks() -> None:
    """Set glibc's mmap threshold to MMAP_THRESHOLD_BYTES for this process, unless the user set
    MALLOC_MMAP_THRESHOLD_; nothing where the C library is not glibc."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is not None:
        mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)


def release_free_memory() -> None:
    """Have glibc give its heaps' free pages back (malloc_trim): the kept histories are blocks
    under the mmap threshold, and once dropped their pages stay resident, so that a process
    running rollout after rollout grew by their size each time (bench/NOTES.md, peak RSS);
    nothing where the C library is not glibc."""
    malloc_trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    if malloc_trim is not None:
        malloc_trim(0)


def _device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"backend.device must be auto, cpu, cuda or cuda:N, got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"backend.device={device!r} but torch sees no CUDA GPU here; use backend.device=cpu or auto")
    return torch.device(device)


def _dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        if device.type == "cpu":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch_dtype(dtype, "backend.dtype", also=("auto",))


def _model_path(path: str) -> str:
    path = resolve_model_path(str(path))
    if path.startswith(("/", ".", "~")):  # a local folder; hub ids never start this way
        folder = Path(path).expanduser()
        if not (folder / "config.json").exists():
            raise FileNotFoundError(
                f"model.path={path!r} is not a checkpoint folder (no config.json there); "
                f"set model.path to a folder written by save_pretrained or to a hub id"
            )
        return str(folder)
    return path


def _adapter_path(adapter: str | None) -> Path | None:
    if not adapter:
        return None
    folder = Path(str(adapter)).expanduser()
    if not (folder / "adapter_config.json").exists():
        raise FileNotFoundError(
            f"model.adapter={str(adapter)!r} is not a PEFT adapter folder (no adapter_config.json there); "
            f"set model.adapter to the folder written by `train` or to null for the base model"
        )
    return folder
