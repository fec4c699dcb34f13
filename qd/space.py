"""Search-space schema: typed parameters whose values form plain JSON configurations.

A :class:`Space` maps names to parameters (:class:`Float`, :class:`Int`, :class:`Categorical`,
:class:`Bool`, :class:`Text`, :class:`Seq` and nested :class:`Space`). A configuration is a
plain JSON dict; the space samples, validates, canonicalizes, hashes, encodes, describes
(for LLM prompts) and repairs such dicts.

The search calls :meth:`Space.validate`, :meth:`Space.canonical` and :meth:`Space.hash` once
per offspring, so each parameter has a lean boolean check (``_ok``) that runs first; the
detailed, path-carrying messages are built only for configurations that fail it.
"""
from __future__ import annotations

import difflib
import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["Param", "Float", "Int", "Categorical", "Bool", "Text", "Seq", "Space", "param_from_dict", "Path"]

Path = tuple  # a leaf's location: dict keys (str) and list indices (int), e.g. ("layers", 2, "temperature")


class _Missing:
    """Marks an absent value (None is a legitimate categorical choice)."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()

# One encoder for every canonical() call: json.dumps with keyword arguments builds a new one each time.
_CANONICAL_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_TRUE_WORDS = frozenset({"true", "yes", "y", "t", "on", "1", "1.0"})
_FALSE_WORDS = frozenset({"false", "no", "n", "f", "off", "0", "0.0"})


def _at(path: str, message: str) -> str:
    return f"{path}: {message}" if path else message


def _describe(value: Any) -> str:
    """``type repr`` of a bad value, with long reprs shortened so messages stay readable."""
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _is_number(value: Any) -> bool:
    """int/float (numpy ones too), but not bool."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _json_copy(value: Any) -> Any:
    """Copy of the dict/list skeleton of a JSON-like value (scalars are immutable and shared)."""
    if isinstance(value, dict):
        return {k: _json_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_copy(v) for v in value]
    return value


def _parse_number(text: str) -> float | None:
    """``"0.5"``, ``" '3' "``, ``"1e-3,"`` -> float; anything else -> None."""
    text = text.strip(" \t\r\n'\"`,;")
    try:
        return float(text)
    except ValueError:
        return None


def _clamped_number(value: Any, low: float, high: float) -> int | float | None:
    """A number (or numeric text) as a Python int/float clamped to ``[low, high]``; None if it is none.

    Never raises: repairing odd LLM output must not fail.
    """
    try:
        if isinstance(value, str):
            value = _parse_number(value)
        if not _is_number(value):
            return None
        if isinstance(value, (np.integer, np.floating)):
            value = value.item()
        if value != value:  # NaN
            return None
        return low if value < low else high if value > high else value
    except Exception:  # noqa: BLE001
        return None


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


class Param:
    """Base class of every parameter type.

    Attributes
    ----------
    encoded_dim : int
        Length of this parameter's slice in :meth:`Space.encode`.
    """

    encoded_dim: int = 0
    kind: str = "param"
    # True when the parameter is or contains Float/Int leaves (what Gaussian and Iso+LineDD move).
    _has_numeric: bool = False

    # -- public API -------------------------------------------------------------------------
    def sample(self, rng: np.random.Generator) -> Any:
        """A random valid value."""
        raise NotImplementedError

    def default(self) -> Any:
        """A deterministic valid value."""
        raise NotImplementedError

    def validate(self, value: Any, path: str = "") -> list[str]:
        """Every problem of ``value``, each message prefixed by ``path``; empty when valid."""
        raise NotImplementedError

    def repair(self, value: Any, fallback: Any = MISSING, rng: np.random.Generator | None = None) -> Any:
        """Best-effort valid value close to ``value``; ``fallback`` replaces what cannot be salvaged."""
        return self._repair(value, fallback, rng)

    def to_dict(self) -> dict:
        """JSON description; :func:`param_from_dict` inverts it."""
        raise NotImplementedError

    def to_prompt(self) -> str:
        """Compact schema text for LLM prompts."""
        raise NotImplementedError

    # -- internals (overridden per type) --------------------------------------------------------
    def _ok(self, value: Any) -> bool:
        return not self.validate(value, "")

    def _canon(self, value: Any) -> Any:
        return value

    def _encode(self, value: Any, out: list) -> None:
        raise NotImplementedError

    def _repair(self, value: Any, fallback: Any, rng: np.random.Generator | None) -> Any:
        raise NotImplementedError

    def _fallback(self, fallback: Any, rng: np.random.Generator | None) -> Any:
        """The repaired fallback, or the default when there is none."""
        if fallback is MISSING:
            return self.default()
        return self._repair(fallback, MISSING, rng)

    def _leaves(self, value: Any, path: tuple, out: list) -> None:
        """Append ``(path, param, value)`` for every Float/Int leaf (Space.numeric_leaves)."""

    def _raw(self, value: Any, out: list, shape: list) -> None:
        """Append every Float/Int leaf value in order; ``shape`` gets the variable Seq lengths."""

    def _rebuild(self, value: Any, values: list, pos: int) -> tuple[Any, int]:
        """Copy of ``value`` with its Float/Int leaves taken from ``values[pos:]``; returns the next pos."""
        return _json_copy(value), pos

    def _count_leaves(self, value: Any) -> int:
        return 1

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.to_dict() == self.to_dict()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items() if k != "type")
        return f"{type(self).__name__}({args})"


