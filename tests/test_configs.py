"""Every config file of every group composes with every entry point that uses the group."""

import pytest
import yaml
from omegaconf import OmegaConf

from tests.conftest import CONF_DIR, compose_config

PRIMARY = sorted(p.stem for p in CONF_DIR.glob("*.yaml"))
NOT_SWAPPED = {"hydra", "paths", "experiment"}


def groups_of(primary: str) -> list[str]:
    defaults = yaml.safe_load((CONF_DIR / f"{primary}.yaml").read_text()).get("defaults", [])
    names = [next(iter(d)) for d in defaults if isinstance(d, dict)]
    return [g for g in names if g not in NOT_SWAPPED and (CONF_DIR / g).is_dir()]


CASES = [
    (primary, group, member.stem)
    for primary in PRIMARY
    for group in groups_of(primary)
    for member in sorted((CONF_DIR / group).glob("*.yaml"))
]


def test_there_are_entry_points_and_groups():
    assert "evaluate" in PRIMARY and CASES


@pytest.mark.parametrize("primary", PRIMARY)
def test_primary_config_composes_and_resolves(primary, tmp_path):
    cfg = compose_config(primary, out_dir=tmp_path)
    OmegaConf.to_container(cfg, resolve=True)


@pytest.mark.parametrize("primary, group, member", CASES, ids=[f"{p}:{g}={m}" for p, g, m in CASES])
def test_every_group_member_composes(primary, group, member, tmp_path):
    cfg = compose_config(primary, [f"{group}={member}"], out_dir=tmp_path)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    if (CONF_DIR / group / f"{member}.yaml").read_text().startswith("# @package _global_"):
        return  # a preset (conf/lm/): it sets other groups, it is no node of its own
    node = resolved[group]
    assert isinstance(node, dict)


# Experiments (conf/experiment/) compose with the entry point each is for: tests/test_experiments.py.
