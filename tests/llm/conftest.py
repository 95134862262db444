"""Shared fixtures for the LLM backend tests."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from fireact.paths import CONF_DIR


@pytest.fixture(scope="session")
def hf_backend():
    """The embedded SmolLM2-135M-Instruct on CPU in float32, built from the composed Hydra
    config model=smollm2_135m backend=hf, loaded once per test session (a few seconds)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(overrides=["+model=smollm2_135m", "+backend=hf", "backend.device=cpu", "backend.dtype=float32"])
    backend = instantiate(cfg.backend)
    yield backend
    backend.close()