class _Numeric(Param):
    """Shared bounds logic of Float and Int."""

    low: float
    high: float
    _has_numeric = True
    encoded_dim = 1

    def _to_unit(self, value: Any) -> float:
        raise NotImplementedError

    def _from_unit(self, u: float) -> Any:
        raise NotImplementedError

    def _out_of_bounds(self, value: float, path: str) -> list[str]:
        if value < self.low:
            return [_at(path, f"{value} below low {self.low}")]
        if value > self.high:
            return [_at(path, f"{value} above high {self.high}")]
        return []

    def _encode(self, value: Any, out: list) -> None:
        try:
            u = self._to_unit(value) if _is_number(value) else 0.0
        except (ValueError, OverflowError):
            u = 0.0
        out.append(u if u == u else 0.0)  # NaN -> 0

    def _leaves(self, value: Any, path: tuple, out: list) -> None:
        out.append((path, self, value))

    def _raw(self, value: Any, out: list, shape: list) -> None:
        out.append(value)

    def _rebuild(self, value: Any, values: list, pos: int) -> tuple[Any, int]:
        return values[pos], pos + 1


class Float(_Numeric):
    """A real number in ``[low, high]``; ``log=True`` samples and normalizes on a log scale.

    Ints are accepted as values (bools are not); NaN and infinities never are.
    """

    kind = "float"

    def __init__(self, low: float, high: float, log: bool = False):
        if not _is_number(low) or not _is_number(high):
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
        if self.log:
            value = math.exp(self._log_low + self._log_span * rng.random())
        else:
            value = self.low + self._span * rng.random()
        return min(max(value, self.low), self.high)

    def default(self) -> float:
        if self.log:
            return min(max(math.exp(self._log_low + 0.5 * self._log_span), self.low), self.high)
        return self.low + 0.5 * self._span

    def _ok(self, value: Any) -> bool:
        t = type(value)
        if t is float or t is int:
            return self.low <= value <= self.high  # False for NaN and infinities (bounds are finite)
        return _is_number(value) and self.low <= float(value) <= self.high

    def validate(self, value: Any, path: str = "") -> list[str]:
        if not _is_number(value):
            return [_at(path, f"expected a number, got {_describe(value)}")]
        value = float(value) if isinstance(value, (float, np.floating)) else value
        if isinstance(value, float) and not math.isfinite(value):
            return [_at(path, f"{value} is not finite")]
        return self._out_of_bounds(value, path)

    def _canon(self, value: Any) -> Any:
        if type(value) is float:
            return value
        return float(value) if _is_number(value) else value

    def _to_unit(self, value: Any) -> float:
        value = min(max(float(value), self.low), self.high)
        if self.log:
            return (math.log(value) - self._log_low) / self._log_span
        return (value - self.low) / self._span

    def _from_unit(self, u: float) -> float:
        if self.log:
            value = math.exp(self._log_low + u * self._log_span)
        else:
            value = self.low + u * self._span
        # clamp: u may lie outside [0, 1] and low + 1 * span can miss high by an ulp
        return min(max(value, self.low), self.high)

    def _repair(self, value: Any, fallback: Any, rng: np.random.Generator | None) -> Any:
        value = _clamped_number(value, self.low, self.high)
        return self._fallback(fallback, rng) if value is None else value

    def to_dict(self) -> dict:
        return {"type": "float", "low": self.low, "high": self.high, "log": self.log}

    def to_prompt(self) -> str:
        return f"float in [{self.low!r}, {self.high!r}]" + (" (log scale)" if self.log else "")


