"""The one interface every LLM backend implements: a batch of prompts in, completions out.

A prompt is either a string (continued as raw text) or a list of chat messages
[{"role": ..., "content": ...}] (rendered with the model's chat template, or sent to a chat
API). Stop strings are honoured: the returned text ends before the first stop string.
A sampling backend takes one seed per prompt: the same prompt and seed give the same
completion whatever else is in the batch (up to float rounding), so a sampled trajectory can
be reproduced, or resumed, on its own.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Sequence, Union

Message = dict[str, str]
Prompt = Union[str, list[Message]]


@dataclass
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (stop string or end of sequence) or "length"
    error: str | None = None  # set when the request failed after every retry


class LLM(ABC):
    """Subclasses set `backend` and `model` (the names logged with every trajectory)."""

    backend: str
    model: str
    # How many generate calls the rollout may have running at once. 1: a local engine, which
    # batches what it is given (the rollout sends every ready request in one call); more: an API
    # backend that sends each prompt as its own request (the rollout sends one prompt per call).
    parallel_calls: int = 1

    @abstractmethod
    def generate(self, prompts: Sequence[Prompt], stop: Sequence[str] = (), max_tokens: int = 256,
                 seeds: Sequence[int] | None = None) -> list[Completion]:
        """One completion per prompt, in order; `seeds` (one per prompt) seed sampling."""

    def close(self) -> None:
        """Release engines, threads, connections."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Text up to the earliest stop string, and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def request_seed(*parts) -> int:
    """A 63-bit seed made from any parts (a run seed, a question id, a sample, a round), the
    same in every process: what makes one sampled request reproducible on its own."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1
