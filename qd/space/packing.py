"""Configurations of numeric spaces as bytes: a binary identity and a compact stored form.

A space whose parameters are all ``Float`` or ``Int``, or fixed-length ``Seq`` of them
(:meth:`Layout.of`), gives every valid configuration one byte string (:meth:`Layout.pack`): its
values in the order of its canonical JSON (sorted keys, then list order), each as 8
little-endian bytes, float64 for a Float and int64 for an Int, each value as :meth:`Space.canonical
<qd.space.Space.canonical>` writes it (a Float's ``-0.0`` as ``0.0``; a plain float in a Seq as it
is). Two valid configurations have the same bytes exactly when their canonical JSON texts are
equal, so the bytes identify a configuration as the text does, made without formatting a float
(the scheduler's dedup keys, the run store's configuration column: docs/architecture.md, Run
directory).
"""
from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

from qd.space.schema import _CANONICAL_ENCODER, Float, Int, Seq, Space

__all__ = ["Layout"]

_INT64 = (-(1 << 63), (1 << 63) - 1)


class Layout:
    """Where each value of a numeric space's configuration sits in its bytes.

    Parameters
    ----------
    fields : sequence of (str, str, int or None)
        ``(key, kind, length)`` in sorted key order: kind ``"f"`` (Float, float64) or ``"i"``
        (Int, int64), length None for a single value or the fixed length of a Seq.
    """

    def __init__(self, fields: Sequence[tuple[str, str, int | None]]):
        self.fields = tuple((str(k), str(kind), None if n is None else int(n)) for k, kind, n in fields)
        if [k for k, _, _ in self.fields] != sorted(k for k, _, _ in self.fields) or not self.fields:
            raise ValueError(f"a layout needs its keys in sorted order, got {[k for k, _, _ in self.fields]}")
        if any(kind not in ("f", "i") or (n is not None and n < 0) for _, kind, n in self.fields):
            raise ValueError(f"bad layout fields {self.fields!r}")
        codes = {"f": "d", "i": "q"}  # struct's float64 and int64
        self._struct = struct.Struct("<" + "".join(codes[kind] * (1 if n is None else n) for _, kind, n in self.fields))
        self.size = self._struct.size
        self._single = self.fields[0][0] if len(self.fields) == 1 and self.fields[0][2] is not None else None
        # per value: "i" an Int, "f" a Float, "s" a Float in a Seq (whose plain floats Space.canonical keeps as
        # they are, -0.0 included; a Float on its own is written 0.0)
        self._kinds = [kind if n is None or kind == "i" else "s" for _, kind, n in self.fields
                       for _ in range(1 if n is None else n)]

    @classmethod
    def of(cls, space: Space) -> Layout | None:
        """The layout of ``space``, or None when it is not a flat numeric space.

        Flat numeric: every parameter a Float, an Int whose bounds fit int64, or a Seq of one of
        those with ``min_len == max_len``.
        """
        fields = []
        for key in sorted(space.params):
            param, length = space.params[key], None
            if isinstance(param, Seq):
                if param.min_len != param.max_len:
                    return None
                param, length = param.item, param.min_len
            if type(param) is Float:
                fields.append((key, "f", length))
            elif type(param) is Int and _INT64[0] <= param.low and param.high <= _INT64[1]:
                fields.append((key, "i", length))
            else:
                return None
        return cls(fields)

    def pack(self, config: dict) -> bytes:
        """The bytes of a valid configuration (raises for one that does not fit the layout)."""
        if self._single is not None:  # one Seq (the arm's angles): its list as it is
            values = config[self._single]
        else:
            values = []
            for key, _, n in self.fields:
                if n is None:
                    values.append(config[key])
                else:
                    values.extend(config[key])
        if 0 in values:  # a zero may be -0.0: made 0.0 where Space.canonical makes it so
            values = [v if kind == "i" or (kind == "s" and type(v) is float) else float(v) + 0.0
                      for v, kind in zip(values, self._kinds)]
        try:
            return self._struct.pack(*values)
        except struct.error as exc:
            raise ValueError(f"configuration does not fit {self!r}: {exc}") from None

    def unpack(self, data: bytes) -> dict:
        """The configuration of :meth:`pack`'s bytes (keys in sorted order, as the canonical JSON)."""
        values = self._struct.unpack(data)
        out, at = {}, 0
        for key, _, n in self.fields:
            if n is None:
                out[key] = values[at]
                at += 1
            else:
                out[key] = list(values[at:at + n])
                at += n
        return out

    def canonical(self, config: dict) -> str:
        """The canonical JSON of an :meth:`unpack` ed configuration (:meth:`qd.space.Space.canonical`'s text)."""
        return _CANONICAL_ENCODER.encode(config)

    def to_list(self) -> list[list]:
        """The fields as JSON (``[[key, kind, length], ...]``; :meth:`from_list` reads it back)."""
        return [[k, kind, n] for k, kind, n in self.fields]

    @classmethod
    def from_list(cls, fields: Sequence[Sequence[Any]]) -> Layout:
        """Inverse of :meth:`to_list`."""
        return cls([(k, kind, n) for k, kind, n in fields])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Layout) and other.fields == self.fields

    def __hash__(self) -> int:
        return hash(self.fields)

    def __repr__(self) -> str:
        return f"Layout({list(self.fields)!r})"