class Int(_Numeric):
    """An integer in ``[low, high]`` (both inclusive). Bools are not integers here."""

    kind = "int"

    def __init__(self, low: int, high: int):
        if not _is_int(low) or not _is_int(high):
            raise ValueError(f"Int bounds must be integers, got low={low!r}, high={high!r}")
        low, high = int(low), int(high)
        if low >= high:
            raise ValueError(f"Int needs low < high, got low={low!r}, high={high!r}")
        self.low, self.high = low, high
        self._span = high - low

    def sample(self, rng: np.random.Generator) -> int:
        if self._span < 2**62:
            return self.low + int(rng.integers(self._span + 1))
        return self.low + round(rng.random() * self._span)

    def default(self) -> int:
        return self.low + self._span // 2

    def _ok(self, value: Any) -> bool:
        if type(value) is int:
            return self.low <= value <= self.high
        return _is_int(value) and self.low <= int(value) <= self.high

    def validate(self, value: Any, path: str = "") -> list[str]:
        if not _is_int(value):
            return [_at(path, f"expected an integer, got {_describe(value)}")]
        return self._out_of_bounds(int(value), path)

    def _canon(self, value: Any) -> Any:
        return int(value) if _is_int(value) else value

    def _to_unit(self, value: Any) -> float:
        return (min(max(float(value), self.low), self.high) - self.low) / self._span

    def _from_unit(self, u: float) -> int:
        return min(max(self.low + round(u * self._span), self.low), self.high)

    def _repair(self, value: Any, fallback: Any, rng: np.random.Generator | None) -> Any:
        value = _clamped_number(value, self.low, self.high)
        if value is None:
            return self._fallback(fallback, rng)
        return value if type(value) is int else min(max(int(round(value)), self.low), self.high)

    def to_dict(self) -> dict:
        return {"type": "int", "low": self.low, "high": self.high}

    def to_prompt(self) -> str:
        return f"int in [{self.low}, {self.high}]"


def _choice_key(value: Any) -> tuple | None:
    """Type-aware identity of a JSON scalar, so that True != 1 while 1 == 1.0 (same JSON number)."""
    if value is None:
        return ("null",)
    if isinstance(value, (bool, np.bool_)):
        return ("bool", bool(value))
    if _is_number(value):
        value = value.item() if isinstance(value, (np.integer, np.floating)) else value
        return ("num", value) if value == value else None
    if isinstance(value, str):
        return ("str", value)
    return None


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
            key = _choice_key(choice)
            if key is None or (isinstance(choice, float) and not math.isfinite(choice)):
                raise ValueError(f"Categorical choices must be finite JSON scalars, got {choice!r}")
            if key in index:
                raise ValueError(f"Categorical has duplicate choice {choice!r}")
            index[key] = i
        self.choices = choices
        self._index = index
        self._by_str = {c: i for i, c in enumerate(choices) if isinstance(c, str)}
        self._lower: dict[str, list[int]] = {}
        for i, c in enumerate(choices):
            if isinstance(c, str):
                self._lower.setdefault(c.strip().lower(), []).append(i)
        self._numbers = [(c, i) for i, c in enumerate(choices) if _is_number(c)]
        self.encoded_dim = len(choices)

    def _find(self, value: Any) -> int | None:
        if type(value) is str:
            return self._by_str.get(value)
        key = _choice_key(value)
        return None if key is None else self._index.get(key)

    def sample(self, rng: np.random.Generator) -> Any:
        return self.choices[int(rng.integers(len(self.choices)))]

    def default(self) -> Any:
        return self.choices[0]

    def _ok(self, value: Any) -> bool:
        return self._find(value) is not None

    def validate(self, value: Any, path: str = "") -> list[str]:
        if self._find(value) is None:
            return [_at(path, f"{value!r} not in choices {self.choices!r}")]
        return []

    def _canon(self, value: Any) -> Any:
        i = self._find(value)
        return value if i is None else self.choices[i]

    def _encode(self, value: Any, out: list) -> None:
        onehot = [0.0] * len(self.choices)
        i = self._find(value)
        if i is not None:
            onehot[i] = 1.0
        out.extend(onehot)

    def _repair(self, value: Any, fallback: Any, rng: np.random.Generator | None) -> Any:
        try:
            i = self._snap(value)
        except Exception:  # noqa: BLE001
            i = None
        return self.choices[i] if i is not None else self._fallback(fallback, rng)

    def _snap(self, value: Any) -> int | None:
        """Index of the choice ``value`` unambiguously means, or None."""
        i = self._find(value)
        if i is not None:
            return i
        if isinstance(value, str):
            text = value.strip().strip("'\"`").strip()
            lowered = text.lower()
            hits = self._lower.get(lowered, [])
            if len(hits) == 1:
                return hits[0]
            # a non-string choice written as text: "3", "true", "null"
            for j, c in enumerate(self.choices):
                if not isinstance(c, str) and lowered in (json.dumps(c), str(c).lower()):
                    return j
            number = _parse_number(text)
            if number is not None and number == number:
                j = self._find(number)
                if j is not None:
                    return j
            strings = list(self._lower)
            close = difflib.get_close_matches(lowered, strings, n=2, cutoff=0.6)
            if close:
                ratios = [difflib.SequenceMatcher(None, lowered, c).ratio() for c in close]
                if (len(close) == 1 or ratios[0] > ratios[1]) and len(self._lower[close[0]]) == 1:
                    return self._lower[close[0]][0]
            return None
        if _is_number(value) and self._numbers and value == value:
            # the nearest numeric choice, when only one is nearest
            dists = sorted((abs(float(c) - float(value)), j) for c, j in self._numbers)
            if len(dists) == 1 or dists[0][0] < dists[1][0]:
                return dists[0][1]
            return None
        if _is_number(value) or isinstance(value, (bool, np.bool_)):
            hits = self._lower.get(json.dumps(value.item() if isinstance(value, np.generic) else value), [])
            return hits[0] if len(hits) == 1 else None
        return None

    def to_dict(self) -> dict:
        return {"type": "categorical", "choices": list(self.choices)}

    def to_prompt(self) -> str:
        return "one of " + json.dumps(self.choices, separators=(",", ":"), ensure_ascii=False)


