"""Unit transforms: the Float/Int leaves of a configuration as numbers in ``[0, 1]`` and back.

Gaussian and Iso+LineDD move configurations in this view, where one ``sigma`` means the same
fraction of every parameter's range. Float leaves map linearly (logarithmically with
``log=True``); Int leaves map linearly and round on the way back; every way back clamps to the
bounds, so any vector of units gives a valid configuration.

- :func:`to_unit` and :func:`from_unit` map one leaf.
- :class:`UnitTransform` maps all the numeric leaves of a space's configurations at once
  (vectorized, with the per-structure maps cached).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from qd.space.schema import Float, Int, Numeric, Param, Seq, Space
from qd.space.values import json_copy

__all__ = ["UnitTransform", "to_unit", "from_unit"]

_Raw = Callable[[Any, list, list], None]
_Rebuild = Callable[[Any, list, int], "tuple[Any, int]"]


def to_unit(param: Numeric, value: Any) -> float:
    """``value`` of a Float/Int leaf as a number in ``[0, 1]`` (clamped first; log-aware)."""
    value = min(max(float(value), param.low), param.high)
    if isinstance(param, Float) and param.log:
        log_low = math.log(param.low)
        return (math.log(value) - log_low) / (math.log(param.high) - log_low)
    return (value - param.low) / (param.high - param.low)


def from_unit(param: Numeric, u: float) -> Any:
    """The value of a Float/Int leaf at unit position ``u`` (clamped to the bounds, ints rounded)."""
    if isinstance(param, Int):
        return min(max(param.low + round(u * (param.high - param.low)), param.low), param.high)
    if isinstance(param, Float) and param.log:
        log_low = math.log(param.low)
        value = math.exp(log_low + u * (math.log(param.high) - log_low))
    else:
        value = param.low + u * (param.high - param.low)
    # clamp: u may lie outside [0, 1] and low + 1 * span can miss high by an ulp
    return min(max(value, param.low), param.high)


def _has_numeric(param: Param) -> bool:
    if isinstance(param, Numeric):
        return True
    if isinstance(param, Seq):
        return _has_numeric(param.item)
    if isinstance(param, Space):
        return any(_has_numeric(p) for p in param.params.values())
    return False


def _compile(param: Param) -> tuple[_Raw, _Rebuild]:
    """The ``raw`` and ``rebuild`` functions of a parameter that holds numeric leaves.

    ``raw(value, out, shape)`` appends the numeric leaves in order (``shape`` gets the variable
    Seq lengths); ``rebuild(value, values, pos)`` returns a copy of ``value`` with those leaves
    from ``values[pos:]``, and the next position.
    """
    if isinstance(param, Numeric):
        def raw(value: Any, out: list, shape: list) -> None:
            out.append(value)

        def rebuild(value: Any, values: list, pos: int) -> tuple[Any, int]:
            return values[pos], pos + 1

        return raw, rebuild
    if isinstance(param, Seq):
        fixed = param.min_len == param.max_len
        if isinstance(param.item, Numeric):
            def raw(value: Any, out: list, shape: list) -> None:
                if not fixed:
                    shape.append(len(value))
                out.extend(value)

            def rebuild(value: Any, values: list, pos: int) -> tuple[Any, int]:
                end = pos + len(value)
                return values[pos:end], end

            return raw, rebuild
        item_raw, item_rebuild = _compile(param.item)

        def raw(value: Any, out: list, shape: list) -> None:
            if not fixed:
                shape.append(len(value))
            for x in value:
                item_raw(x, out, shape)

        def rebuild(value: Any, values: list, pos: int) -> tuple[Any, int]:
            items = []
            for x in value:
                x, pos = item_rebuild(x, values, pos)
                items.append(x)
            return items, pos

        return raw, rebuild
    assert isinstance(param, Space)
    numeric = [(k, *_compile(p)) for k, p in param.params.items() if _has_numeric(p)]
    numeric_raws = [(k, r) for k, r, _ in numeric]
    rebuilds: dict[str, _Rebuild] = {k: b for k, _, b in numeric}
    keys = list(param.params)

    def raw(value: Any, out: list, shape: list) -> None:
        for k, r in numeric_raws:
            r(value[k], out, shape)

    def rebuild(value: Any, values: list, pos: int) -> tuple[Any, int]:
        result = {}
        for k in keys:
            b = rebuilds.get(k)
            if b is None:
                result[k] = json_copy(value[k])
            else:
                result[k], pos = b(value[k], values, pos)
        return result, pos

    return raw, rebuild


class UnitTransform:
    """The numeric leaves of a space's valid configurations as a unit vector, and back.

    Parameters
    ----------
    space : Space
        The space whose configurations are mapped.

    Examples
    --------
    >>> from qd.space import Bool, Float, Int, Space, UnitTransform
    >>> space = Space({"lr": Float(1e-4, 1e-2, log=True), "n": Int(0, 10), "on": Bool()})
    >>> units = UnitTransform(space)
    >>> x, key = units.unit_view({"lr": 1e-3, "n": 4, "on": True})
    >>> x.tolist()
    [0.5, 0.4]
    >>> units.with_units({"lr": 1e-3, "n": 4, "on": True}, [1.0, 0.46], key)
    {'lr': 0.01, 'n': 5, 'on': True}
    """

    def __init__(self, space: Space):
        if not isinstance(space, Space):
            raise ValueError(f"UnitTransform needs a qd.space.Space, got {type(space).__name__}")
        self.space = space
        if _has_numeric(space):
            self._raw, self._rebuild = _compile(space)
        else:
            self._raw = lambda value, out, shape: None
            self._rebuild = lambda value, values, pos: (json_copy(value), pos)
        self._maps: dict[tuple, _UnitMap] = {}

    def _unit_map(self, config: dict, key: tuple) -> _UnitMap:
        umap = self._maps.get(key)
        if umap is None:
            if len(self._maps) >= 4096:  # many Seq-length combinations: keep memory bounded
                self._maps.clear()
            leaves = [p for _, p, _ in self.space.walk(config) if isinstance(p, Numeric)]
            umap = self._maps[key] = _UnitMap(leaves)
        return umap

    def unit_view(self, config: dict) -> tuple[np.ndarray, tuple]:
        """Unit values of the numeric leaves of valid ``config`` and its structure key.

        Leaves come in :meth:`Space.walk` order. The structure key holds the lengths of the
        variable-length Seqs: two configurations with equal keys have their numeric leaves at
        the same paths, so their unit vectors can be combined.
        """
        raw: list = []
        shape: list = []
        self._raw(config, raw, shape)
        key = tuple(shape)
        return self._unit_map(config, key).to_unit(raw), key

    def unit_views(self, configs: Sequence[dict]) -> tuple[np.ndarray, tuple] | None:
        """:meth:`unit_view` of many configurations of one structure: a matrix (a row each) and the key.

        None when their structure keys differ (or ``configs`` is empty).
        """
        raws, key = [], None
        for config in configs:
            raw: list = []
            shape: list = []
            self._raw(config, raw, shape)
            if key is None:
                key = tuple(shape)
            elif tuple(shape) != key:
                return None
            raws.append(raw)
        if key is None:
            return None
        return self._unit_map(configs[0], key).to_unit(raws).reshape(len(raws), -1), key

    def with_units(self, config: dict, units: np.ndarray | Sequence[float], key: tuple | None = None) -> dict:
        """Inverse of :meth:`unit_view`: copy of valid ``config`` with its numeric leaves from ``units``.

        Units are clamped to ``[0, 1]``, ints rounded. ``key`` is the structure key from
        :meth:`unit_view` (recomputed when omitted).

        Raises
        ------
        ValueError
            If ``units`` does not have one value per numeric leaf of ``config``.
        """
        if key is None:
            shape: list = []
            self._raw(config, [], shape)
            key = tuple(shape)
        umap = self._unit_map(config, key)
        if len(units) != umap.size:
            raise ValueError(f"{len(units)} unit values for {umap.size} numeric leaves")
        return self._rebuild(config, umap.from_unit(units), 0)[0]

    def with_units_many(self, configs: Sequence[dict], units: np.ndarray, key: tuple) -> list[dict]:
        """:meth:`with_units` for many configurations of one structure ``key`` (a row of ``units`` each)."""
        if not configs:
            return []
        umap = self._unit_map(configs[0], key)
        if units.ndim != 2 or units.shape != (len(configs), umap.size):
            raise ValueError(f"units of shape {units.shape} for {len(configs)} configurations of {umap.size} "
                             "numeric leaves")
        return [self._rebuild(c, values, 0)[0] for c, values in zip(configs, umap.from_unit(units))]


class _UnitMap:
    """Vectorized unit <-> value maps for one ordered list of Float/Int leaves."""

    def __init__(self, params: Sequence[Numeric]):
        self.size = len(params)
        self.low = np.array([float(p.low) for p in params])
        self.high = np.array([float(p.high) for p in params])
        self.span = self.high - self.low
        self.log = np.array([isinstance(p, Float) and p.log for p in params], dtype=bool)
        self.log_idx = np.flatnonzero(self.log)
        self.int_idx = np.flatnonzero([isinstance(p, Int) for p in params]).tolist()
        if self.log_idx.size:
            self.log_low = np.log(self.low[self.log_idx])
            self.log_span = np.log(self.high[self.log_idx]) - self.log_low
        self._exact_ints = all(abs(p.low) < 2**53 and abs(p.high) < 2**53 for p in params if isinstance(p, Int))
        self._params = list(params)

    def to_unit(self, raw: list) -> np.ndarray:
        """Unit values of one list of leaf values, or of a list of them (a row each)."""
        x = np.array(raw, dtype=float)
        u = (x - self.low) / self.span
        if self.log_idx.size:
            v = np.clip(x[..., self.log_idx], self.low[self.log_idx], self.high[self.log_idx])
            u[..., self.log_idx] = (np.log(v) - self.log_low) / self.log_span
        return u

    def from_unit(self, units: np.ndarray | Sequence[float]) -> list:
        """The values at unit positions ``units``: a list, or a list per row of a 2-D array."""
        u = np.minimum(np.maximum(np.asarray(units, dtype=float), 0.0), 1.0)
        x = self.low + u * self.span
        if self.log_idx.size:
            x[..., self.log_idx] = np.exp(self.log_low + u[..., self.log_idx] * self.log_span)
        # clamp: low + 1 * span can miss high by an ulp, exp/log round-trips likewise
        np.minimum(np.maximum(x, self.low, out=x), self.high, out=x)
        values = x.tolist()
        if self.int_idx:
            rows, unit_rows = (values, u) if u.ndim > 1 else ([values], u[None])
            for row, urow in zip(rows, unit_rows):
                if self._exact_ints:
                    for i in self.int_idx:
                        row[i] = int(round(row[i]))
                else:  # ranges beyond float precision: map through Python ints
                    for i in self.int_idx:
                        row[i] = from_unit(self._params[i], float(urow[i]))
        return values
