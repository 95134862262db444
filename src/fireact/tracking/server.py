"""A tracking server for a store, for the time of a with-block: the store's own URL when it is a
server, else `mlflow server` over it on a free loopback port (what the browser views of a local
store, fireact.tracking.compare_view, and the tests' tracking server run on)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

from fireact.child_server import HOST, free_port, serving


@contextmanager
def tracking_server(store_uri: str, artifact_root: Path | None = None) -> Iterator[str]:
    """The URL of a tracking server over store_uri (a server's URL as it is; a database or folder
    served on loopback until the block ends, its artifacts under artifact_root if given)."""
    if urlsplit(store_uri).scheme in ("http", "https"):
        yield store_uri.rstrip("/")
        return
    port = free_port()
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store_uri,
               "--host", HOST, "--port", str(port), "--workers", "1"]
    if artifact_root is not None:
        command += ["--default-artifact-root", str(artifact_root)]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # no background job workers
    with serving(command, f"http://{HOST}:{port}", env=env) as url:
        yield url
