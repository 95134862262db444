"""A run folder and the settings its results were written under, kept beside them as run_config.yaml.

`evaluate` and `generate` resume in their output folder. Resuming is only sound when the
questions still to run use the settings the written ones used, so the folder records the
result-relevant config (resolved, secrets left out) with its first trajectory, and a rerun
whose settings differ stops before any work, naming the folder, the differing keys and the
ways out. Left out of the record: where things are written and logged (BOOKKEEPING, for every
folder), and the keys the stage names as not changing what a result holds (`not_results`:
how many questions, batch sizes, workers, retries and timeouts), so `task.n=500` resumes a
`task.n=100` folder and `samples=8` a `samples=4` one.

    folder = RunFolder(out_dir, cfg, results=["trajectories.jsonl"], not_results=not_results(cfg))
    folder.check()     # before any work: ConfigMismatch if the folder was written otherwise
    folder.record()    # with the first result written: run_config.yaml (once)

A single run's folder is outputs/<entry point>/<folder_name(overrides)>: a slug of the overrides
that a shell and Hydra take unquoted, and a hash of them all (conf/hydra/default.yaml), so the
same command finds the same folder; outputs/<entry point>/latest links to the newest one.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from fireact.config_tree import dotted, resolved_config
from fireact.secrets import Redactor, is_secret_name

log = logging.getLogger(__name__)

RUN_CONFIG = "run_config.yaml"

# Dotted keys (and everything under them) of where a run writes and logs: never part of a result.
BOOKKEEPING = ("hydra", "paths", "tracker", "logger", "experiment_name", "output_dir", "resume")
_ABSENT = "<absent>"
SLUG_CHARS = 48
LATEST = "latest"


def folder_name(overrides: str) -> str:
    """A run folder's name for a command's overrides (Hydra's override_dirname, "k=v,k=v"): a
    readable slug of them (letters, digits and . _ -: "task.n-2_method-cot") cut at SLUG_CHARS,
    then a hash of them all; "default" for none."""
    if not overrides:
        return "default"
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", overrides.replace("=", "-").replace(",", "_"))
    slug = re.sub(r"-+", "-", re.sub(r"[-_]*_[-_]*", "_", slug)).strip("-_.")[:SLUG_CHARS].rstrip("-_.")
    return f"{slug}_{hashlib.sha256(overrides.encode()).hexdigest()[:6]}"


def link_latest(run_dir: str | Path) -> None:
    """Point <run_dir's parent>/latest at run_dir (replacing the link atomically)."""
    run_dir = Path(run_dir)
    link = run_dir.parent / LATEST
    if link.exists() and not link.is_symlink():
        return  # a folder of that name is someone's: left alone
    tmp = run_dir.parent / f".{LATEST}.{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(run_dir.name, target_is_directory=True)
    tmp.replace(link)


class ConfigMismatch(ValueError):
    """The output folder holds results written under other settings; raised before any work."""


def result_config(cfg: Mapping | Any, not_results: Sequence[str] = ()) -> dict[str, Any]:
    """The resolved config without BOOKKEEPING and `not_results` keys (dotted, with everything
    under them) and without secrets (secret-named entries dropped, secret values masked), as
    plain dicts and lists."""
    tree = resolved_config(cfg)
    redactor = Redactor.for_config(tree)
    return redactor.tree(_prune(tree, "", frozenset((*BOOKKEEPING, *not_results))))


def _prune(node: Any, prefix: str, left_out: frozenset[str]) -> Any:
    if isinstance(node, Mapping):
        kept = {}
        for key, value in node.items():
            name = f"{prefix}{key}"
            if name in left_out or is_secret_name(str(key)):
                continue
            kept[str(key)] = _prune(value, f"{name}.", left_out)
        return kept
    if isinstance(node, (list, tuple)):
        return [_prune(value, prefix, left_out) for value in node]
    return node


def differences(old: Mapping, new: Mapping) -> list[tuple[str, Any, Any]]:
    """(key, old value, new value) for each dotted key whose value differs; a key on one side
    only shows "<absent>" on the other."""
    before, after = dotted(old), dotted(new)
    return [
        (key, before.get(key, _ABSENT), after.get(key, _ABSENT))
        for key in sorted(before.keys() | after.keys())
        if before.get(key, _ABSENT) != after.get(key, _ABSENT)
    ]


class RunFolder:
    """An output folder whose `results` files (names inside it) were written under one config;
    `not_results`: the stage's keys that do not change a result (see the module doc)."""

    def __init__(self, out_dir: str | Path, cfg: Mapping | Any, results: Sequence[str], not_results: Sequence[str] = ()):
        self.out_dir = Path(out_dir)
        self.config = result_config(cfg, not_results)
        self.results = [self.out_dir / name for name in results]
        self.path = self.out_dir / RUN_CONFIG
        self._started = False

    def has_results(self) -> bool:
        return any(path.exists() and path.stat().st_size > 0 for path in self.results)

    def written_config(self) -> dict[str, Any] | None:
        if not self.path.exists():
            return None
        try:
            written = yaml.safe_load(self.path.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            raise ConfigMismatch(
                f"{self.path} is not valid YAML ({err}); it records the settings of the results in "
                f"{self.out_dir}. {self._fix()}"
            ) from err
        return written if isinstance(written, dict) else {}

    def check(self) -> None:
        """Raise ConfigMismatch if the folder holds results written under other settings."""
        if not self.has_results():
            return
        written = self.written_config()
        if written is None:
            log.warning(
                "%s holds results but no %s (written before settings were recorded): resuming without "
                "checking that they were written under the same settings", self.out_dir, RUN_CONFIG,
            )
            return
        changed = differences(written, self.config)
        if changed:
            lines = "\n".join(f"  {key}: {_show(old)} (in the folder) -> {_show(new)} (now)" for key, old, new in changed)
            raise ConfigMismatch(
                f"output folder {self.out_dir} holds results written under other settings (see {self.path}); "
                f"resuming there would mix two configurations in one result. Differing keys:\n{lines}\n"
                f"{self._fix()}"
            )

    def _fix(self) -> str:
        return (
            f"Fix: give this run a new folder (output_dir=NEW_FOLDER), delete {self.out_dir}, or pass "
            "resume=false to discard the results there and start afresh."
        )

    def record(self) -> None:
        """Write run_config.yaml unless the folder holds results with it already (atomic)."""
        if self.path.exists() and self.has_results():
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{RUN_CONFIG}.{os.getpid()}.tmp")
        tmp.write_text(yaml.safe_dump(self.config, sort_keys=False, allow_unicode=True), encoding="utf-8")
        tmp.replace(self.path)

    def before_first_result(self, fresh: bool, also: Sequence[str] = ()) -> None:
        """Call before writing each new result: the first time, a fresh run (resume=false) discards
        the old files (only now, so a run that fails before its first result loses nothing), and
        the settings are recorded."""
        if self._started:
            return
        if fresh:
            self.discard(also=also)
        self.record()
        self._started = True

    def discard(self, also: Sequence[str] = ()) -> None:
        """Remove the results, run_config.yaml and the named files (resume=false, once new work is ready)."""
        for path in [*self.results, self.path, *(self.out_dir / name for name in also)]:
            path.unlink(missing_ok=True)


def _show(value: Any) -> str:
    return value if value == _ABSENT else repr(value)
