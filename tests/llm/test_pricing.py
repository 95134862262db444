"""Cost from the model configs' price tables."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from fireact.llm.pricing import check_price, cost

MODELS = Path(__file__).resolve().parents[2] / "conf" / "model"


def test_token_prices_are_per_thousand_tokens():
    gpt4 = {"prompt_per_1k": 0.03, "completion_per_1k": 0.06}
    assert cost(gpt4, prompt_tokens=1000, completion_tokens=500) == pytest.approx(0.06)
    assert cost(gpt4, prompt_tokens=0, completion_tokens=0) == 0.0


def test_local_models_cost_nothing_per_token_and_gpu_hours_by_wall_time():
    local = {"prompt_per_1k": 0.0, "completion_per_1k": 0.0}
    assert cost(local, 10_000, 10_000, wall_seconds=3600) == 0.0
    rented = {**local, "gpu_hour": 2.5}
    assert cost(rented, 10_000, 10_000, wall_seconds=1800) == pytest.approx(1.25)


@pytest.mark.parametrize("path", sorted(MODELS.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_model_config_has_a_valid_price_table(path):
    price = OmegaConf.load(path).price
    assert cost(price, 2000, 1000) == pytest.approx(2 * price.prompt_per_1k + price.completion_per_1k)


def test_gpt35_price_from_its_config():
    price = OmegaConf.load(MODELS / "gpt35.yaml").price
    assert cost(price, 1000, 1000) == pytest.approx(0.0015 + 0.002)


@pytest.mark.parametrize(
    "price, message",
    [
        ({"prompt_per_1k": 0.01}, "missing \\['completion_per_1k'\\]"),
        ({"prompt_per_1k": 0.01, "completion_per_1k": 0.02, "prompt_per_1K": 0.01}, "unknown \\['prompt_per_1K'\\]"),
        ({"prompt_per_1k": -0.01, "completion_per_1k": 0.02}, "prompt_per_1k must be a non-negative"),
        ({"prompt_per_1k": 0.01, "completion_per_1k": "cheap"}, "completion_per_1k must be a non-negative"),
        ({"prompt_per_1k": 0.01, "completion_per_1k": 0.02, "gpu_hour": True}, "gpu_hour must be a non-negative"),
        (None, "must be a mapping"),
    ],
)
def test_bad_price_tables_are_named(price, message):
    with pytest.raises(ValueError, match=message):
        check_price(price)
    with pytest.raises(ValueError, match="model.price"):
        cost(price, 1, 1)


@pytest.mark.parametrize("counts", [(-1, 0, 0.0), (0, -5, 0.0), (0, 0, -1.0), (1.5j, 0, 0.0)])
def test_negative_or_non_numeric_counts_are_refused(counts):
    with pytest.raises(ValueError, match="non-negative"):
        cost({"prompt_per_1k": 0.0, "completion_per_1k": 0.0}, *counts)
