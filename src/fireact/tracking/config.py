"""What a run records about its command: the resolved config as flat params, and tags."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Mapping
from typing import Any

from hydra.core.hydra_config import HydraConfig
from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_TAG_VAL_LENGTH
from omegaconf import DictConfig

from fireact.config_tree import dotted, resolved_config
from fireact.paths import REPO_ROOT
from fireact.secrets import Redactor

_TRUNCATED = "...[truncated]"


def flatten(tree: Mapping) -> dict[str, str]:
    """{"model": {"name": "x"}, "n": 5} -> {"model.name": "x", "n": "5"}: values as MLflow strings."""
    return {name: clip(_as_text(value), MAX_PARAM_VAL_LENGTH) for name, value in dotted(tree, _param_key).items()}


def _param_key(key: Any) -> str:
    # MLflow names allow letters, digits, _ - . / space and colon.
    return re.sub(r"[^\w.\-/ :]", "_", str(key))


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str)  # null, true, 0.5, ["a", "b"], {}


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - len(_TRUNCATED)] + _TRUNCATED


def hydra_runtime() -> DictConfig | None:
    """The running Hydra app's own config (`hydra.*`), or None outside one."""
    return HydraConfig.get() if HydraConfig.initialized() else None


def group_choices(hydra: DictConfig | None) -> dict[str, str]:
    """Which member of each config group was chosen: {"model": "llama2_7b", "noise": "clean", ...}.
    A group placed elsewhere ("noise@data.noise", the rollout data's) goes by where it is placed
    ("data/noise"): MLflow names have no "@"."""
    if hydra is None:
        return {}
    return {
        str(group).split("@")[-1].replace(".", "/"): str(choice)
        for group, choice in hydra.runtime.choices.items()
        if choice is not None and not str(group).startswith("hydra")
    }


def run_params(cfg: Mapping | DictConfig, redactor: Redactor, choices: bool = True) -> dict[str, str]:
    """The flattened, redacted config plus, with `choices`, each config group's chosen member under
    the group's name (the running Hydra app's: right for its own run, not for a stage the pipeline
    composed, whose run takes them from its parent in reports)."""
    params = flatten(redactor.tree(resolved_config(cfg)))
    for group, choice in (group_choices(hydra_runtime()) if choices else {}).items():
        params[group if group not in params else f"choice/{group}"] = redactor.text(choice)
    return params


def run_tags(stage: str, redactor: Redactor) -> dict[str, str]:
    """stage, git commit, the command's overrides, and where Hydra put the outputs."""
    tags = {"stage": stage, **git_state()}
    hydra = hydra_runtime()
    if hydra is not None:
        overrides = [redactor.override(o) for o in hydra.overrides.task]
        tags["overrides"] = clip(" ".join(overrides), MAX_TAG_VAL_LENGTH)
        tags["experiment"] = str(hydra.runtime.choices.get("experiment") or "")
        tags["hydra_output_dir"] = str(hydra.runtime.output_dir)
        if str(hydra.mode).endswith("MULTIRUN"):
            tags["hydra_sweep_dir"] = str(hydra.sweep.dir)
            tags["hydra_job_num"] = str(hydra.job.num)
    return {key: redactor.text(value) for key, value in tags.items()}


def git_state() -> dict[str, str]:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, timeout=20, check=True
        ).stdout.strip()

    try:
        return {"git_commit": git("rev-parse", "HEAD"), "git_dirty": str(bool(git("status", "--porcelain", "--untracked-files=no"))).lower()}
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": "unknown"}
