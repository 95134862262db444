"""Cost in USD of model calls, from the model config's price table (conf/model/*.yaml `price`).

price: {prompt_per_1k: USD per 1,000 prompt tokens, completion_per_1k: USD per 1,000
completion tokens, gpu_hour: optional USD per hour of wall time on a rented GPU}.
API models have token prices; local models are free per token and may set gpu_hour.
"""

from __future__ import annotations

from collections.abc import Mapping
from numbers import Real

PER_TOKEN = ("prompt_per_1k", "completion_per_1k")
OPTIONAL = ("gpu_hour",)


def cost(price: Mapping, prompt_tokens: int, completion_tokens: int, wall_seconds: float = 0.0) -> float:
    """USD for `prompt_tokens` + `completion_tokens` and, when `price.gpu_hour` is set, the wall time."""
    rates = check_price(price)
    for name, value in (("prompt_tokens", prompt_tokens), ("completion_tokens", completion_tokens), ("wall_seconds", wall_seconds)):
        if not _is_number(value) or value < 0:
            raise ValueError(f"{name} must be a non-negative number, got {value!r}")
    return (
        prompt_tokens / 1000 * rates["prompt_per_1k"]
        + completion_tokens / 1000 * rates["completion_per_1k"]
        + wall_seconds / 3600 * rates.get("gpu_hour", 0.0)
    )


def check_price(price: Mapping) -> dict[str, float]:
    """The price table as floats; a clear error for a missing, unknown, non-numeric or negative entry."""
    fix = "set model.price to {prompt_per_1k: USD, completion_per_1k: USD} (0.0 for local models), optionally gpu_hour: USD"
    if not isinstance(price, Mapping):
        raise ValueError(f"model.price must be a mapping, got {price!r}; {fix}")
    missing = [key for key in PER_TOKEN if key not in price]
    unknown = [key for key in price if key not in PER_TOKEN + OPTIONAL]
    if missing or unknown:
        raise ValueError(f"model.price {dict(price)!r}: missing {missing}, unknown {unknown}; {fix}")
    rates = {}
    for key, value in price.items():
        if not _is_number(value) or value < 0:
            raise ValueError(f"model.price.{key} must be a non-negative number of USD, got {value!r}; {fix}")
        rates[key] = float(value)
    return rates


def _is_number(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)
