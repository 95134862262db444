"""A server run as a child process for the time of a with-block: it answers GET /health when the
block starts and is gone, with the processes it started, when the block ends. The retrieval server
(fireact.retriever.process) and the MLflow server behind the browser views
(fireact.tracking.server) are started this way.

    with serving([sys.executable, "-m", "some.server", "--port", "8000"], "http://127.0.0.1:8000") as url:
        ...
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

HOST = "127.0.0.1"
# A readiness wait, not a speed limit: a server takes seconds alone, minutes on a busy 2-core machine.
STARTUP_S = 300.0


def free_port() -> int:
    """A loopback port no process listens on now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


@contextmanager
def serving(command: Sequence[str], url: str, env: Mapping[str, str] | None = None,
            startup_s: float = STARTUP_S, log_file: Path | None = None) -> Iterator[str]:
    """`url` once url/health answers 200, with `command` running until the block ends; RuntimeError
    with the command's last output if it exits or does not answer within startup_s. Its output goes
    to log_file, else to a temporary file: a pipe nobody reads would stall a server that logs every
    request."""
    with (open(log_file, "w+") if log_file is not None else tempfile.TemporaryFile("w+")) as output:
        process = subprocess.Popen(list(command), env=dict(env) if env is not None else None, stdout=output,
                                   stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            deadline = time.monotonic() + startup_s
            while not healthy(url):
                if process.poll() is not None or time.monotonic() > deadline:
                    output.seek(0)
                    why = f"exited with {process.returncode}" if process.poll() is not None else \
                        f"did not answer {url}/health in {startup_s:.0f} s"
                    where = f"; its output: {log_file}" if log_file is not None else ""
                    raise RuntimeError(f"the server {why} ({' '.join(command)}{where}):\n{output.read()[-3000:]}")
                time.sleep(0.2)
            yield url
        finally:
            stop(process)


def healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def stop(process: subprocess.Popen) -> None:
    """SIGTERM to the server's process group (a server may run workers of its own), SIGKILL after 60 s."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:  # the whole group has exited already
        return
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
