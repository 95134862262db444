"""A real MLflow tracking server on loopback (one per test session) and Hydra-composed configs."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from fireact.paths import CONF_DIR
from fireact.tracking.server import tracking_server


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory) -> str:
    """`mlflow server` with a SQLite store on 127.0.0.1 for the whole session; yields its URI."""
    root = tmp_path_factory.mktemp("mlflow-server")
    with tracking_server(f"sqlite:///{root / 'mlflow.db'}", artifact_root=root / "artifacts") as uri:
        yield uri


@pytest.fixture
def tracking_uri(mlflow_server, monkeypatch) -> str:
    """MLFLOW_TRACKING_URI pointing at the test server for one test."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    mlflow.set_tracking_uri(mlflow_server)
    return mlflow_server


def compose_config(config_name: str, overrides: list[str], out_dir: Path) -> DictConfig:
    """The config an entry point would see for `overrides`, Hydra's runtime info included."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=list(overrides), return_hydra_config=True)
    OmegaConf.set_readonly(cfg.hydra, False)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(out_dir)
    HydraConfig.instance().set_config(cfg)
    return cfg


@pytest.fixture
def compose_cfg(tmp_path):
    def _compose(config_name: str, *overrides: str) -> DictConfig:
        return compose_config(config_name, list(overrides), out_dir=tmp_path / "out")

    yield _compose
    GlobalHydra.instance().clear()


RELEASED_7B = "trajs/hotpotqa_dev_0_500_llama_models_lora_llama-2-7b-d_1000_0.7_2023-09-19-00-49-36.json"


@pytest.fixture(scope="session")
def released_7b():
    """The released Llama-2-7B evaluation trajectories (500 questions), read once."""
    from fireact.paths import data_dir
    from fireact.trajectory_files import read_released_eval

    trajectories, report = read_released_eval(data_dir() / RELEASED_7B)
    assert not report.failures
    return trajectories