class Bool(Param):
    """``true`` or ``false`` (ints 0/1 are not bools here; :meth:`repair` converts them)."""

    kind = "bool"
    encoded_dim = 1

    def sample(self, rng: np.random.Generator) -> bool:
        return bool(rng.random() < 0.5)

    def default(self) -> bool:
        return False

    def _ok(self, value: Any) -> bool:
        return type(value) is bool or isinstance(value, np.bool_)

    def validate(self, value: Any, path: str = "") -> list[str]:
        return [] if self._ok(value) else [_at(path, f"expected a bool, got {_describe(value)}")]

    def _canon(self, value: Any) -> Any:
        return bool(value) if isinstance(value, np.bool_) else value

    def _encode(self, value: Any, out: list) -> None:
        out.append(1.0 if value is True or (isinstance(value, np.bool_) and value) else 0.0)

    def _repair(self, value: Any, fallback: Any, rng: np.random.Generator | None) -> Any:
        try:
            if isinstance(value, (bool, np.bool_)):
                return bool(value)
            if _is_number(value) and value in (0, 1):
                return bool(value)
            if isinstance(value, str):
                word = value.strip().strip("'\"`").strip().lower()
                if word in _TRUE_WORDS:
                    return True
                if word in _FALSE_WORDS:
                    return False
        except Exception:  # noqa: BLE001
            pass
        return self._fallback(fallback, rng)

    def to_dict(self) -> dict:
        return {"type": "bool"}

    def to_prompt(self) -> str:
        return "bool"


class Text(Param):
    """Free text of ``min_len..max_len`` characters (prompts, instructions)."""

    kind = "text"
    encoded_dim = 1

    def __init__(self, max_len: int, min_len: int = 0, default: str = ""):
        if not _is_int(max_len) or not _is_int(min_len):
            raise ValueError(f"Text lengths must be integers, got max_len={max_len!r}, min_len={min_len!r}")
        if min_len < 0 or max_len < min_len:
            raise ValueError(f"Text needs 0 <= min_len <= max_len, got min_len={min_len}, max_len={max_len}")
        if not isinstance(default, str):
            raise ValueError(f"Text default must be a string, got {default!r}")
        if not min_len <= len(default) <= max_len:
            raise ValueError(f"Text default has {len(default)} characters, outside [{min_len}, {max_len}]")
        self.max_len, self.min_len, self._default = int(max_len), int(min_len), default

    def sample(self, rng: np.random.Generator) -> str:
        # random characters make no useful prompt: the default is the starting point, operators edit it
        return self._default

    def default(self) -> str:
        return self._default

    def _ok(self, value: Any) -> bool:
        return type(value) is str and self.min_len <= len(value) <= self.max_len

    def validate(self, value: Any, path: str = "") -> list[str]:
        if not isinstance(value, str):
            return [_at(path, f"expected a string, got {_describe(value)}")]
        if len(value) > self.max_len:
            return [_at(path, f"text length {len(value)} above max_len {self.max_len}")]
        if len(value) < self.min_len:
            return [_at(path, f"text length {len(value)} below min_len {self.min_len}")]
        return []

    def _canon(self, value: Any) -> Any:
        return str(value) if isinstance(value, str) else value

    def _encode(self, value: Any, out: list) -> None:
        out.append(min(len(value) / self.max_len, 1.0) if isinstance(value, str) and self.max_len else 0.0)

    def _repair(self, value: Any, fallback: Any, rng: np.random.Generator | None) -> Any:
        try:
            if isinstance(value, (bool, np.bool_)):
                value = json.dumps(bool(value))
            elif _is_number(value):
                value = str(value.item() if isinstance(value, np.generic) else value)
            if isinstance(value, str):
                value = str(value)[: self.max_len]
                if len(value) >= self.min_len:
                    return value
        except Exception:  # noqa: BLE001
            pass
        return self._fallback(fallback, rng)

    def to_dict(self) -> dict:
        return {"type": "text", "max_len": self.max_len, "min_len": self.min_len, "default": self._default}

    def to_prompt(self) -> str:
        if self.min_len:
            return f"text of {self.min_len}..{self.max_len} chars"
        return f"text ≤ {self.max_len} chars"


