"""Slow: each objective run briefly from the small recipe's SFT model, its training signal rising.

The SFT model is FIREACT_SFT_MODEL (a full model folder, e.g. what `make small` trained) or, without
it, trained here with the CPU recipe (SmolLM2-135M, all 500 released HotpotQA ReAct trajectories,
2 epochs: about 24 min on 2 cores). The agent samples 4 trajectories on each of 40 training
questions, as it is evaluated (6 rounds of 128 tokens, temperature 0.7); DPO trains on its pairs,
RFT on its successes, GRPO online on 12 questions. Run with `make test-slow` (or pytest -m slow).
"""

import os
from pathlib import Path

import pytest

from fireact.generate import generate
from fireact.train.run import train

from ..conftest import compose_config

pytestmark = pytest.mark.slow

AS_EVALUATED = ["objective.rollout.method.max_rounds=6", "objective.rollout.method.max_tokens=128"]
TRAIN = ["finetune=full", "finetune.gradient_checkpointing=false", "~tracker", "logger=csv", "trainer.enable_progress_bar=false"]


@pytest.fixture(scope="module")
def sft_model(tmp_path_factory) -> str:
    if os.environ.get("FIREACT_SFT_MODEL"):
        return os.environ["FIREACT_SFT_MODEL"]
    out = tmp_path_factory.mktemp("sft")
    summary = train(compose_config("train", [*TRAIN, "data.limit=null", "optimizer.lr=1e-4", "trainer.max_epochs=2"], out))
    return summary["outputs"]["model"]


@pytest.fixture(scope="module")
def samples(sft_model, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("samples")
    generate(compose_config("generate", [
        f"model.path={sft_model}", "method.format=alpaca", "method.max_rounds=6", "method.max_tokens=128",
        "backend.temperature=0.7", "samples=4", "task.n=40", "~tracker", f"output_dir={out}",
    ], out))
    return out


def test_dpo_from_sft_orders_its_own_pairs(sft_model, samples, tmp_path):
    summary = train(compose_config("train", [
        *TRAIN, f"model.path={sft_model}", "objective=dpo", "data=preference", f"data.path={samples}",
        "optimizer.lr=1e-5", "trainer.max_epochs=1",
    ], tmp_path))
    assert summary["reward_accuracy_last"] > summary["reward_accuracy_first"]
    assert summary["val_reward_accuracy"] > 0.5


def test_rft_from_sft_fits_its_own_successes(sft_model, samples, tmp_path):
    summary = train(compose_config("train", [
        *TRAIN, f"model.path={sft_model}", f"data.path={samples}", "data.limit=null", "data.per_question=2",
        "optimizer.lr=5e-5", "trainer.max_epochs=2",
    ], tmp_path))
    assert summary["loss_last"] < summary["loss_first"]


def test_grpo_from_sft_raises_its_training_reward(sft_model, tmp_path):
    # 12 questions, 3 epochs: the reward on the same questions, first pass against last.
    summary = train(compose_config("train", [
        *TRAIN, f"model.path={sft_model}", "objective=grpo", "data=questions", *AS_EVALUATED, "data.task.n=12",
        "data.batch_size=4", "objective.group_size=4", "objective.rollout.temperature=0.7", "optimizer.lr=2e-5", "trainer.max_epochs=3",
        "finetune.gradient_checkpointing=true",  # 16 trajectories backpropagated at once
    ], tmp_path))
    rewards = [m["reward"] for m in summary["step_metrics"]]
    assert sum(rewards[-3:]) > sum(rewards[:3])
