"""The OpenAI API, or any OpenAI-compatible server (`vllm serve`, a hosted endpoint) via base_url.

One request per prompt, `concurrency` requests in flight. String prompts go to the completions
endpoint when api="completions"; with api="chat" a string prompt is sent as one user message
(how the paper prompted GPT-4 with few-shot text). Message-list prompts always go to chat.

The SDK does the HTTP, the per-request timeout and the error classification; its own retries are
switched off (max_retries=0) because their waits are fixed module constants and it has no total
time budget. Here a prompt is retried on 429 (waiting as long as Retry-After says), 408, 5xx,
timeouts, connection errors and malformed response bodies, with exponential backoff, at most
`max_retries` times and never past `retry_budget_s`; after that its Completion carries `error`
(and `outage`: no result, the question runs again on a rerun) and the rest of the batch goes on;
once a request gives up on a broken connection the server is taken as down, and the requests
after it give up at once rather than each waiting out its retries. A refused prompt (another
4xx) is not retried and is a result. A wrong key, a forbidden or unknown model raise at once:
every prompt would fail the same way. `check_reachable` asks the server for its models once,
before any work, so a wrong URL or a server not started stops the run in a line. The rollout
sends one prompt per call, `concurrency` calls at once (`parallel_calls`), so a prompt being
retried holds no other question.

With `token_ids` (a vLLM server: `vllm serve`, started with `--logprobs-mode processed_logprobs`
for log-probabilities under the temperature) the backend is token in, token out like a local
engine: a TokenIds prompt goes to the completions endpoint as ids, the completion comes back with
the ids it sampled (`return_tokens_as_token_ids`) and their log-probabilities, and the server's
/tokenize and /detokenize endpoints encode and decode. The OpenAI API itself returns text.

The API key is read from the environment variable named by `api_key_env` (OPENAI_API_KEY by
default). A server on the loopback address needs none: a placeholder key is sent. The key is
kept out of reprs, logs and error texts.
"""

from __future__ import annotations

import email.utils
import json
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Mapping, Sequence
from urllib.parse import urlparse

import httpx
import openai

from fireact.errors import Unavailable
from fireact.llm.base import LLM, Completion, Prompt, TokenIds, cut_at_stop

log = logging.getLogger(__name__)

API_STOP_LIMIT = 4  # the OpenAI API accepts at most 4 stop strings; the rest are cut client-side
LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1"}
LOCAL_PLACEHOLDER_KEY = "EMPTY"
RETRY_STATUS = {408, 429}  # and every 5xx
FATAL_ERRORS = (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError)
CHECK_TIMEOUT_S = 10.0


class MalformedResponse(Exception):
    """A 200 answer whose body is not a completion (truncated JSON, no choices)."""