class Seq(Param):
    """A list of ``min_len..max_len`` items of one parameter type (e.g. Archon-style layers)."""

    kind = "seq"

    def __init__(self, item: Param | Mapping, min_len: int, max_len: int):
        item = _as_param(item)
        if not _is_int(max_len) or not _is_int(min_len):
            raise ValueError(f"Seq lengths must be integers, got min_len={min_len!r}, max_len={max_len!r}")
        if min_len < 0 or max_len < min_len:
            raise ValueError(f"Seq needs 0 <= min_len <= max_len, got min_len={min_len}, max_len={max_len}")
        if max_len < 1:
            raise ValueError("Seq needs max_len >= 1")
        self.item, self.min_len, self.max_len = item, int(min_len), int(max_len)
        self.encoded_dim = 1 + self.max_len * item.encoded_dim
        self._has_numeric = item._has_numeric
        self._fixed = self.min_len == self.max_len
        # Seq of plain Floats (the arm) is the hot path: check and convert whole lists in one loop
        self._float_item = type(item) is Float
        self._numeric_item = isinstance(item, _Numeric)

    def sample(self, rng: np.random.Generator) -> list:
        n = self.min_len if self._fixed else int(rng.integers(self.min_len, self.max_len + 1))
        if self._float_item and not self.item.log:
            lo, span, hi = self.item.low, self.item._span, self.item.high
            return [min(lo + span * u, hi) for u in rng.random(n).tolist()]
        return [self.item.sample(rng) for _ in range(n)]

    def default(self) -> list:
        return [self.item.default() for _ in range(self.min_len)]

    def _ok(self, value: Any) -> bool:
        if type(value) is not list or not self.min_len <= len(value) <= self.max_len:
            return False
        if self._float_item:
            lo, hi = self.item.low, self.item.high
            for x in value:
                t = type(x)
                if not ((t is float or t is int) and lo <= x <= hi) and not self.item._ok(x):
                    return False
            return True
        ok = self.item._ok
        for x in value:
            if not ok(x):
                return False
        return True

    def validate(self, value: Any, path: str = "") -> list[str]:
        if not isinstance(value, list):
            return [_at(path, f"expected a list, got {_describe(value)}")]
        problems = []
        if len(value) > self.max_len:
            problems.append(_at(path, f"length {len(value)} above max_len {self.max_len}"))
        elif len(value) < self.min_len:
            problems.append(_at(path, f"length {len(value)} below min_len {self.min_len}"))
        item = self.item
        for i, x in enumerate(value):
            if not item._ok(x):
                problems.extend(item.validate(x, f"{path}[{i}]"))
        return problems

    def _canon(self, value: Any) -> Any:
        if not isinstance(value, list):
            return value
        if self._float_item:
            return [x if type(x) is float else self.item._canon(x) for x in value]
        canon = self.item._canon
        return [canon(x) for x in value]

    def _encode(self, value: Any, out: list) -> None:
        if not isinstance(value, list):
            out.extend([0.0] * self.encoded_dim)
            return
        out.append(min(len(value) / self.max_len, 1.0))
        if self._float_item and not self.item.log:
            lo, hi, span = self.item.low, self.item.high, self.item._span
            if all(type(x) is float and lo <= x <= hi for x in value[: self.max_len]):  # the common case
                out.extend([(x - lo) / span for x in value[: self.max_len]])
                out.extend([0.0] * (self.max_len - min(len(value), self.max_len)))
                return
        for x in value[: self.max_len]:
            self.item._encode(x, out)
        out.extend([0.0] * ((self.max_len - min(len(value), self.max_len)) * self.item.encoded_dim))

    def _repair(self, value: Any, fallback: Any, rng: np.random.Generator | None) -> Any:
        try:
            value = _maybe_json(value, list)
            if isinstance(value, tuple):
                value = list(value)
            if not isinstance(value, list):
                return self._fallback(fallback, rng)
            fb = _maybe_json(fallback, list)
            fb = list(fb) if isinstance(fb, (list, tuple)) else []
            item = self.item
            out = [item._repair(x, fb[i] if i < len(fb) else MISSING, rng)
                   for i, x in enumerate(value[: self.max_len])]
            for i in range(len(out), self.min_len):
                if i < len(fb):
                    out.append(item._repair(fb[i], MISSING, rng))
                else:
                    out.append(item.sample(rng) if rng is not None else item.default())
            return out
        except Exception:  # noqa: BLE001
            return self.default() if fallback is MISSING else self._fallback(fallback, rng)

    def _fallback(self, fallback: Any, rng: np.random.Generator | None) -> Any:
        if fallback is MISSING:
            return self.default()
        try:
            return self._repair(fallback, MISSING, rng)
        except Exception:  # noqa: BLE001
            return self.default()

    def _leaves(self, value: Any, path: tuple, out: list) -> None:
        if self._has_numeric and isinstance(value, list):
            for i, x in enumerate(value):
                self.item._leaves(x, (*path, i), out)

    def _raw(self, value: Any, out: list, shape: list) -> None:
        if not self._fixed:
            shape.append(len(value))
        if self._numeric_item:
            out.extend(value)
        else:
            for x in value:
                self.item._raw(x, out, shape)

    def _rebuild(self, value: Any, values: list, pos: int) -> tuple[Any, int]:
        if self._numeric_item:
            end = pos + len(value)
            return values[pos:end], end
        out = []
        for x in value:
            x, pos = self.item._rebuild(x, values, pos)
            out.append(x)
        return out, pos

    def _count_leaves(self, value: Any) -> int:
        if not isinstance(value, list):
            return 1
        return sum(self.item._count_leaves(x) for x in value)

    def to_dict(self) -> dict:
        return {"type": "seq", "item": self.item.to_dict(), "min_len": self.min_len, "max_len": self.max_len}

    def to_prompt(self) -> str:
        n = str(self.min_len) if self._fixed else f"{self.min_len}..{self.max_len}"
        return f"list of {n} × {self.item.to_prompt()}"


