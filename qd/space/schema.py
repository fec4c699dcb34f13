"""Search-space schema: typed parameters, validation, canonical form and hashing.

A :class:`Space` maps names to parameters (:class:`Float`, :class:`Int`, :class:`Categorical`,
:class:`Bool`, :class:`Text`, :class:`Seq` and nested :class:`Space`). A configuration is a
plain JSON dict; the space samples, validates, canonicalizes and hashes such dicts, and
:meth:`Param.walk` visits their (parameter, value) pairs. Repair of LLM output lives in
:mod:`qd.space.repair`, prompt text in :mod:`qd.space.prompt` (both reached through
:meth:`Param.repair` and :meth:`Param.to_prompt`), numeric views in :mod:`qd.space.units`.

The search calls :meth:`Space.validate`, :meth:`Space.canonical` and :meth:`Space.hash` once
per offspring, so each parameter has a lean boolean check (:meth:`Param.is_valid`) that runs
first; the detailed, path-carrying messages are built only for configurations that fail it.
"""
from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from qd.space.prompt import render
from qd.space.repair import repair_config, repair_value
from qd.space.values import MISSING, at, choice_key, describe, is_int, is_number, json_copy

__all__ = ["Param", "Numeric", "Float", "Int", "Categorical", "Bool", "Text", "Seq", "Space", "param_from_dict",
           "Path"]

Path = tuple  # a value's location: dict keys (str) and list indices (int), e.g. ("layers", 2, "temperature")

# One encoder for every canonical() call: json.dumps with keyword arguments builds a new one each time.
_CANONICAL_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


class Param:
    """Base class of every parameter type.

    Attributes
    ----------
    kind : str
        The ``type`` of :meth:`to_dict` (``"float"``, ``"int"``, ``"categorical"``, ``"bool"``,
        ``"text"``, ``"seq"`` or ``"space"``).
    """

    kind: str = "param"

    def sample(self, rng: np.random.Generator) -> Any:
        """A random valid value."""
        raise NotImplementedError

    def default(self) -> Any:
        """A deterministic valid value."""
        raise NotImplementedError

    def cardinality(self) -> int | float:
        """How many distinct valid values there are: an exact int, or ``math.inf``.

        Float leaves and Text of any length are infinite; :meth:`value_at` lists a finite one.
        A parameter type that does not count its values is taken as infinite.
        """
        return math.inf

    def value_at(self, index: int) -> Any:
        """The ``index``-th of the :meth:`cardinality` distinct values (a finite parameter only).

        Raises
        ------
        IndexError
            When ``index`` is outside ``[0, cardinality())``; ValueError when the parameter is infinite.
        """
        n = self.cardinality()
        if n == math.inf:
            raise ValueError(f"{self!r} has infinitely many values: none can be listed by index")
        if not 0 <= index < n:
            raise IndexError(f"value index {index} outside [0, {n})")
        return self._value_at(int(index))

    def _value_at(self, index: int) -> Any:
        raise NotImplementedError

    def validate(self, value: Any, path: str = "") -> list[str]:
        """Every problem of ``value``, each message prefixed by ``path``; empty when valid."""
        raise NotImplementedError

    def is_valid(self, value: Any) -> bool:
        """Whether :meth:`validate` reports no problem, without building the messages."""
        return not self.validate(value, "")

    def walk(self, value: Any, path: Path = ()) -> Iterator[tuple[Path, Param, Any]]:
        """``(path, param, value)`` for ``value`` and, inside Spaces and Seqs, every nested pair.

        Pre-order, in declaration and index order. Keys missing from a dict and values of the
        wrong container type are skipped rather than reported (that is :meth:`validate`'s job).
        """
        yield path, self, value

    def repair(self, value: Any, fallback: Any = MISSING, rng: np.random.Generator | None = None) -> Any:
        """Best-effort valid value close to ``value``; ``fallback`` replaces what cannot be salvaged.

        See :mod:`qd.space.repair`.
        """
        return repair_value(self, value, fallback, rng)

    def to_prompt(self) -> str:
        """Compact schema text for LLM prompts (see :mod:`qd.space.prompt`)."""
        return render(self)

    def to_dict(self) -> dict:
        """JSON description; :func:`param_from_dict` inverts it."""
        raise NotImplementedError

    def _canon(self, value: Any) -> Any:
        """``value`` with numbers in the parameter's canonical type (Float leaves as floats)."""
        return value

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.to_dict() == self.to_dict()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items() if k != "type")
        return f"{type(self).__name__}({args})"


