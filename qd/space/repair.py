"""Repair of LLM output: the closest valid value of a parameter, never raising.

LLMs write numbers as text, misspell keys and choices, quote nested objects, overrun lengths
and drop keys. :func:`repair_config` clamps numbers, rounds ints, parses numeric strings,
coerces ``"true"``/``"no"``/0/1 to bools, snaps categoricals to an unambiguous choice
(case-insensitive or unique closest match), truncates text, trims or pads Seqs (padding from
the fallback or, with ``rng``, sampled items, else defaults), drops unknown keys and fills
missing or hopeless values from the fallback (typically the parent) or the defaults. A valid
configuration comes back equal.

The functions dispatch on :attr:`qd.space.schema.Param.kind` and read only the parameters'
public attributes, so this module does not import the schema it serves (which calls it from
:meth:`~qd.space.schema.Param.repair`).
"""
from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from qd.space.values import MISSING, describe, is_number

if TYPE_CHECKING:
    from qd.space.schema import Categorical, Param, Seq, Space

__all__ = ["repair_config", "repair_value"]

_TRUE_WORDS = frozenset({"true", "yes", "y", "t", "on", "1", "1.0"})
_FALSE_WORDS = frozenset({"false", "no", "n", "f", "off", "0", "0.0"})


def repair_config(space: Space, config: Any, fallback: dict | None = None,
                  rng: np.random.Generator | None = None) -> dict:
    """Best-effort valid configuration of ``space`` from LLM output.

    Parameters
    ----------
    space : Space
        The schema to repair against.
    config : dict
        The parsed LLM output.
    fallback : dict or None
        Values for what cannot be salvaged (typically the parent); the defaults otherwise.
    rng : numpy.random.Generator or None
        When given, Seqs too short for ``min_len`` are padded with sampled items (defaults
        otherwise).

    Returns
    -------
    dict
        A configuration that ``space.validate`` accepts; equal to ``config`` when that is valid.

    Raises
    ------
    ValueError
        If ``config`` is not a dict. Any dict input is repaired without raising.
    """
    if not isinstance(config, dict):
        raise ValueError(f"repair expects a dict, got {describe(config)}")
    return _repair_space(space, config, fallback if isinstance(fallback, dict) else MISSING, rng)


def repair_value(param: Param, value: Any, fallback: Any = MISSING, rng: np.random.Generator | None = None) -> Any:
    """Best-effort valid value of ``param`` close to ``value``; ``fallback`` replaces what cannot be salvaged."""
    try:
        repair = _REPAIR[param.kind]
    except KeyError:
        raise ValueError(f"cannot repair values of parameter kind {param.kind!r}") from None
    try:
        return repair(param, value, fallback, rng)
    except Exception:  # noqa: BLE001  # a value no rule foresaw (e.g. an int too large for a float)
        return _fallback(param, fallback, rng)


def _fallback(param: Param, fallback: Any, rng: np.random.Generator | None) -> Any:
    """The repaired fallback, or the default when there is none."""
    if param.kind == "space":
        if isinstance(_maybe_json(fallback, dict), dict):
            return _repair_space(param, {}, fallback, rng)  # type: ignore[arg-type]
        return param.default()
    if fallback is MISSING:
        return param.default()
    return repair_value(param, fallback, MISSING, rng)


def _parse_number(text: str) -> float | None:
    """``"0.5"``, ``" '3' "``, ``"1e-3,"`` -> float; anything else -> None."""
    text = text.strip(" \t\r\n'\"`,;")
    try:
        return float(text)
    except ValueError:
        return None


def _clamped_number(value: Any, low: float, high: float) -> int | float | None:
    """A number (or numeric text) as a Python int/float clamped to ``[low, high]``; None if it is none."""
    if isinstance(value, str):
        value = _parse_number(value)
    if not is_number(value):
        return None
    if isinstance(value, (np.integer, np.floating)):
        value = value.item()
    if value != value:  # NaN
        return None
    return low if value < low else high if value > high else value


def _maybe_json(value: Any, kind: type) -> Any:
    """LLMs sometimes quote a nested object or list as a JSON string: decode it when it is one."""
    if isinstance(value, str) and value.strip()[:1] in ("{", "["):
        try:
            decoded = json.loads(value)
        except ValueError:
            return value
        if isinstance(decoded, kind):
            return decoded
    return value


def _norm_key(key: str) -> str:
    return re.sub(r"[\s\-]+", "_", key.strip().lower())


def _repair_float(param: Any, value: Any, fallback: Any, rng: np.random.Generator | None) -> Any:
    value = _clamped_number(value, param.low, param.high)
    return _fallback(param, fallback, rng) if value is None else value


def _repair_int(param: Any, value: Any, fallback: Any, rng: np.random.Generator | None) -> Any:
    value = _clamped_number(value, param.low, param.high)
    if value is None:
        return _fallback(param, fallback, rng)
    return value if type(value) is int else min(max(int(round(value)), param.low), param.high)


