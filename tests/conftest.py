"""Shared fixtures: composing the project's Hydra configs the way the entry points do; the embedded
model's hf backend."""

import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from fireact.paths import CONF_DIR


def logged_table(run_id: str, artifact_file: str) -> pd.DataFrame:
    """A table artifact that `TrackedRun.log_table` (MLflow's log_table) wrote for the run."""
    local = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact_file))
    table = json.loads(local.read_text())
    return pd.DataFrame(table["data"], columns=table["columns"])


def compose_config(config_name: str, overrides: list[str] = (), out_dir: Path | None = None) -> DictConfig:
    """The config an entry point would see for `overrides`, with hydra's run info set."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=list(overrides), return_hydra_config=True)
    if out_dir is not None:
        OmegaConf.set_readonly(cfg.hydra, False)
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(out_dir)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):  # as in a real run, the job's config holds no `hydra` node
        del cfg["hydra"]
    return cfg


@pytest.fixture(autouse=True, scope="session")
def _tracking_store(tmp_path_factory):
    """Entry points under test log to a throwaway MLflow store, never the project's mlruns/."""
    store = tmp_path_factory.mktemp("mlruns")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store / 'mlflow.db'}")
        yield store


@pytest.fixture
def compose_cfg(tmp_path):
    def _compose(config_name: str, *overrides: str) -> DictConfig:
        return compose_config(config_name, overrides, out_dir=tmp_path)

    yield _compose
    GlobalHydra.instance().clear()


@pytest.fixture(scope="session")
def hf_backend():
    """The embedded SmolLM2-135M-Instruct on CPU in float32, built from the composed Hydra
    config model=smollm2_135m backend=hf, loaded once per test session (a few seconds)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(overrides=["+model=smollm2_135m", "+backend=hf", "backend.device=cpu", "backend.dtype=float32"])
    backend = instantiate(cfg.backend)
    yield backend
    backend.close()
