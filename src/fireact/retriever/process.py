"""`python -m fireact.retriever` as a child process that is up when the block starts and gone when it
ends: what the bench, the tests and an experiment script start a retrieval server with.

    with serving(port=8000) as url:        # the offline corpus
        tool = RetrieverSearch(url=f"{url}/retrieve")
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

HOST = "127.0.0.1"


@contextmanager
def serving(port: int, corpus: str | Path | None = None, overrides: Sequence[str] = (),
            env: Mapping[str, str] | None = None, startup_s: float = 300.0) -> Iterator[str]:
    """The server's base URL (http://127.0.0.1:PORT) once it answers /health; RuntimeError with its
    output if it exits or does not answer within startup_s."""
    command = [sys.executable, "-m", "fireact.retriever", f"port={port}", *overrides]
    if corpus is not None:
        command.append(f"corpus={corpus}")
    process = subprocess.Popen(command, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    url = f"http://{HOST}:{port}"
    try:
        deadline = time.monotonic() + startup_s
        while not _healthy(url):
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"the retriever did not start ({' '.join(command)}):\n{process.stdout.read()[-3000:]}")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.TransportError:
        return False