class Numeric(Param):
    """Base class of :class:`Float` and :class:`Int`: a number in ``[low, high]``.

    These are the leaves that :mod:`qd.space.units` maps to ``[0, 1]`` and that Gaussian and
    Iso+LineDD move.
    """

    low: float
    high: float

    def _out_of_bounds(self, value: float, path: str) -> list[str]:
        if value < self.low:
            return [at(path, f"{value} below low {self.low}")]
        if value > self.high:
            return [at(path, f"{value} above high {self.high}")]
        return []


class Float(Numeric):
    """A real number in ``[low, high]``; ``log=True`` samples and normalizes on a log scale.

    Ints are accepted as values (bools are not); NaN and infinities never are.
    """

    kind = "float"

    def __init__(self, low: float, high: float, log: bool = False):
        if not is_number(low) or not is_number(high):
            raise ValueError(f"Float bounds must be numbers, got low={low!r}, high={high!r}")
        low, high = float(low), float(high)
        if not (math.isfinite(low) and math.isfinite(high)):
            raise ValueError(f"Float bounds must be finite, got low={low!r}, high={high!r}")
        if low >= high:
            raise ValueError(f"Float needs low < high, got low={low!r}, high={high!r}")
        if log and low <= 0:
            raise ValueError(f"Float with log=True needs low > 0, got low={low!r}")
        self.low, self.high, self.log = low, high, bool(log)
        self._span = high - low
        if self.log:
            self._log_low = math.log(low)
            self._log_span = math.log(high) - self._log_low

    def sample(self, rng: np.random.Generator) -> float:
        """A uniform (log-uniform with ``log=True``) value in ``[low, high]``."""
        if self.log:
            value = math.exp(self._log_low + self._log_span * rng.random())
        else:
            value = self.low + self._span * rng.random()
        return min(max(value, self.low), self.high)

    def default(self) -> float:
        """The midpoint (the geometric midpoint with ``log=True``)."""
        if self.log:
            return min(max(math.exp(self._log_low + 0.5 * self._log_span), self.low), self.high)
        return self.low + 0.5 * self._span

    def cardinality(self) -> float:
        """Infinite (``low < high``)."""
        return math.inf

    def is_valid(self, value: Any) -> bool:
        """Whether ``value`` is a finite number in ``[low, high]``."""
        t = type(value)
        if t is float or t is int:
            return self.low <= value <= self.high  # False for NaN and infinities (bounds are finite)
        return is_number(value) and self.low <= float(value) <= self.high

    def validate(self, value: Any, path: str = "") -> list[str]:
        """See :meth:`Param.validate`."""
        if not is_number(value):
            return [at(path, f"expected a number, got {describe(value)}")]
        value = float(value) if isinstance(value, (float, np.floating)) else value
        if isinstance(value, float) and not math.isfinite(value):
            return [at(path, f"{value} is not finite")]
        return self._out_of_bounds(value, path)

    def _canon(self, value: Any) -> Any:
        if type(value) is float:
            return value + 0.0  # -0.0 is 0.0: one configuration, one dedup key
        return float(value) + 0.0 if is_number(value) else value

    def to_dict(self) -> dict:
        """See :meth:`Param.to_dict`."""
        return {"type": "float", "low": self.low, "high": self.high, "log": self.log}


