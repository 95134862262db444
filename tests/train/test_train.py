"""LoRA and full fine-tuning of the embedded model on CPU, the exports, resume, bad settings."""

import csv
import pytest
import pytorch_lightning as pl
import torch
from transformers import AutoModelForCausalLM

from fireact.formats import trained_format
from fireact.train.run import resolve_resume, train
from fireact.formats import ALPACA_HEADER
from tests.train.conftest import train_config


def greedy(model, tokenizer, question: str, tokens: int = 10) -> str:
    inputs = tokenizer(ALPACA_HEADER.format(question=question), return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=tokens, do_sample=False)
    return tokenizer.decode(out[0, inputs["input_ids"].shape[1]:])


def test_lora_loss_falls_and_adapter_changes_greedy_output(finals, tokenizer, model_path, write_trajectories, tmp_path):
    from peft import PeftModel

    out = tmp_path / "run"
    # One example: every step sees the same batch, so its loss must fall.
    cfg = train_config(out, write_trajectories(finals[:1]), "trainer.max_epochs=4", "data.batch_size=1",
                       "optimizer.lr=2e-3", "merge=true")
    summary = train(cfg)

    assert summary["optimizer_steps"] == 4 and summary["data"]["truncated"] == 0
    assert summary["losses"][-1] < summary["losses"][0] - 0.3
    with (out / "logs" / "version_0" / "metrics.csv").open() as f:
        logged = list(csv.DictReader(f))
    assert sum(bool(row["train/loss"]) for row in logged) == 4
    assert any(row["lr-AdamW"] for row in logged)

    # Loaded the way the hf backend loads model.path + model.adapter.
    question = finals[0].question
    base = AutoModelForCausalLM.from_pretrained(model_path)
    before = greedy(base, tokenizer, question)
    tuned = PeftModel.from_pretrained(base, str(out / "adapter")).merge_and_unload()
    after = greedy(tuned, tokenizer, question)
    assert after != before
    merged = AutoModelForCausalLM.from_pretrained(out / "merged")
    assert greedy(merged, tokenizer, question) == after
    assert (out / "adapter" / "tokenizer.json").exists() and (out / "merged" / "tokenizer.json").exists()
    # What evaluate's method.format=auto reads: the adapter and the merged model prompt as trained.
    assert trained_format(out / "adapter") == trained_format(out / "merged") == summary["format"] == "alpaca"


def test_full_finetune_loss_falls_and_saves_the_model(finals, tokenizer, write_trajectories, tmp_path):
    out = tmp_path / "run"
    cfg = train_config(out, write_trajectories(finals[:1]), "finetune=full", "trainer.max_epochs=3", "data.batch_size=1",
                       "optimizer.lr=1e-4", "~callbacks.checkpoint", "trainer.enable_checkpointing=false")
    summary = train(cfg)
    assert summary["optimizer_steps"] == 3
    assert summary["losses"][-1] < summary["losses"][0] - 0.3
    model = AutoModelForCausalLM.from_pretrained(out / "model")
    assert model.config.use_cache
    assert greedy(model, tokenizer, finals[0].question)


class CrashAt(pl.Callback):
    """Records each step's loss and raises after step `step`, as a killed job would stop."""

    def __init__(self, step: int):
        self.step = step
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, module, outputs, *args):
        self.losses.append(float(outputs["loss"]))
        if trainer.global_step == self.step:
            raise RuntimeError("simulated crash")


def test_interrupted_run_resumes_where_it_stopped(finals, write_trajectories, tmp_path):
    data = write_trajectories(finals[:3])
    # No dropout: the resumed step must compute exactly the loss the interrupted run did.
    overrides = ["trainer.max_epochs=1", "data.batch_size=1", "finetune.dropout=0", "callbacks.checkpoint.save_top_k=-1"]
    crashed = tmp_path / "crashed"
    crash = CrashAt(2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(train_config(crashed, data, *overrides), callbacks=[crash])
    assert (crashed / "checkpoints" / "last.ckpt").exists()
    assert (crashed / "checkpoints" / "last.ckpt").is_symlink()  # not a second copy of the (GB-sized) state
    step_1 = crashed / "checkpoints" / "step-000001.ckpt"

    resumed = train(train_config(tmp_path / "resumed", data, *overrides, f"resume={step_1}"))
    assert resumed["resumed_from"] == str(step_1)
    assert resumed["optimizer_steps"] == 3  # 3 examples / batch 1: steps 2 and 3 after step 1
    # Step 2 again: the second batch (not the first again), from the restored weights and optimizer.
    assert resumed["losses"][0] == pytest.approx(crash.losses[1], rel=1e-5)
    assert len(resumed["losses"]) == 2


def test_a_run_interrupted_twice_goes_on_from_its_newest_checkpoint(finals, write_trajectories, tmp_path):
    # Stopped before its first periodic checkpoint, a run saves step 1 and links last.ckpt to it; resumed,
    # Lightning links its later checkpoints as last-v1.ckpt beside that stale link. A second resume in
    # the same folder (the pipeline's way) must go on from step 3, not train steps 2 and 3 again.
    data = write_trajectories(finals[:4])
    overrides = ["trainer.max_epochs=1", "data.batch_size=1", "finetune.dropout=0",
                 "callbacks.checkpoint.every_n_train_steps=2"]
    run = tmp_path / "run"
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(train_config(run, data, *overrides), callbacks=[CrashAt(1)])
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(train_config(run, data, *overrides, "resume=true"), callbacks=[CrashAt(3)])
    assert sorted(path.name for path in (run / "checkpoints").glob("last*.ckpt")) == ["last-v1.ckpt", "last.ckpt"]

    resumed = train(train_config(run, data, *overrides, "resume=true"))
    assert resumed["resumed_from"] == str(run / "checkpoints" / "last-v1.ckpt")
    assert resumed["optimizer_steps"] == 4
    assert len(resumed["losses"]) == 1  # step 4 only


def test_resume_finds_the_last_checkpoint_of_a_run_folder(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert resolve_resume(True, run) == str(run / "checkpoints" / "last.ckpt")
    assert resolve_resume(str(run), tmp_path / "elsewhere") == str(run / "checkpoints" / "last.ckpt")
    assert resolve_resume(str(run / "checkpoints" / "last.ckpt"), run) == str(run / "checkpoints" / "last.ckpt")
    assert resolve_resume(False, run) is None


def test_resume_without_checkpoint_is_a_clear_error(shortest, write_trajectories, tmp_path):
    cfg = train_config(tmp_path / "fresh", write_trajectories(shortest[:2]), "resume=true")
    with pytest.raises(FileNotFoundError, match="no last.ckpt under .*fresh"):
        train(cfg)


def test_unknown_target_module_fails_before_training(shortest, write_trajectories, tmp_path):
    cfg = train_config(tmp_path / "run", write_trajectories(shortest[:2]), "finetune.target_modules=[q_proj,query_key_value]")
    with pytest.raises(ValueError, match=r"\['query_key_value'\].*its linear layers are .*gate_proj"):
        train(cfg)
    assert not (tmp_path / "run" / "logs").exists()
