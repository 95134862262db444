"""A real MLflow tracking server on loopback (one per test session) and Hydra-composed configs."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import mlflow
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from fireact.paths import CONF_DIR

MLFLOW = Path(sys.executable).parent / "mlflow"
# Readiness wait, not a speed check: the server takes ~10 s alone and far longer on a busy machine.
SERVER_START_LIMIT_S = 300


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory) -> str:
    """`mlflow server` with a SQLite store on 127.0.0.1; yields its URI, SIGTERMs it at the end."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # no background job workers
    log_path = root / "server.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(
            [str(MLFLOW), "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
             "--default-artifact-root", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1"],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_LIMIT_S
        while True:
            if server.poll() is not None:
                pytest.fail(f"mlflow server exited with {server.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{uri}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not answer /health in {SERVER_START_LIMIT_S} s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield uri
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and the uvicorn worker it started
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


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
