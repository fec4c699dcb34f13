"""A set of 64-bit dedup keys that costs 10 bytes per key.

The scheduler remembers every configuration it has handed out so that none is evaluated twice.
Kept as sha256 hex strings in a Python set that costs about 170 bytes per evaluation; a million
evaluations would keep 170 MB for dedup alone. :class:`KeySet` keeps the first 8 bytes of each
digest (:func:`key_of`) as one sorted ``int64`` array plus a small Python set of recent keys
that is merged into the array when it fills, and a bitmap of the keys' low bits (16 bits per
key) that answers most misses before a binary search: memory is 10 bytes per key, and a lookup
is a set lookup, a bit test and, for keys the bitmap cannot rule out, a binary search (whose
cost grows with the array: most lookups of a search are misses, so it seldom runs). Two
distinct configurations share a key with probability about ``n² / 2⁶⁵`` (3·10⁻⁸ after a
million): the cost of such a collision is one configuration skipped as a duplicate.
"""
from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable, Iterator

import numpy as np

__all__ = ["KeySet", "key_of", "key_of_bytes"]

_MERGE_AT = 1 << 16  # recent keys held in the Python set before they join the sorted array
_BITS_PER_KEY = 16  # of the bitmap: a key not in the set passes its bit test with chance about 1/16


def key_of(digest: str) -> int:
    """The signed 64-bit key of a configuration's sha256 hex digest (its first 8 bytes).

    Signed, so that it fits SQLite's INTEGER and numpy's ``int64``.
    """
    value = int(digest[:16], 16)
    return value - (1 << 64) if value >= 1 << 63 else value


def key_of_bytes(data: bytes) -> int:
    """The key of a configuration identified by bytes (``qd.space.packing``): its sha256's first 8 bytes, signed.

    The same rule as :func:`key_of`, applied to the sha256 of ``data``.
    """
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "big", signed=True)


class KeySet:
    """A set of signed 64-bit integers (dedup keys): a sorted array plus recent additions.

    Parameters
    ----------
    keys : iterable of int or array of int64, optional
        Initial keys.
    """

    def __init__(self, keys: Iterable[int] | np.ndarray = ()):
        self._sorted = np.unique(np.fromiter(keys, dtype=np.int64) if not isinstance(keys, np.ndarray)
                                 else keys.astype(np.int64, copy=False))
        self._view = memoryview(self._sorted)  # a lookup bisects it: Python ints, no numpy scalar per probe
        self._recent: set[int] = set()
        self._index_bits()

    def __len__(self) -> int:
        return len(self._sorted) + len(self._recent)

    def __contains__(self, key: object) -> bool:
        if key in self._recent:
            return True
        low = key & self._low  # type: ignore[operator]
        if not self._bits[low >> 3] >> (low & 7) & 1:
            return False
        view = self._view
        i = bisect.bisect_left(view, key)  # type: ignore[call-overload]
        return i < len(view) and view[i] == key

    def __iter__(self) -> Iterator[int]:
        return iter(self.array().tolist())

    def add(self, key: int) -> None:
        """Add one key (a set's ``add``: one already there changes nothing)."""
        if key not in self:
            self.add_unseen(key)

    def add_unseen(self, key: int) -> None:
        """Add a key the caller just found missing (no second lookup)."""
        self._recent.add(key)
        if len(self._recent) >= _MERGE_AT:
            self._merge()

    def update(self, keys: Iterable[int] | np.ndarray) -> None:
        """Add many keys."""
        arr = np.fromiter(keys, dtype=np.int64) if not isinstance(keys, np.ndarray) else keys.astype(np.int64)
        self._merge(arr)

    def contains_many(self, keys: np.ndarray) -> np.ndarray:
        """Membership of each key of an ``int64`` array (a bool array)."""
        keys = np.asarray(keys, dtype=np.int64)
        self._merge()  # one sorted array: a vectorized lookup, not a Python loop over the recent keys
        arr = self._sorted
        pos = np.minimum(arr.searchsorted(keys), max(len(arr) - 1, 0))
        return arr[pos] == keys if len(arr) else np.zeros(len(keys), dtype=bool)

    def array(self) -> np.ndarray:
        """Every key, sorted (an ``int64`` array; merges the recent keys first)."""
        self._merge()
        return self._sorted

    @property
    def nbytes(self) -> int:
        """Bytes held by the sorted array and the bitmap (the recent keys cost about 60 bytes each until merged)."""
        return int(self._sorted.nbytes) + len(self._bits)

    def _index_bits(self, keys: np.ndarray | None = None) -> None:
        """Set the bitmap's bits of ``keys`` (None: rebuild it for the whole array, sized for it)."""
        nbits = 1 << max(16, int(len(self._sorted) * _BITS_PER_KEY).bit_length())
        if keys is None or nbits > 8 * len(self._bits):  # a new size: every key's bit moves
            self._low = nbits - 1
            self._bits = bytearray(nbits // 8)
            keys = self._sorted
        low = keys & self._low
        bits = np.frombuffer(self._bits, dtype=np.uint8)
        np.bitwise_or.at(bits, low >> 3, np.left_shift(1, low & 7).astype(np.uint8))

    def _merge(self, more: np.ndarray | None = None) -> None:
        if more is not None and len(more):
            if self._recent:
                self._merge()
            self._sorted = np.unique(np.concatenate([self._sorted, more]))
            self._view = memoryview(self._sorted)
            self._index_bits(more)
            return
        if not self._recent:
            return
        # The recent keys are not in the array (insert() looked): one new array, sorted in place,
        # rather than the copies np.unique makes (they leave the allocator with freed memory that
        # grows with the set).
        merged = np.empty(len(self._sorted) + len(self._recent), dtype=np.int64)
        merged[:len(self._sorted)] = self._sorted
        recent = np.fromiter(self._recent, dtype=np.int64, count=len(self._recent))
        merged[len(self._sorted):] = recent
        self._recent = set()
        self._view.release()
        self._sorted = merged  # the old array goes before the sort takes its buffer
        merged.sort(kind="stable")
        self._view = memoryview(merged)
        self._index_bits(recent)
