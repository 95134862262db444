"""`python -m fireact.retriever` as a child process that is up when the block starts and gone when it
ends: what the bench, the tests and an experiment start a retrieval server with.

    with serving(port=8000) as url:        # the offline corpus
        tool = RetrieverSearch(url=f"{url}/retrieve")

From a shell (the make targets of the experiments that search a corpus), a command run while the
server is up, its exit status returned:

    python -m fireact.retriever.process --port 8000 [--corpus FILE] -- python -m fireact.pipeline ...
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from fireact.child_server import HOST, STARTUP_S, serving as serving_command


@contextmanager
def serving(port: int, corpus: str | Path | None = None, overrides: Sequence[str] = (),
            env: Mapping[str, str] | None = None, startup_s: float = STARTUP_S) -> Iterator[str]:
    """The server's base URL (http://127.0.0.1:PORT) once it answers /health; RuntimeError with its
    output if it exits or does not answer within startup_s."""
    command = [sys.executable, "-m", "fireact.retriever", f"port={port}", *overrides]
    if corpus is not None:
        command.append(f"corpus={corpus}")
    with serving_command(command, f"http://{HOST}:{port}", env={**os.environ, **(env or {})}, startup_s=startup_s) as url:
        yield url


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fireact.retriever.process",
                                     description="Run a command while a retrieval server is up.")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--corpus", default=None, help="a JSONL corpus (default: the offline corpus)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to run after --")
    with serving(args.port, args.corpus or None) as url:
        print(f"retriever up at {url}/retrieve", flush=True)
        return subprocess.call(command)


if __name__ == "__main__":
    sys.exit(main())
