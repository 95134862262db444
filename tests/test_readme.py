"""The README's commands work as written, and the docs' relative links lead to files. Every
`.venv/bin/python -m fireact.<stage> ...` line of the README is composed as its stage's Hydra app
composes it (the groups exist, the keys exist, the values parse); the quick offline ones also run
for real, here; the long offline ones run in the `slow` tests. The rest need what this machine
lacks (a GPU, an API key, a server, a trained model): composing them is what can be checked.
`<...>` placeholders become a value of the same shape."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from fireact.paths import REPO_ROOT
from tests.conftest import compose_config

README = REPO_ROOT / "README.md"
PREFIX = ".venv/bin/python -m "
# Offline and quick: run in the default suite. Offline and long (a model loaded, questions run): slow.
QUICK = ("fireact.generate model=gpt4 backend=openai tool=serpapi", "fireact.build_data task_mix=hotpotqa",
         "fireact.rescore")
LONG = ("fireact.evaluate task.n=20", "fireact.evaluate method=cot task=strategyqa",
        "fireact.evaluate noise=none_obs")


def readme_commands() -> list[str]:
    lines = README.read_text(encoding="utf-8").splitlines()
    return [line.removeprefix(PREFIX) for line in lines if line.startswith(PREFIX)]


def argv(command: str) -> list[str]:
    filled = re.sub(r"<[^>]*>", "PLACEHOLDER", command)
    return [sys.executable, "-m", *shlex.split(filled)]


def run(command: list[str], cwd: Path, timeout: int) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "SERPAPI_API_KEY")}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_the_readme_has_commands_and_each_is_sorted_into_what_runs_here():
    commands = readme_commands()
    assert len(commands) >= 15
    for prefix in (*QUICK, *LONG):
        assert any(c.startswith(prefix) for c in commands), f"no README command starts with {prefix!r}"


def single_runs(args: list[str]) -> list[list[str]]:
    """A sweep (python -m fireact.X -m key=a,b,c) as single runs: each value of each swept key, the
    other keys at their first value."""
    start, args = args[:3], args[3:]
    if "-m" not in args:
        return [[*start, *args]]
    args = [a for a in args if a != "-m"]
    values = [re.split(r",(?![^\[]*\])", a.split("=", 1)[1]) if "=" in a else [None] for a in args]
    firsts = [a if v == [None] else f"{a.split('=', 1)[0]}={v[0]}" for a, v in zip(args, values)]
    return [[*start, *firsts[:i], f"{args[i].split('=', 1)[0]}={value}", *firsts[i + 1:]]
            for i, vs in enumerate(values) if len(vs) > 1 for value in vs]


@pytest.mark.parametrize("command", readme_commands())
def test_each_readme_command_composes(command):
    """As the stage's Hydra app composes it (in this process: no interpreter start per command)."""
    for _, _, module, *overrides in single_runs(argv(command)):
        compose_config(module.removeprefix("fireact."), overrides)


@pytest.mark.parametrize("command", [c for c in readme_commands() if c.startswith(QUICK)])
def test_the_quick_offline_readme_commands_run(command, tmp_path):
    done = run([*argv(command), "~tracker"], tmp_path, timeout=900)
    assert done.returncode == 0, f"{command}\n{done.stderr[-3000:]}"


@pytest.mark.slow
@pytest.mark.parametrize("command", [c for c in readme_commands() if c.startswith(LONG)])
def test_the_long_offline_readme_commands_run(command, tmp_path):
    done = run([*argv(command), "~tracker"], tmp_path, timeout=3600)
    assert done.returncode == 0, f"{command}\n{done.stderr[-3000:]}"


def test_every_relative_link_in_the_docs_names_a_file_that_exists():
    """The README, the docs and the experiment pages link each other, configs and figures by
    relative paths; a page moved or renamed must not leave a newcomer a dead link."""
    pages = [REPO_ROOT / path for path in subprocess.run(["git", "ls-files", "*.md"], cwd=REPO_ROOT, capture_output=True,
                                                          text=True, check=True).stdout.split()]
    dead = [f"{page.relative_to(REPO_ROOT)}: {target}" for page in pages
            for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8"))
            if not target.startswith(("http://", "https://", "mailto:")) and not (page.parent / target).exists()]
    assert len(pages) > 10 and dead == []
