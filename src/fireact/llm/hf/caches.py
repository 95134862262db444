"""The hf backend's key/value caches outside the running batch: a newcomers' forward buffer
(`BufferLayer`) and each finished request's own keys and values kept for a prompt that extends
it (`HistoryCache`)."""

from __future__ import annotations

import itertools
from collections import OrderedDict
from dataclasses import dataclass

import torch
from transformers.cache_utils import DynamicLayer


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
