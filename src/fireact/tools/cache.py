"""A persistent cache of tool calls, so that reruns replay exactly: SQLite in WAL mode.

A call's key is the SHA-256 of (tool name, tool.result_config(), action in lower case,
argument as given). The first observation stored for a key wins: threads or processes that
miss together all call the tool, and all return the observation stored first. ToolErrors
are not cached. Each thread has its own connection; SQLite's locks (WAL, a busy timeout)
serialise writers across threads and processes.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from fireact import paths
from fireact.tools.base import Tool

SCHEMA = """CREATE TABLE IF NOT EXISTS calls (
    key TEXT PRIMARY KEY, tool TEXT, config TEXT, action TEXT, argument TEXT, observation TEXT NOT NULL
)"""


def default_cache_path() -> Path:
    return paths.cache_dir() / "tool_calls.sqlite"


def call_key(tool: str, config: dict[str, Any], action: str, argument: str) -> str:
    identity = json.dumps([tool, config, action.lower(), argument], sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(identity.encode()).hexdigest()


class ToolCache:
    """key -> observation in one SQLite file, shared by threads and processes."""

    def __init__(self, path: str | Path, busy_timeout: float = 60.0) -> None:
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.busy_timeout = busy_timeout
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._connection()  # create the file and table now, so a bad path fails here

    def _connection(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._open()
            self._local.connection = connection
            with self._lock:
                self._connections.append(connection)
        return connection

    def _open(self) -> sqlite3.Connection:
        """A new connection in WAL mode with the table made.

        Switching a file to WAL takes an exclusive lock, and SQLite answers "database is locked"
        there without waiting on the busy timeout when other processes open the same new file at
        the same moment (a multirun's jobs starting together); so that step is retried until
        busy_timeout has passed.
        """
        deadline = time.monotonic() + self.busy_timeout
        while True:
            connection = None
            try:
                connection = sqlite3.connect(
                    self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
                )
                connection.execute("PRAGMA journal_mode=WAL")
                connection.execute("PRAGMA synchronous=NORMAL")  # WAL stays consistent; a power cut may drop the last calls
                connection.execute(SCHEMA)
                return connection
            except sqlite3.Error as err:
                if connection is not None:
                    connection.close()
                if "locked" in str(err) and time.monotonic() < deadline:
                    time.sleep(0.01)
                    continue
                raise RuntimeError(f"tool cache {self.path} cannot be opened ({err}); set tool.cache_path to a writable file") from err

    def get(self, key: str) -> str | None:
        row = self._connection().execute("SELECT observation FROM calls WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def put(self, key: str, observation: str, **about: str) -> str:
        """Store `observation` unless the key is there already; returns the stored one."""
        connection = self._connection()
        connection.execute(
            "INSERT OR IGNORE INTO calls (key, tool, config, action, argument, observation) VALUES (?, ?, ?, ?, ?, ?)",
            (key, about.get("tool"), about.get("config"), about.get("action"), about.get("argument"), observation),
        )
        stored = self.get(key)
        return observation if stored is None else stored

    def __len__(self) -> int:
        return self._connection().execute("SELECT COUNT(*) FROM calls").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            for connection in self._connections:
                connection.close()
            self._connections.clear()
        self._local = threading.local()


class CachedTool(Tool):
    """`tool` with every successful call stored in a ToolCache at `path`."""

    def __init__(self, tool: Tool, path: str | Path | None = None) -> None:
        self.tool = tool
        self.name = tool.name
        self.actions = tool.actions
        self.config = tool.result_config()
        self.cache = ToolCache(path or default_cache_path())

    def run(self, action: str, argument: str) -> str:
        key = call_key(self.name, self.config, action, argument)
        observation = self.cache.get(key)
        if observation is not None:
            return observation
        observation = self.tool.run(action, argument)  # a ToolError propagates, uncached
        return self.cache.put(
            key, observation, tool=self.name, config=json.dumps(self.config, sort_keys=True, default=str),
            action=action.lower(), argument=argument,
        )

    def new_episode(self, calls: Tool | None = None) -> Tool:
        return self.tool.new_episode(calls or self)

    def result_config(self) -> dict[str, Any]:
        return self.config

    def close(self) -> None:
        self.tool.close()
        self.cache.close()


def cached(tool: Tool, cache: bool = True, cache_path: str | None = None) -> Tool:
    """The tool the Hydra configs build: `tool` behind a CachedTool when `cache` is true."""
    return CachedTool(tool, cache_path) if cache else tool


cached.speed_settings = ("cache", "cache_path")  # a replayed call is the call (tool settings: Tool.speed_settings)
