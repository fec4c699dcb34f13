"""Measure values outside the archive's ranges: counted per measure, and a warning during the run.

An archive clips a value outside its range into the edge cell, so a too-narrow range silently
piles different configurations into the border of the map. :class:`RangeWatch` (a search
listener) warns once per measure when more than :data:`WARN_SHARE` of its values fall outside,
naming the range to widen; :func:`out_of_range` counts them from the run store for ``qd status``.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from qd.listeners import Evaluated, WarningListener
from qd.totals import count_out_of_range, count_out_of_range_many, describe

if TYPE_CHECKING:
    from qd.search import Search

__all__ = ["RangeWatch", "out_of_range", "WARN_SHARE", "WARN_MIN_VALUES"]

WARN_SHARE = 0.05      # warn when more than this share of a measure's values fall outside its range
WARN_MIN_VALUES = 20   # ... once at least this many values were seen (one early outlier is no signal)


def out_of_range(values: Iterable[dict[str, float]], names: Sequence[str], lows: Sequence[float],
                 highs: Sequence[float]) -> dict[str, dict[str, int]]:
    """Per measure: ``{"below": n, "above": n, "of": n}`` over measure dicts (finite values only)."""
    counts = {name: {"below": 0, "above": 0, "of": 0} for name in names}
    lows, highs = [float(v) for v in lows], [float(v) for v in highs]
    for measures in values:
        count_out_of_range(counts, measures, names, lows, highs)
    return counts


class RangeWatch(WarningListener):
    """Counts archive measure values outside the archive's bounds; warns once per measure (stderr)."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: dict[str, dict[str, int]] = {}

    def on_start(self, search: Search) -> None:
        """Start counting over the archive's measures."""
        self.counts = {name: {"below": 0, "above": 0, "of": 0} for name in search.measure_names}
        self._lows = [float(v) for v in search.archive.lower_bounds]
        self._highs = [float(v) for v in search.archive.upper_bounds]

    def on_results(self, search: Search, events: Sequence[Evaluated]) -> None:
        """Count these results' measure values; warn the first time a measure passes the threshold."""
        names = search.measure_names
        nan = math.nan
        points = [[e.measures.get(n, nan) for n in names] for e in events if e.result.status == "ok"]
        count_out_of_range_many(self.counts, points, names, self._lows, self._highs)
        for i, name in enumerate(names):
            c = self.counts[name]
            if (name not in self.warned and c["of"] >= WARN_MIN_VALUES
                    and c["below"] + c["above"] > WARN_SHARE * c["of"]):
                self.warn_once(name, describe(name, i, self._lows[i], self._highs[i], c))

    def as_dict(self) -> dict[str, Any]:
        """The counts per measure."""
        return {name: dict(c) for name, c in self.counts.items()}
