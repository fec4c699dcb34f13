"""Checks and copies of plain JSON values, shared by the schema, repair and unit modules.

A configuration is plain JSON (dicts, lists, str, numbers, bools, None); numpy scalars are
accepted where a number or bool is expected.
"""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["MISSING", "is_number", "is_int", "json_copy", "choice_key", "describe", "at"]


class _Missing:
    """Marks an absent value (None is a legitimate categorical choice)."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


def is_number(value: Any) -> bool:
    """Whether ``value`` is an int or float (numpy ones too), but not a bool."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def is_int(value: Any) -> bool:
    """Whether ``value`` is an int (numpy ones too), but not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def json_copy(value: Any) -> Any:
    """Copy of the dict/list skeleton of a JSON-like value (scalars are immutable and shared)."""
    if isinstance(value, dict):
        return {k: json_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_copy(v) for v in value]
    return value


def choice_key(value: Any) -> tuple | None:
    """Type-aware identity of a JSON scalar, so that True != 1 while 1 == 1.0 (same JSON number).

    None for values that are no JSON scalar (lists, dicts, NaN, objects).
    """
    if value is None:
        return ("null",)
    if isinstance(value, (bool, np.bool_)):
        return ("bool", bool(value))
    if is_number(value):
        value = value.item() if isinstance(value, (np.integer, np.floating)) else value
        return ("num", value) if value == value else None
    if isinstance(value, str):
        return ("str", value)
    return None


def describe(value: Any) -> str:
    """``type repr`` of a bad value, with long reprs shortened so messages stay readable."""
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def at(path: str, message: str) -> str:
    """``message`` prefixed by the location ``path`` of the value it is about (when there is one)."""
    return f"{path}: {message}" if path else message
