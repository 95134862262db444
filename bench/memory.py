"""The memory of the bench's processes, read from /proc (Linux).

Peak RSS is the kernel's high-water mark of this process's own resident pages (VmHWM).
getrusage's ru_maxrss is not that in a child: Linux carries the parent's high-water mark over
fork and exec into it, so a process spawned by one holding 2.5 GB reports 2.5 GB at least
(bench/NOTES.md, "Peak RSS of a spawned process").
"""

from __future__ import annotations

import os
import resource
import threading
from pathlib import Path


def peak_rss_gb() -> float:
    """The highest resident size this process has had, in GiB (VmHWM)."""
    return _status_kib("VmHWM") / 2**20


def resident_bytes() -> int:
    """This process's resident bytes now."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field} line: the bench measures memory on Linux only")


class ChildMemory(threading.Thread):
    """Samples, every `every` seconds, the summed proportional set size (PSS: a page shared by n
    processes counts 1/n in each) of this process's descendants, i.e. vLLM's engine core and
    worker, and keeps the peak. RSS would count pages they share with this process (forked)."""

    def __init__(self, every: float = 0.5):
        super().__init__(daemon=True)
        self.every, self.peak_bytes, self._done = every, 0, threading.Event()

    def run(self) -> None:
        while not self._done.wait(self.every):
            self.peak_bytes = max(self.peak_bytes, sum(map(_pss, _descendants(os.getpid()))))

    def stop(self) -> float:
        self._done.set()
        self.join()
        return self.peak_bytes / 2**30


def _descendants(pid: int) -> list[int]:
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        found += (kids := children.get(todo.pop(), []))
        todo += kids
    return found


def _pss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
