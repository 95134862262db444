"""Sharded fine-tuning for real, on 2 CPU processes over gloo, launched by Lightning from the Hydra
entry point: DDP, FSDP2, DeepSpeed ZeRO-2 and ZeRO-3, each with LoRA and with full fine-tuning,
against one process training the same examples per step (a batch twice as large). Per-step losses,
the exported weights and the exported model's greedy tokens agree; gradient clipping cuts in at
every step; a run resumed from its step-2 checkpoint ends where the uninterrupted one does.

On a tiny model built from a config by default (seconds a run); on SmolLM2-135M as slow tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from fireact.paths import REPO_ROOT
from fireact.train.run import train
from fireact.formats import Alpaca
from fireact.train.examples import build_example
from fireact.trajectory_files import write_jsonl
from tests.train.conftest import train_config

STRATEGIES = {
    "ddp": ["trainer=ddp"],
    "fsdp2": ["trainer=fsdp"],
    "zero2": ["trainer=deepspeed"],
    "zero3": ["trainer=deepspeed", "trainer.strategy.stage=3"],
    "zero3_offload": ["trainer=deepspeed", "trainer.strategy.stage=3", "trainer.strategy.offload_optimizer=true"],
}
FINETUNES = {  # no dropout: processes draw other random masks than one process would
    "lora": ["finetune=lora", "finetune.dropout=0", "optimizer.lr=1e-3"],
    "full": ["finetune=full", "optimizer.lr=1e-3"],
}
CLIP = 0.01  # below every step's gradient norm (checked), so the clip cuts in at every step
EXAMPLES = 8  # 4 optimizer steps of 2 examples
TOLERANCE = 1e-5  # relative: float32 sums taken in another order
# Weights, relative per tensor: SmolLM2's 30 layers (against the tiny model's 2) take longer sums, and
# LoRA's B matrices, zero at the start, are small after 4 steps (seen: 1.1e-5 on one).
WEIGHT_TOLERANCE = {"tiny": 1e-5, "smollm2": 5e-5}
MODELS = ["tiny", pytest.param("smollm2", marks=pytest.mark.slow)]


@pytest.fixture(scope="module")
def data(shortest, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sharded_data") / "train.jsonl"
    write_jsonl(path, shortest[:EXAMPLES])
    return path


def overrides(model: str, data: Path, *extra: str) -> list[str]:
    return [f"model.path={model}", f"data.path={data}", "data.limit=null", "data.max_length=160",
            "data.val_fraction=0", "trainer.enable_progress_bar=false", f"trainer.gradient_clip_val={CLIP}",
            "callbacks.checkpoint.every_n_train_steps=1", "callbacks.checkpoint.save_top_k=-1",
            "~tracker", "logger=csv", *extra]


def launch(out_dir: Path, args: list[str], **env: str) -> dict:
    """`python -m fireact.train` as a user runs it; Lightning starts the second process."""
    command = [sys.executable, "-m", "fireact.train", f"hydra.run.dir={out_dir}", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", **env}  # two processes on two cores
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=1800, env=env)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads((out_dir / "train_summary.json").read_text())


class GradientNorms(pl.Callback):
    """Each optimizer step's gradient norm before clipping (Lightning clips after this hook)."""

    def __init__(self):
        self.norms: list[float] = []

    def on_before_optimizer_step(self, trainer, module, optimizer):
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        self.norms.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))


def model_path_for(name: str, tiny_model_path: str, model_path: str) -> str:
    return tiny_model_path if name == "tiny" else model_path


@pytest.fixture(scope="module")
def one_process(data, tiny_model_path, model_path, tmp_path_factory):
    """The reference runs, one process with 2 examples a batch, made once per (model, finetune)."""
    runs: dict[tuple[str, str], tuple[Path, dict]] = {}

    def run(model: str, finetune: str) -> tuple[Path, dict]:
        if (model, finetune) not in runs:
            out = tmp_path_factory.mktemp(f"one_{model}_{finetune}")
            path = model_path_for(model, tiny_model_path, model_path)
            norms = GradientNorms()
            summary = train(train_config(out, data, *overrides(path, data, *FINETUNES[finetune], "data.batch_size=2")),
                            callbacks=[norms])
            assert len(norms.norms) == summary["optimizer_steps"] == EXAMPLES // 2
            assert min(norms.norms) > 3 * CLIP, norms.norms  # the clip cut every step's gradient
            runs[model, finetune] = out, summary
        return runs[model, finetune]

    return run


def exported_weights(run: Path) -> dict[str, torch.Tensor]:
    for name in ("adapter/adapter_model.safetensors", "model/model.safetensors"):
        if (run / name).exists():
            return load_file(run / name)
    raise FileNotFoundError(f"no exported weights under {run}")


def assert_same_weights(run: Path, reference: Path, tolerance: float = TOLERANCE) -> None:
    got, want = exported_weights(run), exported_weights(reference)
    assert got.keys() == want.keys()
    for name in want:
        difference = float((got[name] - want[name]).norm() / want[name].norm().clamp(min=1e-12))
        assert difference < tolerance, f"{name}: relative difference {difference:.2e}"


