"""Price table for cost accounting: USD per 1M input and output tokens, keyed by model name.

The defaults are list prices at the time of writing and only a convenience; pass
``LLMClient(prices={...})`` (or ``[llm] prices`` in a run config) to use your own. Unknown models and
the embedded local model cost 0.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qd.llm.models import MODEL_ALIAS

__all__ = ["DEFAULT_PRICES", "Price", "cost_of", "normalize_prices", "price_of"]

Price = tuple[float, float]  # (USD per 1M input tokens, USD per 1M output tokens)

DEFAULT_PRICES: dict[str, Price] = {
    MODEL_ALIAS: (0.0, 0.0),
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-3.5-turbo-instruct": (1.50, 2.00),
}


def normalize_prices(prices: Mapping[str, Any] | None) -> dict[str, Price]:
    """Validate a user price table and merge it over the defaults.

    Parameters
    ----------
    prices : mapping, optional
        ``{model: (input_per_1M, output_per_1M)}``, or ``{model: {"input": x, "output": y}}``.

    Returns
    -------
    dict
        ``{model: (input_per_1M, output_per_1M)}`` as floats.

    Raises
    ------
    ValueError
        If an entry is not a pair of non-negative numbers.
    """
    table = dict(DEFAULT_PRICES)
    for model, value in (prices or {}).items():
        if isinstance(value, Mapping):
            pair = (value.get("input"), value.get("output"))
        else:
            pair = tuple(value) if isinstance(value, (list, tuple)) else (value,)
        if len(pair) != 2:
            raise ValueError(f"price for model {model!r} must be (input_per_1M, output_per_1M), got {value!r}")
        try:
            p_in, p_out = float(pair[0]), float(pair[1])  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ValueError(f"price for model {model!r} must be two numbers, got {value!r}") from None
        if p_in < 0 or p_out < 0:
            raise ValueError(f"price for model {model!r} must be non-negative, got {value!r}")
        table[str(model)] = (p_in, p_out)
    return table


def price_of(table: Mapping[str, Price], model: str) -> Price | None:
    """Price of ``model``, or ``None`` when the table does not know it (the model is *unpriced*).

    Exact match first, then the longest key that prefixes the name (dated snapshots such as
    ``gpt-4o-mini-2024-07-18`` use their family's price), then the same with a provider prefix
    such as LiteLLM's ``openai/`` removed.
    """
    price = table.get(model)
    if price is not None:
        return price
    for name in (model, model.rpartition("/")[2]) if "/" in model else (model,):
        if name in table:
            return table[name]
        best = ""
        for key in table:
            if name.startswith(key) and len(key) > len(best):
                best = key
        if best:
            return table[best]
    return None


def cost_of(table: Mapping[str, Price], model: str, tokens_in: int, tokens_out: int) -> float | None:
    """Nominal USD cost of one call, or ``None`` when ``model`` is unpriced (see :func:`price_of`)."""
    price = price_of(table, model)
    if price is None:
        return None
    return (tokens_in * price[0] + tokens_out * price[1]) / 1e6
