"""The running batch of the hf backend: a slot per request, each layer's keys and values in slot
buffers (`SlotLayer`), requests joining and leaving between decoding steps."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Hashable

import torch
from transformers.cache_utils import Cache, DynamicLayer

# Columns a slot gets for its reply before the batch has to grow; a ReAct step (a thought and an
# action) usually fits. Reserving max_tokens for every row held columns that most rows never
# fill, in every layer (bench/NOTES.md, peak RSS).
REPLY_ROOM = 32


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
