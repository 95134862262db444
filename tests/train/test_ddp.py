"""Multi-process training for real: DDP over 2 CPU processes (gloo), launched by Lightning
from the Hydra entry point, takes the optimizer steps of 1 process with twice the accumulation."""

import json
import subprocess
import sys

import pytest

from fireact.paths import REPO_ROOT


def run_entry_point(out_dir, *overrides) -> dict:
    command = [sys.executable, "-m", "fireact.train", f"hydra.run.dir={out_dir}", *overrides]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out_dir / "train_summary.json").read_text())


@pytest.mark.slow
def test_ddp_two_processes_take_the_steps_of_one_with_double_accumulation(shortest, write_trajectories, tmp_path):
    data = write_trajectories(shortest[:4])
    common = [f"data.path={data}", "data.limit=null", "data.max_length=160", "data.batch_size=1",
              "data.val_fraction=0", "trainer.enable_progress_bar=false", "trainer.max_epochs=1"]

    single = run_entry_point(tmp_path / "one", *common, "trainer=cpu", "trainer.accumulate_grad_batches=2")
    ddp = run_entry_point(tmp_path / "ddp", *common, "trainer=ddp", "trainer.devices=2",
                          "trainer.accumulate_grad_batches=1")

    assert single["world_size"] == 1 and ddp["world_size"] == 2
    # 4 examples: one process, 4 batches / 2 accumulated = 2 steps; DDP, 2 batches per
    # process = 2 steps (4 if each process saw all the data instead of its half).
    assert single["optimizer_steps"] == ddp["optimizer_steps"] == 2
    assert len(ddp["losses"]) == 2  # rank 0 trained on its half: 2 batches
    assert (tmp_path / "ddp" / "adapter" / "adapter_model.safetensors").exists()
