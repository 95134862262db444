"""A run's config as a plain tree: resolved where it can be (`resolved_config`) and flattened to
dotted keys (`dotted`); what tracking records as params and what a run folder compares on resume."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException


def resolved_config(cfg: Mapping | DictConfig) -> dict[str, Any]:
    """The config as plain dicts without `hydra`, each top-level entry resolved if it can be
    (one that cannot, e.g. ${hydra:...} read outside a Hydra app, is kept as written)."""
    if not isinstance(cfg, DictConfig):
        return {key: value for key, value in dict(cfg).items() if key != "hydra"}
    conf = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])
    tree: dict[str, Any] = {}
    for key in conf:
        try:
            node = conf[key]
            tree[key] = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
        except OmegaConfBaseException:
            tree[key] = OmegaConf.to_container(OmegaConf.masked_copy(conf, [key]), resolve=False)[key]
    return tree


def dotted(tree: Mapping, key: Callable[[Any], str] = str, prefix: str = "") -> dict[str, Any]:
    """{"method": {"max_rounds": 2}} -> {"method.max_rounds": 2}: values as they are (lists stay values)."""
    out: dict[str, Any] = {}
    for name, value in tree.items():
        name = f"{prefix}{key(name)}"
        if isinstance(value, Mapping) and value:
            out.update(dotted(value, key, prefix=f"{name}."))
        else:
            out[name] = value
    return out