class Int(Numeric):
    """An integer in ``[low, high]`` (both inclusive). Bools are not integers here."""

    kind = "int"

    def __init__(self, low: int, high: int):
        if not is_int(low) or not is_int(high):
            raise ValueError(f"Int bounds must be integers, got low={low!r}, high={high!r}")
        low, high = int(low), int(high)
        if low >= high:
            raise ValueError(f"Int needs low < high, got low={low!r}, high={high!r}")
        self.low, self.high = low, high
        self._span = high - low

    def sample(self, rng: np.random.Generator) -> int:
        """A uniform integer in ``[low, high]``."""
        if self._span < 2**62:
            return self.low + int(rng.integers(self._span + 1))
        return self.low + round(rng.random() * self._span)

    def default(self) -> int:
        """The midpoint, rounded down."""
        return self.low + self._span // 2

    def cardinality(self) -> int:
        """``high - low + 1``."""
        return self._span + 1

    def _value_at(self, index: int) -> int:
        return self.low + index

    def is_valid(self, value: Any) -> bool:
        """Whether ``value`` is an integer in ``[low, high]``."""
        if type(value) is int:
            return self.low <= value <= self.high
        return is_int(value) and self.low <= int(value) <= self.high

    def validate(self, value: Any, path: str = "") -> list[str]:
        """See :meth:`Param.validate`."""
        if not is_int(value):
            return [at(path, f"expected an integer, got {describe(value)}")]
        return self._out_of_bounds(int(value), path)

    def _canon(self, value: Any) -> Any:
        return int(value) if is_int(value) else value

    def to_dict(self) -> dict:
        """See :meth:`Param.to_dict`."""
        return {"type": "int", "low": self.low, "high": self.high}


class Categorical(Param):
    """One of a fixed list of JSON scalars (str, int, float, bool or None)."""

    kind = "categorical"

    def __init__(self, choices: Sequence[Any]):
        if isinstance(choices, (str, bytes)) or not isinstance(choices, Sequence):
            raise ValueError(f"Categorical choices must be a list, got {choices!r}")
        choices = list(choices)
        if not choices:
            raise ValueError("Categorical needs at least one choice")
        index: dict[tuple, int] = {}
        for i, choice in enumerate(choices):
            if isinstance(choice, (np.generic,)):
                choice = choices[i] = choice.item()
            key = choice_key(choice)
            if key is None or (isinstance(choice, float) and not math.isfinite(choice)):
                raise ValueError(f"Categorical choices must be finite JSON scalars, got {choice!r}")
            if key in index:
                raise ValueError(f"Categorical has duplicate choice {choice!r}")
            index[key] = i
        self.choices = choices
        self._index = index
        self._by_str = {c: i for i, c in enumerate(choices) if isinstance(c, str)}

    def index(self, value: Any) -> int | None:
        """Position of ``value`` in :attr:`choices`, None if absent.

        ``1`` and ``1.0`` match (the same JSON number), ``True`` and ``1`` do not.
        """
        if type(value) is str:
            return self._by_str.get(value)
        key = choice_key(value)
        return None if key is None else self._index.get(key)

    def sample(self, rng: np.random.Generator) -> Any:
        """A uniformly drawn choice."""
        return self.choices[int(rng.integers(len(self.choices)))]

    def default(self) -> Any:
        """The first choice."""
        return self.choices[0]

    def cardinality(self) -> int:
        """The number of choices."""
        return len(self.choices)

    def _value_at(self, index: int) -> Any:
        return self.choices[index]

    def is_valid(self, value: Any) -> bool:
        """Whether ``value`` is one of the choices."""
        return self.index(value) is not None

    def validate(self, value: Any, path: str = "") -> list[str]:
        """See :meth:`Param.validate`."""
        if self.index(value) is None:
            return [at(path, f"{value!r} not in choices {self.choices!r}")]
        return []

    def _canon(self, value: Any) -> Any:
        i = self.index(value)
        return value if i is None else self.choices[i]

    def to_dict(self) -> dict:
        """See :meth:`Param.to_dict`."""
        return {"type": "categorical", "choices": list(self.choices)}


