import sqlite3
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from fireact.paths import REPO_ROOT
from fireact.tools.base import Tool, ToolError
from fireact.tools.cache import CachedTool, ToolCache, cached, default_cache_path


class Echo(Tool):
    """Answers with the argument and a tag; counts its calls; fails on arguments starting with "fail"."""

    name = "echo"

    def __init__(self, tag: str = "a", setting: int = 1) -> None:
        self.tag, self.setting = tag, setting
        self.calls = 0
        self._lock = threading.Lock()

    def run(self, action: str, argument: str) -> str:
        self.check_action(action)
        with self._lock:
            self.calls += 1
        if argument.startswith("fail"):
            raise ToolError(f"cannot answer {argument}")
        return f"{argument}:{self.tag}:{threading.get_ident()}"

    def result_config(self):
        return {"setting": self.setting}


def test_a_call_is_answered_once_then_replayed_from_disk(tmp_path):
    path = tmp_path / "calls.sqlite"
    tool = CachedTool(Echo("first"), path)
    observation = tool.run("search", "q")
    assert tool.run("Search", "q") == observation and tool.tool.calls == 1
    reopened = CachedTool(Echo("second"), path)
    assert reopened.run("search", "q") == observation and reopened.tool.calls == 0


def test_the_key_covers_action_argument_and_result_settings(tmp_path):
    path = tmp_path / "calls.sqlite"
    tool = CachedTool(Echo(), path)
    tool.run("search", "q")
    tool.run("search", "q ")
    assert tool.tool.calls == 2
    other_setting = CachedTool(Echo(setting=2), path)
    other_setting.run("search", "q")
    assert other_setting.tool.calls == 1
    assert len(tool.cache) == 3


def test_tool_errors_are_not_cached(tmp_path):
    tool = CachedTool(Echo(), tmp_path / "calls.sqlite")
    for _ in range(2):
        with pytest.raises(ToolError, match="cannot answer fail-1"):
            tool.run("search", "fail-1")
    with pytest.raises(ToolError, match="offers search"):
        tool.run("lookup", "q")
    assert tool.tool.calls == 2 and len(tool.cache) == 0


def test_the_database_is_in_wal_mode(tmp_path):
    CachedTool(Echo(), tmp_path / "calls.sqlite").run("search", "q")
    with sqlite3.connect(tmp_path / "calls.sqlite") as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_threads_writing_at_once_lose_nothing_and_agree_on_each_answer(tmp_path):
    tool = CachedTool(Echo(), tmp_path / "calls.sqlite")
    arguments = [f"q{i % 150}" for i in range(1200)]  # every key asked by 8 threads

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda argument: (argument, tool.run("search", argument)), arguments))
    by_argument: dict[str, set[str]] = {}
    for argument, observation in answers:
        by_argument.setdefault(argument, set()).add(observation)
    assert all(len(observations) == 1 for observations in by_argument.values())
    assert len(tool.cache) == 150
    tool.close()


# Processes announce themselves in a folder and wait for the others, so that they act at the
# same moment; one that never comes (it crashed) stops the wait within a minute.
START_TOGETHER = """
import sys
import time
from pathlib import Path

def start_together(folder, tag, count):
    (Path(folder) / f"ready-{tag}").touch()
    deadline = time.monotonic() + 60
    while len(list(Path(folder).glob("ready-*"))) < count:
        if time.monotonic() > deadline:
            sys.exit("the other processes never started")
        time.sleep(0.001)
"""

WRITER = START_TOGETHER + """
from concurrent.futures import ThreadPoolExecutor
from fireact.tools.base import Tool
from fireact.tools.cache import CachedTool

class Tagged(Tool):
    name = "echo"
    def run(self, action, argument):
        return f"{argument}:{sys.argv[2]}"
    def result_config(self):
        return {"setting": 1}  # the same settings as the test's Echo(), so it can replay these

tool = CachedTool(Tagged(), sys.argv[1])
start_together(Path(sys.argv[1]).parent, sys.argv[2], 2)
arguments = [f"own-{sys.argv[2]}-{i}" for i in range(300)] + [f"shared-{i}" for i in range(100)]
with ThreadPoolExecutor(max_workers=4) as pool:
    answers = list(pool.map(lambda argument: tool.run("search", argument), arguments))
print("\\n".join(answers[300:]))
"""

OPENER = START_TOGETHER + """
from fireact.tools.cache import ToolCache

start_together(sys.argv[1], sys.argv[2], 4)
for i in range(60):
    ToolCache(Path(sys.argv[1]) / f"calls-{i}.sqlite").close()
"""


def run_together(script: str, *argument_lists: list[str]) -> list[str]:
    processes = [
        subprocess.Popen([sys.executable, "-c", script, *arguments], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT)
        for arguments in argument_lists
    ]
    outputs = [process.communicate(timeout=300) for process in processes]
    assert [process.returncode for process in processes] == [0] * len(processes), [error for _, error in outputs]
    return [output for output, _ in outputs]


def test_processes_opening_a_new_cache_at_once_all_open_it(tmp_path):
    # Switching a new file to WAL answers "database is locked" at once, without the busy
    # timeout, to all but one of the processes that try together.
    run_together(OPENER, *[[str(tmp_path), f"p{k}"] for k in range(4)])
    for i in range(60):
        with sqlite3.connect(tmp_path / f"calls-{i}.sqlite") as connection:
            assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_two_processes_writing_at_once_lose_nothing(tmp_path):
    path = tmp_path / "calls.sqlite"
    shared = [output.splitlines() for output in run_together(WRITER, [str(path), "p1"], [str(path), "p2"])]
    cache = ToolCache(path)
    assert len(cache) == 700  # 300 own keys each and 100 shared
    assert shared[0] == shared[1]  # both processes return what was stored first
    replay = CachedTool(Echo(), path)
    assert [replay.run("search", f"shared-{i}") for i in range(100)] == shared[0]
    assert replay.run("search", "own-p2-299") == "own-p2-299:p2" and replay.tool.calls == 0


def test_cached_builds_the_wrapper_only_when_asked(tmp_path, monkeypatch):
    monkeypatch.setenv("FIREACT_CACHE_DIR", str(tmp_path / "cache"))
    tool = Echo()
    assert cached(tool, cache=False) is tool
    wrapped = cached(tool)
    assert isinstance(wrapped, CachedTool) and wrapped.cache.path == default_cache_path() == tmp_path / "cache" / "tool_calls.sqlite"
    assert wrapped.new_episode() is wrapped  # a stateless tool's episodes go through the cache


def test_an_unusable_path_is_a_clear_error(tmp_path):
    with pytest.raises(RuntimeError, match="cache_path"):
        ToolCache(tmp_path)  # a folder, not a file