def greedy_tokens(run: Path, base: str, tokenizer) -> list[int]:
    """The exported model's greedy continuation, loaded as the hf backend loads it."""
    if (run / "adapter").exists():
        from peft import PeftModel

        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(run / "adapter"))
    else:
        model = AutoModelForCausalLM.from_pretrained(run / "model")
    inputs = tokenizer("Question: Which city is the capital of France?\nThought:", return_tensors="pt")
    with torch.inference_mode():
        out = model.eval().generate(**inputs, max_new_tokens=12, do_sample=False)
    return out[0, inputs["input_ids"].shape[1]:].tolist()


# Every strategy with each finetune; ZeRO-Offload (the optimizer stepped in CPU memory) with full only.
CASES = [(strategy, finetune) for strategy in STRATEGIES if strategy != "zero3_offload" for finetune in FINETUNES]
CASES.append(("zero3_offload", "full"))


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("strategy,finetune", CASES)
def test_two_processes_train_export_and_resume_as_one_process(strategy, finetune, model, one_process, data,
                                                              tiny_model_path, model_path, tokenizer, tmp_path):
    reference, expected = one_process(model, finetune)
    path = model_path_for(model, tiny_model_path, model_path)
    args = overrides(path, data, *FINETUNES[finetune], *STRATEGIES[strategy], "trainer.devices=2", "data.batch_size=1")

    run = launch(tmp_path / "run", args)
    assert run["world_size"] == 2 and run["optimizer_steps"] == expected["optimizer_steps"]
    assert run["losses"] == pytest.approx(expected["losses"], rel=TOLERANCE)
    assert_same_weights(tmp_path / "run", reference, WEIGHT_TOLERANCE[model])
    assert greedy_tokens(tmp_path / "run", path, tokenizer) == greedy_tokens(reference, path, tokenizer)

    checkpoint = tmp_path / "run" / "checkpoints" / "step-000002.ckpt"
    resumed = launch(tmp_path / "resumed", [*args, f"resume={checkpoint}"])
    assert resumed["optimizer_steps"] == expected["optimizer_steps"]
    assert resumed["losses"] == pytest.approx(expected["losses"][2:], rel=TOLERANCE)  # steps 3 and 4
    assert_same_weights(tmp_path / "resumed", reference, WEIGHT_TOLERANCE[model])


def test_clipping_changes_what_one_process_learns(one_process, data, tiny_model_path, tmp_path):
    """The reference's clip is not a no-op: without it the same run ends elsewhere (so the sharded
    runs, which end where the reference does, clip too)."""
    reference, _ = one_process("tiny", "full")
    train(train_config(tmp_path, data, *overrides(tiny_model_path, data, *FINETUNES["full"], "data.batch_size=2",
                                                  "trainer.gradient_clip_val=null")))
    with pytest.raises(AssertionError, match="relative difference"):
        assert_same_weights(tmp_path, reference)


def test_accumulated_batches_train_as_one_batch(one_process, data, shortest, tokenizer, tiny_model_path, tmp_path):
    """SFT's loss is the mean over the tokens of the whole optimizer step: 2 batches of one example
    accumulated take the step of one batch of two, though the examples differ in length (a mean of
    the two batches' means would not)."""
    reference, expected = one_process("tiny", "full")
    trained = {build_example(Alpaca().segments(t, tokenizer), False, None).trainable_tokens
               for t in shortest[:EXAMPLES]}
    assert len(trained) > 1
    accumulated = train(train_config(tmp_path, data, *overrides(tiny_model_path, data, *FINETUNES["full"],
                                                                "data.batch_size=1", "trainer.accumulate_grad_batches=2")))
    assert accumulated["optimizer_steps"] == expected["optimizer_steps"]
    assert accumulated["losses"] == pytest.approx(expected["losses"], rel=TOLERANCE)
    assert_same_weights(tmp_path, reference)


def test_a_sharded_run_is_tracked_once_in_mlflow(data, tiny_model_path, tmp_path):
    """tracker=mlflow and logger=mlflow (the defaults) under 2 processes: the first process's run gets
    the curves; the second process opens no run and does not fail (its logger once reached for a
    file store MLflow refuses)."""
    from mlflow import MlflowClient

    args = [f"model.path={tiny_model_path}", f"data.path={data}", "data.limit=null", "data.max_length=160",
            "data.val_fraction=0", "trainer.enable_progress_bar=false", "trainer=ddp", "data.batch_size=1",
            "experiment_name=sharded_tracked"]
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"  # its own: earlier tests move this process's tracking URI
    run = launch(tmp_path / "run", args, MLFLOW_TRACKING_URI=store)
    assert run["world_size"] == 2
    client = MlflowClient(tracking_uri=store)
    runs = client.search_runs([client.get_experiment_by_name("sharded_tracked").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert len(client.get_metric_history(runs[0].info.run_id, "train/loss")) == run["optimizer_steps"]