class Bool(Param):
    """``true`` or ``false`` (ints 0/1 are not bools here; :meth:`repair` converts them)."""

    kind = "bool"

    def sample(self, rng: np.random.Generator) -> bool:
        """True or False with equal probability."""
        return bool(rng.random() < 0.5)

    def default(self) -> bool:
        """False."""
        return False

    def cardinality(self) -> int:
        """Two."""
        return 2

    def _value_at(self, index: int) -> bool:
        return bool(index)

    def is_valid(self, value: Any) -> bool:
        """Whether ``value`` is a bool (numpy's too)."""
        return type(value) is bool or isinstance(value, np.bool_)

    def validate(self, value: Any, path: str = "") -> list[str]:
        """See :meth:`Param.validate`."""
        return [] if self.is_valid(value) else [at(path, f"expected a bool, got {describe(value)}")]

    def _canon(self, value: Any) -> Any:
        return bool(value) if isinstance(value, np.bool_) else value

    def to_dict(self) -> dict:
        """See :meth:`Param.to_dict`."""
        return {"type": "bool"}


class Text(Param):
    """Free text of ``min_len..max_len`` characters (prompts, instructions)."""

    kind = "text"

    def __init__(self, max_len: int, min_len: int = 0, default: str = ""):
        if not is_int(max_len) or not is_int(min_len):
            raise ValueError(f"Text lengths must be integers, got max_len={max_len!r}, min_len={min_len!r}")
        if min_len < 0 or max_len < min_len:
            raise ValueError(f"Text needs 0 <= min_len <= max_len, got min_len={min_len}, max_len={max_len}")
        if not isinstance(default, str):
            raise ValueError(f"Text default must be a string, got {default!r}")
        if not min_len <= len(default) <= max_len:
            raise ValueError(f"Text default has {len(default)} characters, outside [{min_len}, {max_len}]")
        self.max_len, self.min_len, self._default = int(max_len), int(min_len), default

    def sample(self, rng: np.random.Generator) -> str:
        """The default text: random characters make no useful prompt, operators edit the default."""
        return self._default

    def default(self) -> str:
        """The ``default`` given to the constructor."""
        return self._default

    def cardinality(self) -> int | float:
        """One (the empty text) when ``max_len`` is 0, else infinite."""
        return 1 if self.max_len == 0 else math.inf

    def _value_at(self, index: int) -> str:
        return ""

    def is_valid(self, value: Any) -> bool:
        """Whether ``value`` is a string of ``min_len..max_len`` characters."""
        return type(value) is str and self.min_len <= len(value) <= self.max_len

    def validate(self, value: Any, path: str = "") -> list[str]:
        """See :meth:`Param.validate`."""
        if not isinstance(value, str):
            return [at(path, f"expected a string, got {describe(value)}")]
        if len(value) > self.max_len:
            return [at(path, f"text length {len(value)} above max_len {self.max_len}")]
        if len(value) < self.min_len:
            return [at(path, f"text length {len(value)} below min_len {self.min_len}")]
        return []

    def _canon(self, value: Any) -> Any:
        return str(value) if isinstance(value, str) else value

    def to_dict(self) -> dict:
        """See :meth:`Param.to_dict`."""
        return {"type": "text", "max_len": self.max_len, "min_len": self.min_len, "default": self._default}


