"""Fixtures for the training tests: the embedded model's tokenizer, small trajectory files,
and composed `train` configs sized for a few CPU steps."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from omegaconf import DictConfig

from fireact.llm.embedded import resolve_model_path
from fireact.train.datamodule import load_trajectories
from fireact.formats import Alpaca
from fireact.train.examples import build_example
from fireact.trajectory import Trajectory
from fireact.trajectory_files import write_jsonl
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from fireact.paths import CONF_DIR

RELEASED = "finetune/alpaca_format/hotpotqa.json"


@pytest.fixture(scope="session")
def model_path() -> str:
    return resolve_model_path("embedded:smollm2-135m-instruct")


@pytest.fixture(scope="session")
def tokenizer(model_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_path)


@pytest.fixture(scope="session")
def released() -> list[Trajectory]:
    return load_trajectories(RELEASED)


@pytest.fixture(scope="session")
def shortest(released, tokenizer) -> list[Trajectory]:
    """The released trajectories by Alpaca token length, shortest first (all under ~135 tokens
    for the first 16), so tests train on whole trajectories with max_length 160."""
    template = Alpaca()
    length = {id(t): len(build_example(template.segments(t, tokenizer), False, None).input_ids) for t in released}
    return sorted(released, key=lambda t: length[id(t)])[:16]


@pytest.fixture(scope="session")
def finals(shortest, released) -> list[Trajectory]:
    """Released trajectories cut to their final step (Thought, finish[...], its observation):
    ~60-70 tokens each, a real agent turn at the least cost for training tests."""
    return [replace(t, steps=t.steps[-1:]) for t in shortest]


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory, tokenizer) -> str:
    """A Llama-architecture model built from a config (2 layers of width 64, random weights seeded,
    tied embeddings as SmolLM2's) with the embedded model's tokenizer: trains in a fraction of a
    second a step, for tests that launch several processes."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny_llama")
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture
def write_trajectories(tmp_path):
    def write(trajectories: list[Trajectory], name: str = "train.jsonl") -> Path:
        path = tmp_path / "data" / name
        write_jsonl(path, trajectories)
        return path

    return write


def train_config(out_dir: Path, data_path: Path, *overrides: str) -> DictConfig:
    """The `train` config for a few quick CPU steps on `data_path`, plus `overrides`."""
    small = [
        f"data.path={data_path}",
        "data.limit=null",
        "data.max_length=160",
        "data.batch_size=2",
        "data.val_fraction=0",
        "trainer.enable_progress_bar=false",
        "callbacks.checkpoint.every_n_train_steps=1",
        "~tracker", "logger=csv",  # no MLflow run; the loss curve is read back from its metrics.csv
    ]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", [*small, *overrides, f"paths.output_dir={out_dir}"])
