"""Operator parameters, declared once: what each accepts, checked by the run config and the constructor alike.

An operator class lists its parameters in :attr:`~qd.operators.Operator.parameters`, a mapping of
name to :class:`Parameter`; its constructor checks what it was given with
:meth:`~qd.operators.Operator.check_parameters`, and the run config checks an
``[operators.NAME]`` table with the same call at load (``qd.operators.registry``), so the two can
never disagree::

    class Nudge(Operator):
        parameters = {"step": POSITIVE, "children": COUNT}

        def __init__(self, space, step=0.1, children=1):
            self.check_parameters({"step": step, "children": children})
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from qd.space.values import is_int, is_number

__all__ = ["Parameter", "check_parameters", "finite_number", "POSITIVE", "NON_NEGATIVE", "RATE", "COUNT",
           "OPTIONAL_COUNT", "TEMPERATURE", "TEXT", "TARGET"]


def finite_number(value: Any) -> bool:
    """Whether ``value`` is a finite int or float (numpy ones too), not a bool."""
    return is_number(value) and math.isfinite(value)


@dataclass(frozen=True)
class Parameter:
    """What one operator parameter accepts.

    Attributes
    ----------
    allowed : str
        Said in errors after "must be" (``"a number > 0"``).
    test : callable
        ``test(value) -> bool``: whether ``value`` is allowed.
    optional : bool
        ``None`` is allowed too (from Python: the constructor then chooses; a run config leaves the key out).
    """

    allowed: str
    test: Callable[[Any], bool]
    optional: bool = False

    def problem(self, value: Any) -> str | None:
        """``None`` when ``value`` is allowed, else ``"must be ..."``."""
        if (value is None and self.optional) or (value is not None and self.test(value)):
            return None
        return f"must be {self.allowed}"


POSITIVE = Parameter("a number > 0", lambda v: finite_number(v) and v > 0)
NON_NEGATIVE = Parameter("a number >= 0", lambda v: finite_number(v) and v >= 0)
RATE = Parameter("a number in [0, 1] (left out: 1 / sites)", lambda v: finite_number(v) and 0 <= v <= 1,
                 optional=True)
COUNT = Parameter("an integer >= 1", lambda v: is_int(v) and v >= 1)
OPTIONAL_COUNT = Parameter(COUNT.allowed, COUNT.test, optional=True)
TEMPERATURE = Parameter("a number in [0, 2]", lambda v: finite_number(v) and 0 <= v <= 2, optional=True)
TEXT = Parameter("a string", lambda v: isinstance(v, str))
TARGET = Parameter("a text goal or a table of measure values",
                   lambda v: isinstance(v, str) or (isinstance(v, dict) and all(finite_number(x) for x in v.values())),
                   optional=True)


def check_parameters(declared: Mapping[str, Parameter], values: Mapping[str, Any], where: str = "") -> None:
    """Check ``values`` against ``declared``; keys not declared are left to the caller.

    Raises
    ------
    ValueError
        ``"{where}.{name} must be ..., got ..."`` (``"{name} must be ..."`` without ``where``) for
        the first value that is not allowed.
    """
    for name, value in values.items():
        parameter = declared.get(name)
        problem = parameter.problem(value) if parameter is not None else None
        if problem:
            raise ValueError(f"{where + '.' if where else ''}{name} {problem}, got {value!r}")
