"""GridArchive: a regular grid over measure space (MAP-Elites' original archive)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from qd.archives.base import ArchiveBase

__all__ = ["GridArchive"]


class GridArchive(ArchiveBase):
    """An archive whose cells tile measure space in a regular grid (pyribs's ``GridArchive``).

    Parameters
    ----------
    dims : sequence of int
        Cells along each measure.
    ranges : sequence of (float, float)
        ``(low, high)`` of each measure. Values outside go to the edge cells.
    solution_dim : int or tuple of int, optional
        Shape of numeric solutions; None (default) stores configurations.
    epsilon : float
        Added before flooring so values that land on a boundary through floating-point
        error go to the upper cell (pyribs's rule).
    **kwargs
        See :class:`qd.archives.base.ArchiveBase` (``measure_names``, ``objective_name``,
        ``qd_score_offset``, ``learning_rate``, ``threshold_min``, ``seed``, the dtypes,
        ``extra_fields``).

    Examples
    --------
    >>> archive = GridArchive(dims=[10, 10], ranges=[(0, 1), (0, 1)], measure_names=["calls", "tokens"])
    >>> int(archive.add_single({"k": 3}, 0.9, [0.25, 0.5])["status"])
    2
    """

    def __init__(self, dims: Sequence[int], ranges: Sequence[Sequence[float]], *,
                 solution_dim: int | tuple[int, ...] | None = None, epsilon: float = 1e-6, **kwargs: Any):
        dims_arr = self._check_dims(dims)
        if len(np.asarray(ranges, dtype=float).reshape(-1, 2)) != len(dims_arr):
            raise ValueError(f"{len(dims_arr)} dims but {len(ranges)} ranges")
        super().__init__(int(np.prod(dims_arr)), ranges, solution_dim=solution_dim, **kwargs)
        self._epsilon_value = float(epsilon)
        self._epsilon = np.asarray(epsilon, dtype=self._meas_dt)
        self._set_dims(dims_arr)

    @staticmethod
    def _check_dims(dims: Sequence[int]) -> np.ndarray:
        dims_arr = np.asarray(dims)
        if np.issubdtype(dims_arr.dtype, np.floating) and np.all(np.isfinite(dims_arr)) \
                and np.all(dims_arr == np.round(dims_arr)):
            dims_arr = dims_arr.astype(np.int64)  # whole numbers as floats, as pyribs accepts
        if dims_arr.ndim != 1 or len(dims_arr) == 0 or not np.issubdtype(dims_arr.dtype, np.integer):
            raise ValueError(f"dims must be a non-empty list of integers, got {dims!r}")
        if np.any(dims_arr < 1):
            raise ValueError(f"dims must all be >= 1, got {dims_arr.tolist()}")
        return dims_arr.astype(np.int32)

    def _set_dims(self, dims: np.ndarray) -> None:
        self._dims = dims  # int32, so the index arithmetic promotes exactly as pyribs's does
        self._interval = self._upper - self._lower
        self._strides = np.cumprod(np.r_[self._dims[1:], 1][::-1].astype(np.int64))[::-1].copy()
        # Plain-Python copies for the single-item path: scalar numpy arithmetic is slower.
        self._geometry = list(zip(self._lower.tolist(), self._dims.tolist(), self._interval.tolist()))

    @property
    def dims(self) -> np.ndarray:
        """Cells along each measure."""
        return self._dims.copy()

    @property
    def epsilon(self) -> Any:
        """Added before flooring (see the class parameters)."""
        return self._epsilon

    @property
    def boundaries(self) -> list[np.ndarray]:
        """Cell edges along each measure (``dims[i] + 1`` values each)."""
        return [np.linspace(lo, hi, n + 1) for lo, hi, n in zip(self._lower, self._upper, self._dims)]

    def _index_cells(self, measures: np.ndarray) -> np.ndarray:
        grid = (self._dims * (measures - self._lower) + self._epsilon) / self._interval
        # Clipping the float grid coordinate equals pyribs's truncate-then-clip for every value
        # that fits an int32, and keeps far-out measures in the edge cell instead of overflowing.
        np.clip(grid, 0, self._dims - 1, out=grid)
        return grid.astype(np.int64) @ self._strides

    def _index_single(self, measures: list[float]) -> int:
        # Same arithmetic, in the same order, as _index_cells: both paths agree on every cell.
        flat, eps = 0, self._epsilon_value
        for v, (lo, n, span) in zip(measures, self._geometry):
            g = (n * (v - lo) + eps) / span
            flat = flat * n + (0 if g < 0 else n - 1 if g >= n - 1 else int(g))
        return flat

    def grid_to_int_index(self, grid_indices: Any) -> np.ndarray:
        """Flat indices (int32) of ``(batch, measure_dim)`` grid coordinates."""
        grid_indices = np.asarray(grid_indices)
        if grid_indices.ndim != 2 or grid_indices.shape[1] != len(self._dims):
            raise ValueError(f"Expected grid_indices to be an array with shape (batch_size, {len(self._dims)}) "
                             f"(i.e. shape (batch_size, measure_dim)) but it had shape {grid_indices.shape}.")
        return np.ravel_multi_index(grid_indices.T, self._dims).astype(np.int32)

    def int_to_grid_index(self, int_indices: Any) -> np.ndarray:
        """Grid coordinates ``(batch, measure_dim)`` (int32) of flat indices."""
        int_indices = np.asarray(int_indices)
        if int_indices.ndim != 1:
            raise ValueError(f"Expected int_indices to be a 1D array, but it had shape {int_indices.shape}")
        return np.asarray(np.unravel_index(int_indices, self._dims), dtype=np.int32).T

    def retessellate(self, new_dims: Sequence[int]) -> None:
        """Change the grid resolution and re-insert every elite (pyribs's method).

        Elites that land in one new cell resolve to the best, as in :meth:`add`; the
        new cells enter ``data()`` in ascending order. Statistics are recomputed from
        the re-inserted elites.

        Raises
        ------
        ValueError
            When ``learning_rate`` is not 1 (thresholds have no meaning on a new grid)
            or ``new_dims`` has another number of measures.
        """
        if not np.isclose(self._lr, 1):
            raise ValueError("cannot retessellate an archive with learning rate not equal to 1")
        dims = self._check_dims(new_dims)
        if len(dims) != self._measure_dim:
            raise ValueError(f"new_dims has {len(dims)} dimensions; the archive has {self._measure_dim} measures")
        data = self.data()
        del data["index"], data["threshold"]
        self._cells = int(np.prod(dims))
        self._set_dims(dims)
        fields = {name: arr for name, arr in data.items() if name in self._fields}
        self._fields = {}
        self._allocate()
        self.add(data["solution"] if self._solution_dim is not None else list(data["solution"]),
                 data["objective"], data["measures"], **fields)

    def _params(self) -> dict[str, Any]:
        return dict(dims=self._dims.tolist(), ranges=[list(r) for r in self.ranges], epsilon=self._epsilon_value,
                    **super()._params())
