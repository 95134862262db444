"""What the terminal shows: our progress bars, tables and log lines. Library chatter (Python
warnings, Lightning's tips and device lines, bm25s debug lines, bitsandbytes' kernel notes,
transformers' per-tensor loading bars) goes to the run's log file instead: Hydra's job log,
`<run folder>/<entry point>.log`, through the loggers that conf/hydra/default.yaml routes there.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path


def route_library_output() -> None:
    """Library warnings become records of the `py.warnings` logger (routed to the log file).
    bitsandbytes logs at import time, before an entry point has configured logging: a
    NullHandler keeps Python's last-resort handler from printing that to the terminal."""
    logging.captureWarnings(True)
    logging.getLogger("bitsandbytes").addHandler(logging.NullHandler())


def route_transformers() -> None:
    """transformers gives its root logger a terminal handler of its own when it is first
    imported (which may be after the entry point configured logging): drop it, leaving the
    handler the entry point's config gave the `transformers` logger (the log file). Called where
    fireact imports transformers."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_default_handler()


@contextlib.contextmanager
def transformers_bars_off(path: str | Path | None = None) -> Iterator[None]:
    """transformers' per-tensor progress bars off while a model loads from the local folder
    `path` or is saved (None). Loading from the hub keeps them: the download bars share the switch."""
    from transformers.utils import logging as transformers_logging

    quiet = path is None or Path(path).is_dir()
    if quiet:
        transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if quiet:
            transformers_logging.enable_progress_bar()