class OpenAIBackend(LLM):
    backend = "openai"
    speed_settings = ("concurrency", "timeout_s", "max_retries", "retry_budget_s", "backoff_initial_s", "backoff_max_s")

    def __init__(
        self,
        model: Mapping[str, Any],
        api: str = "chat",
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
        concurrency: int = 8,
        timeout_s: float = 60.0,
        max_retries: int = 6,
        retry_budget_s: float = 300.0,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 60.0,
        token_ids: bool = False,
    ):
        if api not in ("chat", "completions"):
            raise ValueError(f"backend.api={api!r} is not an OpenAI endpoint; use chat or completions")
        if concurrency < 1 or max_retries < 0:
            raise ValueError(f"backend.concurrency={concurrency} must be at least 1 and "
                             f"backend.max_retries={max_retries} at least 0")
        self.model = model["name"]
        self.model_id = model["path"]  # what the API is asked for: gpt-4-0613, ft:..., a served name
        self.api = api
        self.base_url = base_url
        self.sampling = {"temperature": temperature, "top_p": top_p}
        if seed is not None:
            self.sampling["seed"] = seed
        self.max_retries = max_retries
        self.retry_budget_s = retry_budget_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.api_key_env = api_key_env
        self._key = _api_key(api_key_env, base_url)
        self._client = openai.OpenAI(api_key=self._key, base_url=base_url, timeout=timeout_s, max_retries=0)
        if token_ids and not base_url:
            raise ValueError("backend.token_ids=true needs a vLLM server at backend.base_url: the OpenAI API "
                             "returns text, not the token ids it sampled")
        self.samples_tokens = token_ids
        # vLLM serves /tokenize and /detokenize beside /v1.
        self._tokens = httpx.Client(base_url=base_url.rstrip("/").removesuffix("/v1"), timeout=timeout_s,
                                    headers={"Authorization": f"Bearer {self._key}"}) if token_ids else None
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="openai")
        self.parallel_calls = concurrency
        self._fatal = threading.Event()
        self._down: str | None = None  # why the server is taken as down (a request gave up on its connection)

    @property
    def url(self) -> str:
        return self.base_url or "https://api.openai.com/v1"

    def check_reachable(self) -> None:
        """Raise Unavailable, naming the URL, unless the server answers HTTP (any status but a
        refused key: a server without a models endpoint still serves completions)."""
        try:
            self._client.with_options(timeout=CHECK_TIMEOUT_S).models.list()
        except (openai.AuthenticationError, openai.PermissionDeniedError) as err:
            raise RuntimeError(f"{self._hide_key(err)} (at {self.url}): check the API key in {self.api_key_env}") from None
        except openai.APIStatusError:
            pass
        except openai.APIConnectionError as err:
            raise Unavailable(
                f"the LLM server at {self.url} cannot be reached ({self._hide_key(_cause(err))}). Start it, or "
                f"point backend.base_url at a running one. Nothing was run."
            ) from None

    def __repr__(self) -> str:
        return f"OpenAIBackend(model={self.model_id!r}, api={self.api!r}, base_url={self.base_url!r})"

    def generate(self, prompts: Sequence[Prompt], stop: Sequence[str] = (), max_tokens: int = 256,
                 seeds: Sequence[int] | None = None) -> list[Completion]:
        stop = [s for s in stop if s]
        self._fatal.clear()
        seeds = list(seeds) if seeds is not None else [None] * len(prompts)
        futures = [self._pool.submit(self._complete, prompt, stop, max_tokens, seed) for prompt, seed in zip(prompts, seeds)]
        return [future.result() for future in futures]

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._client.close()
        if self._tokens is not None:
            self._tokens.close()

    def encode(self, prompt: Prompt, special_tokens: bool = True) -> list[int]:
        if not self.samples_tokens:
            return super().encode(prompt, special_tokens)
        if isinstance(prompt, TokenIds):
            return list(prompt)
        body = ({"prompt": prompt, "add_special_tokens": special_tokens} if isinstance(prompt, str)
                else {"messages": list(prompt), "add_generation_prompt": True})
        return self._tokens_call("/tokenize", body)["tokens"]

    def decode(self, ids) -> str:
        if not self.samples_tokens:
            return super().decode(ids)
        return self._tokens_call("/detokenize", {"tokens": list(ids)})["prompt"]

    def _tokens_call(self, path: str, body: dict) -> dict:
        response = self._tokens.post(path, json={"model": self.model_id, **body})
        if response.status_code != 200:
            raise RuntimeError(f"{self._tokens.base_url}{path} answered {response.status_code}: {response.text[:200]} "
                               f"(backend.token_ids=true needs a vLLM server)")
        return response.json()

    def _complete(self, prompt: Prompt, stop: list[str], max_tokens: int, seed: int | None = None) -> Completion:
        """One prompt, retried until it succeeds, fails for good, or the budget runs out."""
        request = {"model": self.model_id, "max_tokens": max_tokens, **self.sampling}
        if seed is not None and self.sampling["temperature"] > 0:
            request["seed"] = seed % 2**31  # the API's seed is a 32-bit integer
        if stop:
            request["stop"] = stop[:API_STOP_LIMIT]
        started, attempt = time.monotonic(), 0
        while True:
            if self._fatal.is_set():  # raised, not returned: no question is written as failed by it
                raise RuntimeError("not sent: an earlier request failed for good (see the first error)")
            if self._down is not None:
                return _failed(f"not sent: {self._down}", outage=True)
            try:
                return self._request(prompt, request, stop)
            except FATAL_ERRORS as err:
                self._fatal.set()
                raise RuntimeError(
                    f"{self._hide_key(err)} (model {self.model_id!r} at {self.base_url or 'api.openai.com'}): "
                    f"check the API key in {self.api_key_env}, model.path and backend.base_url"
                ) from None
            except (openai.APIError, MalformedResponse) as err:
                message = self._hide_key(err)
                wait = self._retry_wait(err, attempt)
                elapsed = time.monotonic() - started
                if wait is None or attempt == self.max_retries or elapsed + wait > self.retry_budget_s:
                    log.warning("%s: giving up after %d attempt(s), %.1fs: %s", self.model_id, attempt + 1,
                                elapsed, message)
                    error = f"{type(err).__name__}: {message} ({self.url})"
                    if isinstance(err, openai.APIConnectionError):
                        self._down = f"the server was down ({error})"
                    return _failed(error, outage=wait is not None)
                log.info("%s: %s; retry %d in %.2fs", self.model_id, message, attempt + 1, wait)
                time.sleep(wait)
                attempt += 1

    def _request(self, prompt: Prompt, request: dict, stop: list[str]) -> Completion:
        tokens = isinstance(prompt, TokenIds)
        chat = not tokens and not (isinstance(prompt, str) and self.api == "completions")
        try:
            if chat:
                messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
                response = self._client.chat.completions.create(messages=messages, **request)
            elif tokens:  # vLLM: the ids as the prompt, the sampled ids and their log-probabilities back
                response = self._client.completions.create(prompt=list(prompt), logprobs=0, **request,
                                                           extra_body={"return_tokens_as_token_ids": True})
            else:
                response = self._client.completions.create(prompt=prompt, **request)
        except json.JSONDecodeError as err:
            raise MalformedResponse(f"the server's answer is not JSON: {err}") from None
        if not response.choices:
            raise MalformedResponse(f"the server's answer has no choices: {str(response)[:200]}")
        choice = response.choices[0]
        text = (choice.message.content or "") if chat else choice.text
        text, cut = cut_at_stop(text, stop)
        usage = response.usage
        sampled = {}
        if tokens:
            if choice.logprobs is None or choice.logprobs.tokens is None:
                raise MalformedResponse("the server returned no token ids: backend.token_ids=true needs a vLLM server")
            sampled = {"token_ids": [int(t.removeprefix("token_id:")) for t in choice.logprobs.tokens],
                       "logprobs": list(choice.logprobs.token_logprobs)}
        return Completion(
            text=text,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            finish_reason="stop" if cut else ("length" if choice.finish_reason == "length" else "stop"),
            **sampled,
            stop=cut or _server_stop(choice),
        )

    def _retry_wait(self, err: openai.APIError | MalformedResponse, attempt: int) -> float | None:
        """Seconds to wait before retrying `err`, or None when retrying cannot help."""
        if isinstance(err, openai.APIStatusError):
            if err.status_code not in RETRY_STATUS and err.status_code < 500:
                return None
            retry_after = _retry_after_s(err.response.headers)
            if retry_after is not None:
                return retry_after
        elif not isinstance(err, (openai.APIConnectionError, openai.APIResponseValidationError, MalformedResponse)):
            return None  # neither a status, a broken connection nor a malformed body: a client-side bug
        return min(self.backoff_initial_s * 2**attempt, self.backoff_max_s)

    def _hide_key(self, err: BaseException) -> str:
        text = str(err) or type(err).__name__
        return text.replace(self._key, "***") if self._key != LOCAL_PLACEHOLDER_KEY else text


