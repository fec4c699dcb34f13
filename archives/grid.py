"""GridArchive: a regular grid over measure space (MAP-Elites' original archive)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from qd.archives.base import ArchiveBase

__all__ = ["GridArchive"]


class GridArchive(ArchiveBase):
    """An archive whose cells tile measure space in a regular grid.

    Parameters
    ----------
    dims : sequence of int
        Cells along each measure.
    ranges : sequence of (float, float)
        ``(low, high)`` of each measure. Values outside go to the edge cells.
    epsilon : float
        Added before flooring so values that land on a boundary through floating-point
        error go to the upper cell (pyribs's rule).
    **kwargs
        See :class:`qd.archives.base.ArchiveBase` (``solution_dim``, ``measure_names``,
        ``objective_name``, ``qd_score_offset``, ``learning_rate``, ``threshold_min``,
        ``seed``).

    Examples
    --------
    >>> archive = GridArchive(dims=[10, 10], ranges=[(0, 1), (0, 1)], measure_names=["calls", "tokens"])
    >>> archive.add_single({"k": 3}, 0.9, [0.25, 0.5])["status"]
    2
    """

    def __init__(self, dims: Sequence[int], ranges: Sequence[Sequence[float]], *, epsilon: float = 1e-6,
                 **kwargs: Any):
        dims_arr = np.asarray(dims)
        if dims_arr.ndim != 1 or len(dims_arr) == 0 or not np.issubdtype(dims_arr.dtype, np.integer):
            raise ValueError(f"dims must be a non-empty list of integers, got {dims!r}")
        if np.any(dims_arr < 1):
            raise ValueError(f"dims must all be >= 1, got {dims_arr.tolist()}")
        if len(np.asarray(ranges, dtype=float).reshape(-1, 2)) != len(dims_arr):
            raise ValueError(f"{len(dims_arr)} dims but {len(ranges)} ranges")
        self._dims = dims_arr.astype(np.int64)
        super().__init__(int(np.prod(self._dims)), ranges, **kwargs)
        self._epsilon = float(epsilon)
        self._interval = self._upper - self._lower
        self._strides = np.cumprod(np.r_[self._dims[1:], 1][::-1])[::-1].astype(np.int64)
        # Plain-Python copies for the single-item path: scalar numpy arithmetic is slower.
        self._geometry = list(zip(self._lower.tolist(), self._upper.tolist(), self._dims.tolist(),
                                  self._interval.tolist()))

    @property
    def dims(self) -> np.ndarray:
        """Cells along each measure."""
        return self._dims.copy()

    @property
    def boundaries(self) -> list[np.ndarray]:
        """Cell edges along each measure (``dims[i] + 1`` values each)."""
        return [np.linspace(lo, hi, n + 1) for lo, hi, n, _ in self._geometry]

    def _index_cells(self, measures: np.ndarray) -> np.ndarray:
        m = np.maximum(measures, self._lower, out=measures)
        np.minimum(m, self._upper, out=m)
        grid = ((self._dims * (m - self._lower) + self._epsilon) / self._interval).astype(np.int64)
        np.minimum(grid, self._dims - 1, out=grid)
        return grid @ self._strides  # row-major flat index, as np.ravel_multi_index

    def _index_single(self, measures: list[float]) -> int:
        # Same arithmetic, in the same order, as index_of: both paths agree on every cell.
        flat, eps = 0, self._epsilon
        for v, (lo, hi, n, span) in zip(measures, self._geometry):
            v = lo if v < lo else hi if v > hi else v
            k = int((n * (v - lo) + eps) / span)
            flat = flat * n + (k if k < n else n - 1)
        return flat

    def grid_to_int_index(self, grid_indices: Any) -> np.ndarray:
        """Flat indices of ``(batch, measure_dim)`` grid coordinates."""
        return np.ravel_multi_index(np.asarray(grid_indices, dtype=np.int64).T, self._dims)

    def int_to_grid_index(self, int_indices: Any) -> np.ndarray:
        """Grid coordinates ``(batch, measure_dim)`` of flat indices."""
        return np.stack(np.unravel_index(np.asarray(int_indices, dtype=np.int64), self._dims), axis=1)

    def _params(self) -> dict[str, Any]:
        return dict(dims=self._dims.tolist(), ranges=[list(r) for r in self.ranges], epsilon=self._epsilon,
                    **super()._params())