def _repair_categorical(param: Categorical, value: Any, fallback: Any, rng: np.random.Generator | None) -> Any:
    i = _snap(param, value)
    return param.choices[i] if i is not None else _fallback(param, fallback, rng)


def _snap(param: Categorical, value: Any) -> int | None:
    """Index of the choice ``value`` unambiguously means, or None."""
    i = param.index(value)
    if i is not None:
        return i
    choices = param.choices
    lower: dict[str, list[int]] = {}  # string choices by their trimmed lower case
    for j, c in enumerate(choices):
        if isinstance(c, str):
            lower.setdefault(c.strip().lower(), []).append(j)
    if isinstance(value, str):
        text = value.strip().strip("'\"`").strip()
        lowered = text.lower()
        hits = lower.get(lowered, [])
        if len(hits) == 1:
            return hits[0]
        # a non-string choice written as text: "3", "true", "null"
        for j, c in enumerate(choices):
            if not isinstance(c, str) and lowered in (json.dumps(c), str(c).lower()):
                return j
        number = _parse_number(text)
        if number is not None and number == number:
            j = param.index(number)
            if j is not None:
                return j
        close = difflib.get_close_matches(lowered, list(lower), n=2, cutoff=0.6)
        if close:
            ratios = [difflib.SequenceMatcher(None, lowered, c).ratio() for c in close]
            if (len(close) == 1 or ratios[0] > ratios[1]) and len(lower[close[0]]) == 1:
                return lower[close[0]][0]
        return None
    numbers = [(c, j) for j, c in enumerate(choices) if is_number(c)]
    if is_number(value) and numbers and value == value:
        # the nearest numeric choice, when only one is nearest
        dists = sorted((abs(float(c) - float(value)), j) for c, j in numbers)
        if len(dists) == 1 or dists[0][0] < dists[1][0]:
            return dists[0][1]
        return None
    if is_number(value) or isinstance(value, (bool, np.bool_)):
        hits = lower.get(json.dumps(value.item() if isinstance(value, np.generic) else value), [])
        return hits[0] if len(hits) == 1 else None
    return None


def _repair_bool(param: Param, value: Any, fallback: Any, rng: np.random.Generator | None) -> Any:
    if isinstance(value, (bool, np.bool_)) or (is_number(value) and value in (0, 1)):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().strip("'\"`").strip().lower()
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
    return _fallback(param, fallback, rng)


def _repair_text(param: Any, value: Any, fallback: Any, rng: np.random.Generator | None) -> Any:
    if isinstance(value, (bool, np.bool_)):
        value = json.dumps(bool(value))
    elif is_number(value):
        value = str(value.item() if isinstance(value, np.generic) else value)
    if isinstance(value, str):
        value = str(value)[: param.max_len]
        if len(value) >= param.min_len:
            return value
    return _fallback(param, fallback, rng)


def _repair_seq(param: Seq, value: Any, fallback: Any, rng: np.random.Generator | None) -> Any:
    value = _maybe_json(value, list)
    if isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, list):
        return _fallback(param, fallback, rng)
    fb = _maybe_json(fallback, list)
    fb = list(fb) if isinstance(fb, (list, tuple)) else []
    item = param.item
    out = [repair_value(item, x, fb[i] if i < len(fb) else MISSING, rng) for i, x in enumerate(value[: param.max_len])]
    for i in range(len(out), param.min_len):
        if i < len(fb):
            out.append(repair_value(item, fb[i], MISSING, rng))
        else:
            out.append(item.sample(rng) if rng is not None else item.default())
    return out


def _repair_space(param: Space, value: Any, fallback: Any, rng: np.random.Generator | None) -> Any:
    value = _maybe_json(value, dict)
    if not isinstance(value, dict):
        return _fallback(param, fallback, rng)
    fallback = _maybe_json(fallback, dict)
    fb = fallback if isinstance(fallback, dict) else {}
    params = param.params
    # match keys the LLM spelt differently ("Temperature", "top-k") when unambiguous
    by_norm: dict[str, list[str]] = {}
    for key in params:
        by_norm.setdefault(_norm_key(key), []).append(key)
    spelt: dict[str, Any] = {}
    for key in value:
        if isinstance(key, str) and key not in params:
            targets = by_norm.get(_norm_key(key), [])
            if len(targets) == 1 and targets[0] not in value:
                spelt.setdefault(targets[0], []).append(key)
    out = {}
    for k, p in params.items():
        fbv = fb[k] if k in fb else MISSING
        if k in value:
            out[k] = repair_value(p, value[k], fbv, rng)
        elif len(spelt.get(k, ())) == 1:
            out[k] = repair_value(p, value[spelt[k][0]], fbv, rng)
        else:
            out[k] = _fallback(p, fbv, rng)
    return out


_REPAIR: dict[str, Callable[[Any, Any, Any, np.random.Generator | None], Any]] = {
    "float": _repair_float,
    "int": _repair_int,
    "categorical": _repair_categorical,
    "bool": _repair_bool,
    "text": _repair_text,
    "seq": _repair_seq,
    "space": _repair_space,
}
