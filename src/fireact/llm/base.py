"""The one interface every LLM backend implements: a batch of prompts in, completions out, or a
stream of requests (`submit`, then `step` until each comes back).

A prompt is either a string (continued as raw text) or a list of chat messages
[{"role": ..., "content": ...}] (rendered with the model's chat template, or sent to a chat
API). Stop strings are honoured: the returned text ends before the first stop string.
A sampling backend takes one seed per prompt: the same prompt and seed give the same
completion whatever else is in the batch (up to float rounding), so a sampled trajectory can
be reproduced, or resumed, on its own.

The stream: `submit` starts one request and `step` advances the backend and returns the
requests that finished. A plain backend batches what was submitted into one `generate` call at
the next step; a continuously batching one (`ContinuousBatching`: hf, vllm) lets a request join
the requests already decoding, so no request waits for a batch to end.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Hashable, Sequence, Union

Message = dict[str, str]


class TokenIds(tuple):
    """A prompt given as the model's token ids, sent as they are (never detokenized and encoded
    again): how a rollout on a local engine continues what the policy sampled."""


Prompt = Union[str, list[Message], TokenIds]


@dataclass
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (stop string or end of sequence) or "length"
    error: str | None = None  # set when the request failed after every retry
    # With error: the backend could not be reached or could not answer (a broken connection, a
    # timeout, 429, 5xx) rather than refusing this prompt. An outage is no result: the rollout
    # leaves the question unwritten, so a rerun runs it.
    outage: bool = False
    # A token-level backend's (hf, vllm, a vLLM server): every token it sampled, through the one that completed a stop
    # string or the end-of-sequence token, so `text` is their decoding cut at the stop; and each
    # one's log-probability under the distribution it was drawn from (logits over the temperature,
    # before top-p; greedy: temperature 1). None from an API, which returns text.
    token_ids: list[int] | None = None
    logprobs: list[float] | None = field(default=None, compare=False)  # equal up to float rounding across batches
    # The stop string the text was cut before; None when the end of sequence or max_tokens ended
    # it, or an API does not say which (the OpenAI API; a vLLM server does).
    stop: str | None = None


class LLM(ABC):
    """Subclasses set `backend` and `model` (the names logged with every trajectory)."""

    backend: str
    model: str
    # How many generate calls the rollout may have running at once. 1: a local engine, which
    # batches what it is given (the rollout sends every ready request in one call); more: an API
    # backend that sends each prompt as its own request (the rollout sends one prompt per call).
    parallel_calls: int = 1
    # A backend with the model's tokenizer (`encode`, `decode`): hf, vllm, or openai against a vLLM
    # server with token_ids. It takes TokenIds prompts and returns the token ids it sampled, so a
    # rollout never tokenizes sampled text again.
    samples_tokens: bool = False
    # Settings (keys of the backend's config) that change a run's speed, placement or transport,
    # never what a trajectory holds: a run folder resumes under other values of them.
    speed_settings: tuple[str, ...] = ()

    def check_reachable(self) -> None:
        """Raise fireact.errors.Unavailable if the backend cannot answer (a server not started);
        called once before any work. A local engine, loaded already, answers."""

    def encode(self, prompt: Prompt, special_tokens: bool = True) -> list[int]:
        """The prompt's token ids, as the backend would feed them (chat messages through the chat
        template); special_tokens=False: a text continuation, with no BOS of its own."""
        raise NotImplementedError(f"backend {self.backend} returns text, not tokens")

    def decode(self, ids: Sequence[int]) -> str:
        """The text of token ids, special tokens included (what the model saw)."""
        raise NotImplementedError(f"backend {self.backend} returns text, not tokens")

    @abstractmethod
    def generate(self, prompts: Sequence[Prompt], stop: Sequence[str] = (), max_tokens: int = 256,
                 seeds: Sequence[int] | None = None) -> list[Completion]:
        """One completion per prompt, in order; `seeds` (one per prompt) seed sampling."""

    def submit(self, key: Hashable, prompt: Prompt, stop: Sequence[str] = (), max_tokens: int = 256,
               seed: int | None = None) -> None:
        """Start a request; its completion comes back from a later `step()` under `key`. Here it
        waits for the next step, which generates every waiting request in one `generate` call
        (one call per stop strings and max_tokens; the seeds go with it when each of its requests
        brought one, else the backend seeds the call itself)."""
        if not hasattr(self, "_submitted"):
            self._submitted = []
        self._submitted.append((key, prompt, tuple(stop), max_tokens, seed))

    def step(self) -> list[tuple[Hashable, Completion]]:
        """Advance the submitted requests; those that finished, as (key, completion)."""
        submitted, self._submitted = getattr(self, "_submitted", []), []
        finished = []
        for stop, max_tokens in dict.fromkeys((s, m) for _, _, s, m, _ in submitted):
            group = [r for r in submitted if r[2:4] == (stop, max_tokens)]
            seeds = [seed for *_, seed in group]
            completions = self.generate([prompt for _, prompt, *_ in group], stop=stop, max_tokens=max_tokens,
                                        seeds=None if None in seeds else seeds)
            finished += [(key, completion) for (key, *_), completion in zip(group, completions, strict=True)]
        return finished

    @property
    def running(self) -> int:
        """How many submitted requests have not come back from `step` yet."""
        return len(getattr(self, "_submitted", []))

    def close(self) -> None:
        """Release engines, threads, connections."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class ContinuousBatching(LLM):
    """A backend that batches continuously: it implements `submit`, `step` and `running`, a request
    joining the running batch at the next step; `generate` is submit-all, then step until all are back."""

    @abstractmethod
    def submit(self, key: Hashable, prompt: Prompt, stop: Sequence[str] = (), max_tokens: int = 256,
               seed: int | None = None) -> None: ...

    @abstractmethod
    def step(self) -> list[tuple[Hashable, Completion]]: ...

    @property
    @abstractmethod
    def running(self) -> int: ...

    def generate(self, prompts: Sequence[Prompt], stop: Sequence[str] = (), max_tokens: int = 256,
                 seeds: Sequence[int] | None = None) -> list[Completion]:
        if self.running:
            raise RuntimeError(f"{type(self).__name__}.generate while {self.running} submitted requests run: "
                               f"take them with step() first")
        seeds = list(seeds) if seeds is not None else [None] * len(prompts)
        for index, (prompt, seed) in enumerate(zip(prompts, seeds, strict=True)):
            self.submit(index, prompt, stop, max_tokens, seed)
        completions: dict[Hashable, Completion] = {}
        while self.running:
            completions.update(self.step())
        return [completions[i] for i in range(len(prompts))]


class LocalEngine(ContinuousBatching):
    """A continuously batching engine in this process that holds the model's tokenizer
    (`self.tokenizer`: hf, vllm), so it takes and returns token ids."""

    samples_tokens = True
    tokenizer: object

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
        return list(self.tokenizer.apply_chat_template(list(prompt), add_generation_prompt=True, return_dict=True)["input_ids"])

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, str | None]:
    """Text up to the earliest stop string, and that stop string (None if none is in it)."""
    found = [(i, s) for s in stop if s and (i := text.find(s)) >= 0]
    if not found:
        return text, None
    cut, string = min(found, key=lambda f: f[0])
    return text[:cut], string


def request_seed(*parts) -> int:
    """A 63-bit seed made from any parts (a run seed, a question id, a sample, a round), the
    same in every process: what makes one sampled request reproducible on its own."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1
