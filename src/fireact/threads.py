"""How many threads a process of ours computes with: one rule, in one place.

An explicit `threads=N` (a key of every stage's config) wins. Otherwise a process takes its share
of the cores this process may run on among the fireact processes computing on the machine: each
registers itself while one of its stages computes (a file named by its pid in <cache>/processes,
removed when the stage ends and ignored once its process is gone), and its share is the cores
over how many are registered, at least 1. Torch's intra-op pool (and the BLAS under it) then uses that many threads. Torch takes
every core by default, so two of our processes side by side (an evaluation while a training
runs, a sweep's parallel jobs, the processes of a local DDP run) would each run twice the
threads the cores hold and spend their time waiting on one another.

A stage computes inside `computing` (registered, with its share, from its start to its end);
`refresh` re-reads the register at most every few seconds and is called by the long loops
(rollouts, training steps), so a process that started alone gives cores back when a second one
starts, and takes them again when it ends.
"""

from __future__ import annotations

import atexit
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fireact.paths import cache_dir

log = logging.getLogger(__name__)

REFRESH_SECONDS = 5.0  # how often a long loop re-reads the register


def register_dir() -> Path:
    return cache_dir() / "processes"


def cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. a container's or taskset's)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _start_time(pid: int) -> str | None:
    """When the process started (Linux: /proc's start time in clock ticks), so that a pid taken
    again by an unrelated process is not counted; None where /proc does not say."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22; the command name before ")" may hold spaces


def _alive(pid: int, started: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process of that pid: alive
        pass
    return started is None or _start_time(pid) in (None, started)


def running() -> int:
    """How many registered processes are alive (at least this one, once registered); stale
    registrations (a process killed before its exit hook ran) are removed."""
    alive = 0
    for entry in register_dir().glob("*.pid"):
        try:
            pid, started = int(entry.stem), entry.read_text().strip() or None
        except (OSError, ValueError):
            continue
        if _alive(pid, started):
            alive += 1
        else:
            entry.unlink(missing_ok=True)
    return alive


class _Share:
    """This process's registration, its explicit setting and the threads it set."""

    def __init__(self):
        self.registered: Path | None = None
        self.explicit: int | None = None
        self.threads: int | None = None
        self.checked = 0.0
        self.depth = 0  # stages computing (one inside another: the outer one owns the registration)

    def register(self) -> None:
        folder = register_dir()
        if self.registered is not None and self.registered.parent == folder and self.registered.exists():
            return
        self.unregister()  # a registration elsewhere (the cache folder moved) or one removed as stale
        folder.mkdir(parents=True, exist_ok=True)
        self.registered = folder / f"{os.getpid()}.pid"
        self.registered.write_text(_start_time(os.getpid()) or "")
        atexit.register(self.unregister)

    def unregister(self) -> None:
        if self.registered is not None:
            self.registered.unlink(missing_ok=True)
            self.registered = None

    def apply(self, threads: int, reason: str) -> int:
        """Compute with `threads`; said in the log when a stage starts and whenever it changes."""
        import torch  # here: the agents import this module, and an API-backed rollout needs no torch

        self.checked = time.monotonic()
        if threads != torch.get_num_threads() or self.threads is None:
            torch.set_num_threads(threads)
            log.info("computing with %d of %d cores: %s", threads, cores(), reason)
        self.threads = threads
        return threads


_this = _Share()


def share(threads: int | None = None) -> int:
    """Set and return this process's threads: `threads` when given (a stage's `threads=` key),
    else its share of the cores among the fireact processes running (registering this one)."""
    if threads is not None:
        if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
            raise ValueError(f"threads={threads!r}: give a whole number of at least 1, or null for this "
                             f"process's share of the {cores()} cores among the fireact processes running")
        _this.explicit = threads
        return _this.apply(threads, "threads= set")
    _this.explicit = None
    _this.register()
    processes = running()
    return _this.apply(max(1, cores() // max(processes, 1)), f"{processes} fireact process(es) running "
                                                                   f"(threads=N sets it)")


@contextmanager
def computing(threads: int | None = None) -> Iterator[int]:
    """A stage's computation: this process registered and computing with `share(threads)` inside,
    unregistered and back to the threads it had after (so an idle process, e.g. a notebook
    between two evaluations, takes no share of the cores)."""
    import torch

    before = torch.get_num_threads()
    _this.depth += 1
    try:
        yield share(threads) if _this.depth == 1 else _this.threads
    finally:
        _this.depth -= 1
        if _this.depth == 0:
            _this.unregister()
            _this.explicit = _this.threads = None
            torch.set_num_threads(before)


def refresh() -> None:
    """Take this process's share again if the register may have changed (at most every
    REFRESH_SECONDS); nothing under an explicit `threads=` or outside `computing`."""
    if _this.explicit is not None or _this.registered is None:
        return
    if time.monotonic() - _this.checked >= REFRESH_SECONDS:
        share()