def _api_key(variable: str, base_url: str | None) -> str:
    key = os.environ.get(variable, "")
    if key:
        return key
    base_url = base_url or os.environ.get("OPENAI_BASE_URL")  # the SDK's own fallback
    if base_url and urlparse(base_url).hostname in LOOPBACK_HOSTS:
        return LOCAL_PLACEHOLDER_KEY  # a local server (vllm serve) checks no key unless told to
    raise ValueError(
        f"backend=openai needs an API key in the environment variable {variable} "
        f"(for {base_url or 'api.openai.com'}): export {variable}=... or name another variable with "
        f"backend.api_key_env=NAME; a server on 127.0.0.1/localhost needs none"
    )


def _retry_after_s(headers) -> float | None:
    """Retry-After (seconds or an HTTP date) or retry-after-ms, as seconds; None if absent."""
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            return max(float(ms) / 1000, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        parsed = email.utils.parsedate_tz(value)
        return max(email.utils.mktime_tz(parsed) - time.time(), 0.0) if parsed else None


def _server_stop(choice) -> str | None:
    """The stop string a server cut the text before: vLLM says it (`stop_reason`, an int for a stop
    token); the OpenAI API does not."""
    reason = getattr(choice, "stop_reason", None)
    return reason if isinstance(reason, str) else None


def _failed(error: str, outage: bool) -> Completion:
    return Completion(text="", prompt_tokens=0, completion_tokens=0, finish_reason="error", error=error, outage=outage)


def _cause(err: BaseException) -> BaseException:
    """The socket's own error under the SDK's "Connection error." (e.g. [Errno 111] Connection refused)."""
    while err.__cause__ is not None:
        err = err.__cause__
    return err
