"""`python -m fireact.<stage> --help`: the stage's own groups with their members, its keys with their
comments, examples; never another stage's groups (fireact.stage_help)."""

import subprocess
import sys

import pytest

from fireact.stage_help import stage_help

# stage: (groups it composes, groups it does not)
STAGES = {
    "evaluate": (["model", "backend", "method", "task", "tool", "noise"], ["finetune", "trainer", "objective", "improve"]),
    "train": (["model", "data", "format", "objective", "optimizer", "finetune", "trainer"], ["backend", "tool", "noise"]),
    "generate": (["model", "backend", "method", "task", "tool"], ["finetune", "trainer", "objective"]),
    "build_data": (["data_source", "task_mix", "method_mix"], ["backend", "finetune", "trainer"]),
    "pipeline": (["model", "lm", "data_source", "task_mix", "optimizer", "method", "improve"], ["finetune", "trainer"]),
}


@pytest.mark.parametrize("stage", list(STAGES))
def test_a_stage_help_lists_its_own_groups_and_keys(stage):
    text = stage_help(stage)
    rows = text.split("Groups")[1].split("Keys")[0].splitlines()[1:]
    groups = {row.split()[0] for row in rows if row.startswith("  ") and not row.startswith("   ")}
    ours, others = STAGES[stage]
    assert set(ours) <= groups and not groups & set(others), groups
    assert f"python -m fireact.{stage}" in text and "seed:" in text and "HYDRA_FULL_ERROR=1" in text


def test_help_from_the_command_line():
    done = subprocess.run([sys.executable, "-m", "fireact.evaluate", "--help"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Examples:" in done.stdout and "backend       hf*, openai, vllm" in done.stdout
    assert "in_flight: 64     # questions running at once" in done.stdout and "\n  finetune " not in done.stdout
