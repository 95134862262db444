"""What the stages print their tables and paths with: `show`; and the command a stage's last line
names, to run next (`next_command`) or to resume (fireact.errors).

Tables fit the terminal by folding what does not fit inside its cell, never by cutting a value
short or dropping a column; when the output is not a terminal (a log file, a pipe, a test) they
are as wide as they need. Text is shown as written: paths hold brackets ("paths=[a.jsonl]")
that Rich would otherwise read as markup.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from rich.console import Console, RenderableType
from rich.table import Table

PIPE_WIDTH = 240  # the width when the output is not a terminal: wide enough for every table here


def console() -> Console:
    return Console(width=None if sys.stdout.isatty() else PIPE_WIDTH, markup=False, highlight=False)


def show(*renderables: RenderableType | str, to: Console | None = None) -> None:
    """Print tables (every column folding) and text, one after another."""
    for renderable in renderables:
        if isinstance(renderable, Table):
            for column in renderable.columns:
                column.overflow, column.no_wrap = "fold", False
    (to or console()).print(*renderables)


def shown_path(path: str | Path) -> str:
    """A path as a user would type it: relative to the working folder when inside it."""
    path = Path(path)
    return str(path.relative_to(Path.cwd())) if path.is_absolute() and path.is_relative_to(Path.cwd()) else str(path)


def command(module: str, *args: str) -> str:
    """The shell command that runs `python -m <module> args` with this interpreter."""
    return shlex.join([shown_path(sys.executable), "-m", module, *args])