class Seq(Param):
    """A list of ``min_len..max_len`` items of one parameter type (e.g. Archon-style layers)."""

    kind = "seq"

    def __init__(self, item: Param | Mapping, min_len: int, max_len: int):
        item = _as_param(item)
        if not is_int(max_len) or not is_int(min_len):
            raise ValueError(f"Seq lengths must be integers, got min_len={min_len!r}, max_len={max_len!r}")
        if min_len < 0 or max_len < min_len:
            raise ValueError(f"Seq needs 0 <= min_len <= max_len, got min_len={min_len}, max_len={max_len}")
        if max_len < 1:
            raise ValueError("Seq needs max_len >= 1")
        self.item, self.min_len, self.max_len = item, int(min_len), int(max_len)
        self._fixed = self.min_len == self.max_len
        # Seq of plain Floats (the arm) is the hot path: check and convert whole lists in one loop
        self._float_item = type(item) is Float

    def sample(self, rng: np.random.Generator) -> list:
        """A uniformly drawn length, each item sampled."""
        n = self.min_len if self._fixed else int(rng.integers(self.min_len, self.max_len + 1))
        if self._float_item and not self.item.log:
            lo, span, hi = self.item.low, self.item._span, self.item.high
            return [min(lo + span * u, hi) for u in rng.random(n).tolist()]
        return [self.item.sample(rng) for _ in range(n)]

    def default(self) -> list:
        """``min_len`` default items."""
        return [self.item.default() for _ in range(self.min_len)]

    def cardinality(self) -> int | float:
        """The sum over lengths ``n`` of (the item's cardinality) ** ``n``."""
        items = self.item.cardinality()
        return sum(items ** n for n in range(self.min_len, self.max_len + 1)) if items != math.inf else math.inf

    def _value_at(self, index: int) -> list:
        items = self.item.cardinality()
        for n in range(self.min_len, self.max_len + 1):  # shorter lists first
            if index < items ** n:
                return [self.item.value_at(digit) for digit in _digits(index, [items] * n)]
            index -= items ** n
        raise IndexError(index)  # unreachable: value_at checked the index

    def is_valid(self, value: Any) -> bool:
        """Whether ``value`` is a list of ``min_len..max_len`` valid items."""
        if type(value) is not list or not self.min_len <= len(value) <= self.max_len:
            return False
        if self._float_item:
            lo, hi = self.item.low, self.item.high
            for x in value:
                t = type(x)
                if not ((t is float or t is int) and lo <= x <= hi) and not self.item.is_valid(x):
                    return False
            return True
        ok = self.item.is_valid
        for x in value:
            if not ok(x):
                return False
        return True

    def validate(self, value: Any, path: str = "") -> list[str]:
        """See :meth:`Param.validate`; item problems carry their index, e.g. ``layers[2].k``."""
        if not isinstance(value, list):
            return [at(path, f"expected a list, got {describe(value)}")]
        problems = []
        if len(value) > self.max_len:
            problems.append(at(path, f"length {len(value)} above max_len {self.max_len}"))
        elif len(value) < self.min_len:
            problems.append(at(path, f"length {len(value)} below min_len {self.min_len}"))
        item = self.item
        for i, x in enumerate(value):
            if not item.is_valid(x):
                problems.extend(item.validate(x, f"{path}[{i}]"))
        return problems

    def walk(self, value: Any, path: Path = ()) -> Iterator[tuple[Path, Param, Any]]:
        """See :meth:`Param.walk`; items follow the list, with their index in the path."""
        yield path, self, value
        if isinstance(value, list):
            for i, x in enumerate(value):
                yield from self.item.walk(x, (*path, i))

    def _canon(self, value: Any) -> Any:
        if not isinstance(value, list):
            return value
        if self._float_item:
            return [x if type(x) is float else self.item._canon(x) for x in value]
        canon = self.item._canon
        return [canon(x) for x in value]

    def to_dict(self) -> dict:
        """See :meth:`Param.to_dict`."""
        return {"type": "seq", "item": self.item.to_dict(), "min_len": self.min_len, "max_len": self.max_len}


def _digits(index: int, radices: Sequence[int]) -> list[int]:
    """``index`` in the mixed radix ``radices``, the first digit the most significant."""
    digits = []
    for radix in reversed(radices):
        index, digit = divmod(index, radix)
        digits.append(digit)
    return digits[::-1]


def _as_param(value: Any) -> Param:
    if isinstance(value, Param):
        return value
    if isinstance(value, Mapping):
        return Space(value)
    raise ValueError(f"expected a parameter (Float, Int, Categorical, Bool, Text, Seq, Space), got {value!r}")


