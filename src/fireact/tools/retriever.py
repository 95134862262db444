"""search[query] against a retrieval server with Search-R1's API: `python -m fireact.retriever`, or
any Search-R1-compatible server a user already runs (Search-R1's retrieval_server.py, FlashRAG's).

    POST <url> {"queries": [...], "topk": k, "return_scores": true}
      -> {"result": [[{"document": {"id", "contents": "title\\ntext"}, "score": s}, ...], ...]}

The observation is the passages as Search-R1 shows them to its policy ("Doc 1(Title: t) text",
a line each); no passage is "None", as for the other search tools. Searches from concurrent
questions that arrive within `batch_window_s` of each other go to the server as one request (at
most `max_batch` queries), as Search-R1 batches a rollout step's searches. Timeouts, 429 and 5xx
are retried (fireact.tools.http); a reply that is not the API's shape is a ToolError. The
server's /info (ours: corpus hash, retriever, top-k) is the tool's result_config, so the call
cache and the run's record name the corpus the observations came from (a server without /info:
its URL).
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Any
from urllib.parse import urlsplit

from fireact.tools.base import EMPTY_QUERY, NO_RESULT, Tool, ToolError
from fireact.tools.http import JSONClient, Retry


def passages_text(hits: list[dict]) -> str:
    """Search-R1's rendering of a query's passages (its generation.py, _passages2string)."""
    lines = []
    for number, hit in enumerate(hits, start=1):
        contents = hit["document"]["contents"] if "document" in hit else hit["contents"]
        title, _, text = contents.partition("\n")
        lines.append(f"Doc {number}(Title: {title}) {text}")
    return "\n".join(lines)


class RetrieverSearch(Tool):
    name = "retriever"
    actions = ("search",)
    speed_settings = ("timeout", "retry", "batch_window_s", "max_batch")

    def __init__(self, url: str = "http://127.0.0.1:8000/retrieve", topk: int = 3, timeout: float = 30.0,
                 retry: Retry | None = None, batch_window_s: float = 0.01, max_batch: int = 64):
        if not isinstance(topk, int) or topk < 1:
            raise ValueError(f"tool.tool.topk={topk!r}: the passages a search returns must be an integer >= 1")
        if max_batch < 1 or batch_window_s < 0:
            raise ValueError(f"tool.tool.max_batch={max_batch} must be >= 1 and tool.tool.batch_window_s="
                             f"{batch_window_s} >= 0")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"tool.tool.url={url!r} is not an http(s) URL; e.g. http://127.0.0.1:8000/retrieve "
                             f"(start a server with python -m fireact.retriever)")
        self.url, self.topk = url, topk
        self.http = JSONClient("retriever", f"{parts.scheme}://{parts.netloc}", timeout, retry)
        self.path = parts.path or "/retrieve"
        self.batch_window_s, self.max_batch = batch_window_s, max_batch
        self._lock = threading.Lock()
        self._waiting: list[tuple[str, Future]] = []
        self._timer: threading.Timer | None = None
        self.server = self._server_info()

    def _server_info(self) -> dict[str, Any]:
        """The server's /info (our server's corpus and retriever), or {} from a server without it."""
        try:
            info = self.http.client.get(self.path.rsplit("/", 1)[0] + "/info", timeout=5.0)
        except Exception:  # noqa: BLE001 - a server that is down fails on the first search, with retries
            return {}
        return info.json() if info.status_code == 200 and "json" in info.headers.get("content-type", "") else {}

    def run(self, action: str, argument: str) -> str:
        self.check_action(action)
        query = " ".join(argument.split())
        if not query:
            return EMPTY_QUERY
        hits = self._submit(query).result()
        return passages_text(hits) if hits else NO_RESULT

    def result_config(self) -> dict[str, Any]:
        """The server's corpus and retriever when it names them (ours does: the same corpus answers
        the same on any port), else its URL."""
        server = {k: self.server[k] for k in ("corpus_hash", "retriever") if k in self.server}
        return {"topk": self.topk, **(server or {"url": self.url})}

    # --- batching ------------------------------------------------------------------------
    def _submit(self, query: str) -> Future:
        future: Future = Future()
        with self._lock:
            self._waiting.append((query, future))
            if len(self._waiting) >= self.max_batch:
                batch = self._take()
            else:
                batch = None
                if self._timer is None:
                    self._timer = threading.Timer(self.batch_window_s, self._send_waiting)
                    self._timer.daemon = True
                    self._timer.start()
        if batch:
            self._send(batch)
        return future

    def _take(self) -> list[tuple[str, Future]]:
        """The waiting searches (called holding the lock)."""
        batch, self._waiting = self._waiting, []
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        return batch

    def _send_waiting(self) -> None:
        with self._lock:
            batch = self._take()
        if batch:
            self._send(batch)

    def _send(self, batch: list[tuple[str, Future]]) -> None:
        queries = [query for query, _ in batch]
        try:
            result = self.http.post(self.path, {"queries": queries, "topk": self.topk, "return_scores": True})
            found = _result_lists(result, len(queries))
        except Exception as err:  # noqa: BLE001 - every search in the batch gets the same error
            error = err if isinstance(err, ToolError) else ToolError(f"retriever: {type(err).__name__}: {err}")
            for _, future in batch:
                future.set_exception(error)
            return
        for (_, future), hits in zip(batch, found):
            future.set_result(hits)

    def close(self) -> None:
        with self._lock:
            batch = self._take()
        if batch:
            self._send(batch)
        self.http.close()


def _result_lists(result: Any, n: int) -> list[list[dict]]:
    """The answer's per-query passage lists, checked against the API's shape."""
    lists = result.get("result") if isinstance(result, dict) else None
    if not isinstance(lists, list) or len(lists) != n:
        raise ToolError(f"retriever answered {str(result)[:160]!r}, not {{\"result\": [...]}} with one list "
                        f"per query ({n})")
    for hits in lists:
        if not isinstance(hits, list) or not all(
                isinstance(hit, dict) and isinstance(hit.get("document", hit).get("contents"), str) for hit in hits):
            raise ToolError(f"retriever answered a passage list that is not [{{\"document\": {{\"contents\": ...}}}}]: "
                            f"{str(hits)[:160]!r}")
    return lists
