"""Shared fixtures: the build_data config composed with Hydra, and the released sets imported once."""

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from fireact.data.importer import import_released
from fireact.paths import CONF_DIR


def compose_build_data(*overrides: str):
    """conf/build_data.yaml with overrides, as `python -m fireact.build_data` would compose it."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("build_data", overrides=list(overrides))


@pytest.fixture(scope="session")
def released_source():
    return instantiate(compose_build_data().data_source)


@pytest.fixture(scope="session")
def imported(released_source):
    source = released_source
    return import_released(source.sets, source.data_dir, source.reference, source.use)


@pytest.fixture(scope="session")
def loaded(released_source):
    return released_source.load()
