"""How a stage stops when it cannot go on, and what the user is told (fireact.entry prints it).

Three kinds, each a line (or a short block) that says what is wrong and what to do, never a
traceback (HYDRA_FULL_ERROR=1 shows it):
- bad input: a ValueError or FileNotFoundError raised by fireact's own code (the convention: its
  message names the key, the value, what is allowed and the fix), and a run folder written under
  other settings (ConfigMismatch). Exit code 2; raised before anything is written.
- `Unavailable`: a service the stage needs cannot be reached (the tracking store, an LLM server).
  Exit code 3; what was written is kept.
- `Incomplete`: the stage ended with work left undone that a rerun does (questions whose backend
  could not answer). Exit code 3; the line says the command that resumes.
A ValueError raised outside fireact (a library, a bug) keeps its traceback: it is not a message
written for the user. Ctrl-C stops with exit code 130 and the command that resumes.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
BAD_INPUT_EXIT, UNAVAILABLE_EXIT, INTERRUPTED_EXIT = 2, 3, 130


class Unavailable(RuntimeError):
    """A service the stage needs cannot be reached; the message names it and the way out."""


class Incomplete(RuntimeError):
    """The stage stopped with work left that a rerun of the same command does."""


def exit_code(err: BaseException) -> int | None:
    """The exit code for an error the user is told in a line, or None for one that keeps its traceback."""
    from fireact.run_folder import ConfigMismatch  # fireact.run_folder imports nothing of this module's users

    if isinstance(err, (Unavailable, Incomplete)):
        return UNAVAILABLE_EXIT
    if isinstance(err, ConfigMismatch) or (isinstance(err, (ValueError, FileNotFoundError)) and raised_by_fireact(err)):
        return BAD_INPUT_EXIT
    return None


def raised_by_fireact(err: BaseException) -> bool:
    """Whether the innermost frame of err's traceback is in fireact's own code."""
    tb = err.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return Path(tb.tb_frame.f_code.co_filename).resolve().is_relative_to(PACKAGE_DIR)


def user_error(err: BaseException) -> BaseException:
    """The error a user made, out of Hydra's InstantiationException (raised when a config's
    `_target_` raises while it is built) around it."""
    from hydra.errors import InstantiationException

    while isinstance(err, InstantiationException) and err.__cause__ is not None:
        err = err.__cause__
    return err


def rerun_command() -> str:
    """The command line that started this process, to be run again to resume: this interpreter
    and `-m fireact.<stage>` with the arguments (an installed script: its name)."""
    from fireact.terminal import command

    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is None or not spec.name:  # fireact-evaluate ...
        return shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])
    return command(spec.name.removesuffix(".__main__"), *sys.argv[1:])
