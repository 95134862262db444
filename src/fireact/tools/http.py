"""JSON over httpx (GET, or POST of a JSON body) with bounded retries: the HTTP layer under the live tools.

Retried: 429 and 5xx (waiting what Retry-After says when the server sends it), timeouts
and connection errors. Waits grow as backoff * 2**attempt (at most max_backoff), without
jitter, and stop after max_retries retries or when the next wait would pass max_total_time
seconds since the first attempt; then a ToolError says what failed. Any other 4xx and a
body that is not JSON fail at once with a ToolError.

Secrets (an API key sent as a query parameter) are masked as *** in every message this
module raises and in httpx's own request log lines.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Iterable
from urllib.parse import quote, quote_plus

import httpx

from fireact.tools.base import ToolError


@dataclass
class Retry:
    max_retries: int = 4
    backoff: float = 1.0
    max_backoff: float = 30.0
    max_total_time: float = 120.0

    def backoff_wait(self, attempt: int) -> float:
        return min(self.max_backoff, self.backoff * 2**attempt)


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds from now: either a number of seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


class _MaskSecrets(logging.Filter):
    """Rewrites httpx's "HTTP Request: GET <url>" lines with the secrets masked."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            message = record.getMessage()
            masked = mask(message, self.secrets)
            if masked != message:
                record.msg, record.args = masked, ()
        return True


_log_mask = _MaskSecrets()
logging.getLogger("httpx").addFilter(_log_mask)


def mask(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        for form in {secret, quote(secret, safe=""), quote_plus(secret)}:
            text = text.replace(form, "***")
    return text


def _error_detail(response: httpx.Response) -> str:
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        error = None
    return str(error) if error else response.text[:200]


class JSONClient:
    """One thread-safe httpx client for one service; `get` returns the decoded JSON body."""

    def __init__(
        self,
        service: str,
        base_url: str,
        timeout: float,
        retry: Retry | None = None,
        headers: dict[str, str] | None = None,
        secrets: Iterable[str] = (),
    ) -> None:
        self.service = service
        self.timeout = timeout
        self.retry = retry or Retry()
        self.secrets = {secret for secret in secrets if secret}
        _log_mask.secrets |= self.secrets
        self.client = httpx.Client(base_url=base_url, timeout=timeout, headers=headers)

    def get(self, path: str, params: dict[str, Any]) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Any) -> Any:
        return self.request("POST", path, json=body)

    def request(self, method: str, path: str, **content: Any) -> Any:
        """The decoded JSON answer of `method path`, retried as the module says."""
        start = time.monotonic()
        attempt = 0
        while True:
            problem, retry_after, response = self._attempt(method, path, content)
            if response is not None:
                return self._decode(response)
            wait = retry_after if retry_after is not None else self.retry.backoff_wait(attempt)
            elapsed = time.monotonic() - start
            if attempt >= self.retry.max_retries or elapsed + wait > self.retry.max_total_time:
                raise ToolError(self.redact(
                    f"{self.service} request failed after {attempt + 1} attempts in {elapsed:.1f}s: {problem}"
                    + (f" (the server asked to wait {wait:.0f}s more)" if retry_after is not None else "")
                ))
            time.sleep(wait)
            attempt += 1

    def _attempt(self, method: str, path: str, content: dict[str, Any]) -> tuple[str, float | None, httpx.Response | None]:
        """(problem, Retry-After seconds, None) for a retryable failure, else ("", None, response)."""
        try:
            response = self.client.request(method, path, **content)
        except httpx.TimeoutException:
            return f"no answer within the {self.timeout}s timeout", None, None
        except httpx.TransportError as err:  # refused, reset, closed early
            return f"connection failed ({type(err).__name__})", None, None
        status = response.status_code
        if status == 429 or status >= 500:
            retry_after = retry_after_seconds(response.headers.get("Retry-After"))
            return f"HTTP {status} {_error_detail(response)}".strip(), retry_after, None
        if status >= 400:
            raise ToolError(self.redact(f"{self.service} refused the request with HTTP {status}: {_error_detail(response)}"))
        return "", None, response

    def _decode(self, response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            raise ToolError(self.redact(
                f"{self.service} answered HTTP {response.status_code} with a body that is not JSON: {response.text[:120]!r}"
            )) from None

    def redact(self, text: str) -> str:
        """`text` with this client's secrets masked."""
        return mask(text, self.secrets)

    def close(self) -> None:
        self.client.close()