class _UnitMap:
    """Vectorized unit <-> value maps for one ordered list of Float/Int leaves."""

    def __init__(self, params: Sequence[_Numeric]):
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
        x = np.array(raw, dtype=float)
        u = (x - self.low) / self.span
        if self.log_idx.size:
            v = np.clip(x[self.log_idx], self.low[self.log_idx], self.high[self.log_idx])
            u[self.log_idx] = (np.log(v) - self.log_low) / self.log_span
        return u

    def from_unit(self, units: np.ndarray | Sequence[float]) -> list:
        u = np.minimum(np.maximum(np.asarray(units, dtype=float), 0.0), 1.0)
        x = self.low + u * self.span
        if self.log_idx.size:
            x[self.log_idx] = np.exp(self.log_low + u[self.log_idx] * self.log_span)
        # clamp: low + 1 * span can miss high by an ulp, exp/log round-trips likewise
        np.minimum(np.maximum(x, self.low, out=x), self.high, out=x)
        values = x.tolist()
        if self.int_idx:
            if self._exact_ints:
                for i in self.int_idx:
                    values[i] = int(round(values[i]))
            else:  # ranges beyond float precision: map through Python ints
                for i in self.int_idx:
                    values[i] = self._params[i]._from_unit(float(u[i]))
        return values


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
        The parameters, in the order used by :meth:`encode`, :meth:`numeric_leaves` and prompts.
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
        self._numeric_items = tuple((k, p) for k, p in items if p._has_numeric)
        self._has_numeric = bool(self._numeric_items)
        self._norm_keys: dict[str, list[str]] = {}
        for key in self.params:
            self._norm_keys.setdefault(_norm_key(key), []).append(key)
        self.encoded_dim = sum(p.encoded_dim for _, p in items)
        self._unit_maps: dict[tuple, _UnitMap] = {}

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

    def _ok(self, value: Any) -> bool:
        if type(value) is not dict or len(value) != self._n:
            return False
        for k, p in self._items:
            if k not in value or not p._ok(value[k]):
                return False
        return True  # same size and every declared key present: no unknown keys

    def validate(self, config: Any, path: str = "") -> list[str]:
        """Every problem of ``config``, each with its path; an empty list means valid.

        Messages look like ``layers[2].model: 'gpt-9' not in choices ['a', 'b']``,
        ``missing key 'x'``, ``unknown key 'y'``, ``temperature: 3.5 above high 2.0``.
        """
        if self._ok(config):
            return []
        if not isinstance(config, dict):
            return [_at(path, f"expected a dict, got {_describe(config)}")]
        problems = []
        prefix = f"{path}." if path else ""
        for k, p in self._items:
            if k not in config:
                problems.append(_at(path, f"missing key {k!r}"))
            elif not p._ok(config[k]):
                problems.extend(p.validate(config[k], prefix + k))
        for k in config:
            if k not in self.params:
                problems.append(_at(path, f"unknown key {k!r}"))
        return problems

    # -- identity ----------------------------------------------------------------------------------
    def _canon(self, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        out = {k: p._canon(value[k]) for k, p in self._items if k in value}
        if len(out) != len(value):  # keep unknown keys so that distinct invalid configs stay distinct
            out.update((k, _json_copy(v)) for k, v in value.items() if k not in self.params)
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

    # -- numeric views -------------------------------------------------------------------------------
    def encode(self, config: dict) -> np.ndarray:
        """Fixed-length numeric view in [0, 1] (length :attr:`encoded_dim`).

        Float/Int normalized (log-aware), Categorical one-hot, Bool 0/1, Text length fraction,
        Seq length fraction followed by ``max_len`` item encodings (zero-padded).
        """
        out: list[float] = []
        self._encode(config, out)
        return np.asarray(out, dtype=float)

    def _encode(self, value: Any, out: list) -> None:
        if not isinstance(value, dict):
            out.extend([0.0] * self.encoded_dim)
            return
        for k, p in self._items:
            if k in value:
                p._encode(value[k], out)
            else:
                out.extend([0.0] * p.encoded_dim)

    def numeric_leaves(self, config: dict) -> list[tuple[Path, Param, Any]]:
        """``(path, param, value)`` of every Float/Int leaf, in declaration and index order.

        A path is a tuple of keys and list indices, e.g. ``("layers", 2, "temperature")``.
        """
        out: list = []
        self._leaves(config, (), out)
        return out

    def _leaves(self, value: Any, path: tuple, out: list) -> None:
        if isinstance(value, dict):
            for k, p in self._numeric_items:
                if k in value:
                    p._leaves(value[k], (*path, k), out)

    def to_unit(self, config: dict) -> tuple[np.ndarray, list[Path]]:
        """Float/Int leaves mapped to [0, 1] (log-aware), with their paths (see :meth:`numeric_leaves`)."""
        leaves = self.numeric_leaves(config)
        unit = np.fromiter((p._to_unit(v) for _, p, v in leaves), dtype=float, count=len(leaves))
        return unit, [path for path, _, _ in leaves]

    def from_unit(self, config: dict, unit: Sequence[float] | np.ndarray, paths: Sequence[Path]) -> dict:
        """Copy of ``config`` with the leaves at ``paths`` set from unit values (clamped, ints rounded)."""
        if len(unit) != len(paths):
            raise ValueError(f"{len(unit)} unit values for {len(paths)} paths")
        out = _json_copy(config)
        values = unit.tolist() if isinstance(unit, np.ndarray) else list(unit)
        for path, u in zip(paths, values):
            param: Param = self
            container: Any = out
            for key in path[:-1]:
                param = param.params[key] if isinstance(param, Space) else param.item  # type: ignore[attr-defined]
                container = container[key]
            last = path[-1]
            param = param.params[last] if isinstance(param, Space) else param.item  # type: ignore[attr-defined]
            if not isinstance(param, _Numeric):
                raise ValueError(f"path {path!r} is not a Float/Int leaf")
            container[last] = param._from_unit(min(max(float(u), 0.0), 1.0))
        return out

    def _raw(self, value: Any, out: list, shape: list) -> None:
        for k, p in self._numeric_items:
            p._raw(value[k], out, shape)

    def _rebuild(self, value: Any, values: list, pos: int) -> tuple[Any, int]:
        out = {}
        for k, p in self._items:
            if p._has_numeric:
                out[k], pos = p._rebuild(value[k], values, pos)
            else:
                out[k] = _json_copy(value[k])
        return out, pos

    def _unit_map(self, config: dict, shape: tuple) -> _UnitMap:
        umap = self._unit_maps.get(shape)
        if umap is None:
            if len(self._unit_maps) >= 4096:  # many Seq-length combinations: keep memory bounded
                self._unit_maps.clear()
            umap = self._unit_maps[shape] = _UnitMap([p for _, p, _ in self.numeric_leaves(config)])
        return umap

    def unit_view(self, config: dict) -> tuple[np.ndarray, tuple]:
        """Fast variant of :meth:`to_unit` for valid configs: unit values and a structure key.

        The structure key holds the lengths of the variable-length Seqs: two configs with equal
        keys have their numeric leaves at the same paths. Used by Gaussian and Iso+LineDD.
        """
        raw: list = []
        shape: list = []
        self._raw(config, raw, shape)
        key = tuple(shape)
        return self._unit_map(config, key).to_unit(raw), key

    def with_units(self, config: dict, units: np.ndarray | Sequence[float], key: tuple | None = None) -> dict:
        """Inverse of :meth:`unit_view`: copy of valid ``config`` with its numeric leaves from ``units``.

        Units are clamped to [0, 1], ints rounded. ``key`` is the structure key from
        :meth:`unit_view` (recomputed when omitted).
        """
        if key is None:
            shape: list = []
            self._raw(config, [], shape)
            key = tuple(shape)
        umap = self._unit_map(config, key)
        if len(units) != umap.size:
            raise ValueError(f"{len(units)} unit values for {umap.size} numeric leaves")
        return self._rebuild(config, umap.from_unit(units), 0)[0]

    def _count_leaves(self, value: Any) -> int:
        if not isinstance(value, dict):
            return 1
        return sum(p._count_leaves(value[k]) for k, p in self._items if k in value)

    # -- text and repair -----------------------------------------------------------------------------
    def to_prompt(self) -> str:
        """Compact schema text, e.g. ``{"temperature": float in [0.0, 2.0], "model": one of ["a","b"]}``."""
        body = ", ".join(f"{json.dumps(k, ensure_ascii=False)}: {p.to_prompt()}" for k, p in self._items)
        return "{" + body + "}"

    def repair(self, config: Any, fallback: dict | None = None,
               rng: np.random.Generator | None = None) -> dict:
        """Best-effort valid configuration from LLM output.

        Clamps numbers, rounds ints, parses numeric strings, coerces ``"true"``/``"no"``/0/1 to
        bools, snaps categoricals to an unambiguous choice (case-insensitive or unique closest
        match), truncates text, trims or pads Seqs (padding from ``fallback`` or, with ``rng``,
        sampled items, else defaults), drops unknown keys and fills missing or hopeless values from
        ``fallback`` (typically the parent) or the defaults. A valid config comes back equal.

        Raises
        ------
        ValueError
            If ``config`` is not a dict. Any dict input is repaired without raising.
        """
        if not isinstance(config, dict):
            raise ValueError(f"repair expects a dict, got {_describe(config)}")
        return self._repair(config, fallback if isinstance(fallback, dict) else MISSING, rng)

    def _repair(self, value: Any, fallback: Any, rng: np.random.Generator | None) -> Any:
        value = _maybe_json(value, dict)
        if not isinstance(value, dict):
            return self._fallback(fallback, rng)
        fallback = _maybe_json(fallback, dict)
        fb = fallback if isinstance(fallback, dict) else {}
        # match keys the LLM spelt differently ("Temperature", "top-k") when unambiguous
        spelt: dict[str, Any] = {}
        for key in value:
            if isinstance(key, str) and key not in self.params:
                targets = self._norm_keys.get(_norm_key(key), [])
                if len(targets) == 1 and targets[0] not in value:
                    spelt.setdefault(targets[0], []).append(key)
        out = {}
        for k, p in self._items:
            fbv = fb[k] if k in fb else MISSING
            if k in value:
                out[k] = p._repair(value[k], fbv, rng)
            elif len(spelt.get(k, ())) == 1:
                out[k] = p._repair(value[spelt[k][0]], fbv, rng)
            else:
                out[k] = p._fallback(fbv, rng)
        return out

    def _fallback(self, fallback: Any, rng: np.random.Generator | None) -> Any:
        if isinstance(_maybe_json(fallback, dict), dict):
            return self._repair({}, fallback, rng)
        return self.default()

    # -- serialization -------------------------------------------------------------------------------
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