class Space(Param):
    """A named set of parameters; a configuration is a dict with exactly these keys.

    Parameters
    ----------
    params : mapping of str to Param
        The parameters, in the order used by :meth:`walk`, the unit views and prompts.
        Plain dicts of parameters are wrapped into nested Spaces.

    Examples
    --------
    >>> space = Space({"temperature": Float(0.0, 2.0), "model": Categorical(["a", "b"]),
    ...                "layers": Seq(Space({"k": Int(1, 8)}), 1, 4)})
    >>> config = space.sample(np.random.default_rng(0))
    >>> space.validate(config)
    []
    """

    kind = "space"

    def __init__(self, params: Mapping[str, Param]):
        if not isinstance(params, Mapping):
            raise ValueError(f"Space takes a dict of parameters, got {params!r}")
        if not params:
            raise ValueError("Space needs at least one parameter")
        items = []
        for key, param in params.items():
            if not isinstance(key, str) or not key:
                raise ValueError(f"Space keys must be non-empty strings, got {key!r}")
            try:
                items.append((key, _as_param(param)))
            except ValueError as exc:
                raise ValueError(f"Space key {key!r}: {exc}") from None
        self.params: dict[str, Param] = dict(items)
        self._items = tuple(items)
        self._n = len(items)

    def __getitem__(self, key: str) -> Param:
        return self.params[key]

    def __iter__(self):
        return iter(self.params)

    def __len__(self) -> int:
        return self._n

    # -- sampling and checking -------------------------------------------------------------------
    def sample(self, rng: np.random.Generator) -> dict:
        """A random valid configuration (deterministic given ``rng``)."""
        return {k: p.sample(rng) for k, p in self._items}

    def default(self) -> dict:
        """The configuration made of every parameter's default."""
        return {k: p.default() for k, p in self._items}

    def cardinality(self) -> int | float:
        """The product of the parameters' cardinalities: how many distinct configurations there are."""
        return math.prod(p.cardinality() for _, p in self._items)

    def _value_at(self, index: int) -> dict:
        digits = _digits(index, [p.cardinality() for _, p in self._items])
        return {k: p.value_at(d) for (k, p), d in zip(self._items, digits)}

    def is_valid(self, value: Any) -> bool:
        """Whether ``value`` is a dict with exactly these keys, each value valid."""
        if type(value) is not dict or len(value) != self._n:
            return False
        for k, p in self._items:
            if k not in value or not p.is_valid(value[k]):
                return False
        return True  # same size and every declared key present: no unknown keys

    def validate(self, config: Any, path: str = "") -> list[str]:
        """Every problem of ``config``, each with its path; an empty list means valid.

        Messages look like ``layers[2].model: 'gpt-9' not in choices ['a', 'b']``,
        ``missing key 'x'``, ``unknown key 'y'``, ``temperature: 3.5 above high 2.0``.
        """
        if self.is_valid(config):
            return []
        if not isinstance(config, dict):
            return [at(path, f"expected a dict, got {describe(config)}")]
        problems = []
        prefix = f"{path}." if path else ""
        for k, p in self._items:
            if k not in config:
                problems.append(at(path, f"missing key {k!r}"))
            elif not p.is_valid(config[k]):
                problems.extend(p.validate(config[k], prefix + k))
        for k in config:
            if k not in self.params:
                problems.append(at(path, f"unknown key {k!r}"))
        return problems

    def walk(self, value: Any, path: Path = ()) -> Iterator[tuple[Path, Param, Any]]:
        """``(path, param, value)`` of ``value`` (path ``()``) and of every value inside it.

        Pre-order, in declaration and index order; a path is a tuple of keys and list indices,
        e.g. ``("layers", 2, "temperature")``. Keys missing from a dict are skipped, unknown
        keys are not visited.

        Examples
        --------
        >>> space = Space({"t": Float(0, 1), "layers": Seq(Space({"k": Int(1, 8)}), 1, 4)})
        >>> [(path, p.kind) for path, p, _ in space.walk({"t": 0.5, "layers": [{"k": 2}]})]
        [((), 'space'), (('t',), 'float'), (('layers',), 'seq'), (('layers', 0), 'space'), (('layers', 0, 'k'), 'int')]
        """
        yield path, self, value
        if isinstance(value, dict):
            for k, p in self._items:
                if k in value:
                    yield from p.walk(value[k], (*path, k))

    # -- identity ----------------------------------------------------------------------------------
    def _canon(self, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        out = {k: p._canon(value[k]) for k, p in self._items if k in value}
        if len(out) != len(value):  # keep unknown keys so that distinct invalid configs stay distinct
            out.update((k, json_copy(v)) for k, v in value.items() if k not in self.params)
        return out

    def canonical(self, config: dict) -> str:
        """Stable JSON text of ``config``: sorted keys, compact separators, Float leaves as floats.

        ``json.loads(space.canonical(c)) == c`` for every valid ``c``. Raises ValueError for values
        JSON cannot hold (NaN, objects).
        """
        try:
            return _CANONICAL_ENCODER.encode(self._canon(config))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"configuration is not canonical JSON: {exc}") from None

    def hash(self, config: dict) -> str:
        """sha256 hex digest of :meth:`canonical` (the dedup key)."""
        return self.digest(self.canonical(config))

    @staticmethod
    def digest(canonical: str) -> str:
        """The :meth:`hash` of a configuration whose :meth:`canonical` text is already at hand."""
        return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()

    # -- repair and serialization ----------------------------------------------------------------------
    def repair(self, config: Any, fallback: dict | None = None,
               rng: np.random.Generator | None = None) -> dict:
        """Best-effort valid configuration from LLM output (see :func:`qd.space.repair.repair_config`).

        Raises
        ------
        ValueError
            If ``config`` is not a dict. Any dict input is repaired without raising.
        """
        return repair_config(self, config, fallback, rng)

    def to_dict(self) -> dict:
        """JSON description: ``{"type": "space", "params": {name: param dict}}``."""
        return {"type": "space", "params": {k: p.to_dict() for k, p in self._items}}

    @classmethod
    def from_dict(cls, d: Mapping) -> Space:
        """Inverse of :meth:`to_dict` (also accepts the bare ``params`` mapping)."""
        if not isinstance(d, Mapping):
            raise ValueError(f"Space.from_dict expects a dict, got {d!r}")
        if d.get("type") == "space" and "params" in d:
            param = param_from_dict(d)
        else:
            param = param_from_dict({"type": "space", "params": d})
        assert isinstance(param, Space)
        return param


def param_from_dict(d: Mapping) -> Param:
    """Build any parameter from its :meth:`Param.to_dict` description."""
    if not isinstance(d, Mapping) or "type" not in d:
        raise ValueError(f"a parameter description needs a 'type' key, got {d!r}")
    kind = d["type"]
    args = {k: v for k, v in d.items() if k != "type"}
    try:
        if kind == "float":
            return Float(**args)
        if kind == "int":
            return Int(**args)
        if kind == "categorical":
            return Categorical(**args)
        if kind == "bool":
            return Bool(**args)
        if kind == "text":
            return Text(**args)
        if kind == "seq":
            return Seq(param_from_dict(args.pop("item")), **args)
        if kind == "space":
            params = args.get("params")
            if not isinstance(params, Mapping) or set(args) != {"params"}:
                raise ValueError(f"space description needs exactly a 'params' dict, got {d!r}")
            return Space({k: param_from_dict(v) for k, v in params.items()})
    except (TypeError, KeyError) as exc:
        raise ValueError(f"bad {kind!r} parameter description {dict(d)!r}: {exc}") from None
    raise ValueError(f"unknown parameter type {kind!r}; known: float, int, categorical, bool, text, seq, space")
