"""The hf backend itself: loading, the request queue, prefill and decoding steps, completions
(the package doc says how it decodes)."""

from __future__ import annotations

import copy
import os
from collections import OrderedDict, deque
from collections.abc import Mapping
from pathlib import Path
from typing import Hashable, Sequence

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache, StopStringCriteria
from transformers.cache_utils import Cache

from fireact.dtypes import torch_dtype
from fireact.llm.base import Completion, LocalEngine, Prompt, cut_at_stop, request_seed
from fireact.llm.embedded import resolve_model_path
from fireact.llm.hf.attention import SHARED_PREFIX_ATTENTION, register_attention
from fireact.llm.hf.batch import Row, RunningBatch
from fireact.llm.hf.caches import BufferLayer, History, HistoryCache
from fireact.llm.hf.memory import map_large_blocks, release_free_memory
from fireact.logs import route_transformers, transformers_bars_off

route_transformers()

# A common prefix shorter than this is not worth a cache entry (the suffixes are encoded anyway).
MIN_SHARED_PREFIX = 32


class HFBackend(LocalEngine):
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
    speed_settings = ("device", "batch_size", "prefix_cache_size", "history_cache_tokens")

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
        register_attention()
        self.lm.set_attn_implementation(SHARED_PREFIX_ATTENTION)  # sdpa, but a shared prefix is kept once
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
            return Completion(text, prompt_tokens, end, "stop", **sampled, stop=stopped)
        if end < len(tokens):  # an end-of-sequence token, counted as generated
            return Completion(text, prompt_tokens, end + 1, "stop", **sampled)
        return Completion(text, prompt_tokens, len(tokens), "length", **sampled)


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
