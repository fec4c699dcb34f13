"""Storage, insertion and statistics shared by every archive (pyribs 0.12 semantics).

An archive has a fixed number of cells. Subclasses only say which cell a point of
measure space falls in (:meth:`ArchiveBase.index_of` for a batch, ``_index_single`` for
one point); everything else lives here: the per-cell arrays, batch and single insertion
with pyribs's rules (CMA-MAE thresholds included), QD statistics, sampling, retrieval,
``data()`` in every pyribs return type, and the elite queries of :mod:`qd.archives.query`.

Same inputs give the same results as pyribs's ``GridArchive``/``CVTArchive``: statuses,
values, thresholds, elites, the order of ``data()`` (cells in order of first occupation;
a batch adds its new cells in ascending cell order), ``sample_elites`` draws from the same
seed, and statistics computed with the same floating-point operations. Where qd
deliberately differs, the README's "Archives and pyribs" section says where and why.

Two kinds of solution are stored. With ``solution_dim=None`` (the default) a solution is
a configuration (any JSON-able object, kept by reference in an object array). With an
int or tuple ``solution_dim`` it is a numeric array of that shape, as in pyribs.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from qd.archives.status import AddStatus

__all__ = ["ArchiveBase", "ArchiveStats"]

_BUILTIN_FIELDS = frozenset({"index", "objective", "measures", "solution", "threshold"})
_NOT_ADDED, _IMPROVE, _NEW = AddStatus.NOT_ADDED, AddStatus.IMPROVE_EXISTING, AddStatus.NEW


@dataclass(frozen=True)
class ArchiveStats:
    """QD metrics of an archive (pyribs's names; numbers are numpy scalars of the objective dtype).

    Attributes
    ----------
    num_elites : int
        Occupied cells.
    coverage : numpy float
        ``num_elites / cells``.
    qd_score : numpy float
        ``sum(objective - qd_score_offset)`` over elites.
    norm_qd_score : numpy float
        ``qd_score / cells``.
    obj_max : numpy float or None
        Best objective ever inserted (None while empty). In a non-elitist (CMA-MAE)
        archive that elite may since have been replaced.
    obj_mean : numpy float or None
        Mean objective of the current elites (None while empty).
    """

    num_elites: int
    coverage: Any
    qd_score: Any
    norm_qd_score: Any
    obj_max: Any
    obj_mean: Any


def _finite_float(value: Any, what: str) -> float:
    try:
        # Scalars first: this runs on every insertion. A one-element array or list too, as
        # pyribs's add_single takes ``objective[i:i + 1]``.
        number = float(value) if isinstance(value, (float, int, np.generic)) else float(np.asarray(value).item())
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{what} must be finite, got {number}")
    return number


def _parse_dtypes(dtype: Any, solution_dtype: Any, objective_dtype: Any,
                  measures_dtype: Any) -> tuple[np.dtype, np.dtype, np.dtype]:
    """Pyribs's dtype rules: ``dtype`` sets all three, or give them one by one (default float64)."""
    if isinstance(dtype, dict):
        raise ValueError("dtype must be one dtype; pass solution_dtype, objective_dtype and/or measures_dtype "
                         "to set them one by one")
    individual = (solution_dtype, objective_dtype, measures_dtype)
    if dtype is not None and any(d is not None for d in individual):
        raise ValueError("dtype cannot be used at the same time as solution_dtype, objective_dtype, "
                         "or measures_dtype")
    if dtype is not None:
        individual = (dtype, dtype, dtype)
    sol, obj, meas = (np.dtype(np.float64 if d is None else d) for d in individual)
    for name, dt in (("objective_dtype", obj), ("measures_dtype", meas)):
        if not np.issubdtype(dt, np.floating):
            raise ValueError(f"{name} must be a floating-point dtype, got {dt}")
    return sol, obj, meas


def _shape(dim: Any) -> tuple[int, ...]:
    return (int(dim),) if isinstance(dim, numbers.Integral) else tuple(int(d) for d in dim)


class ArchiveBase:
    """Cells, elites and insertion; subclasses map measures to cells.

    Parameters
    ----------
    cells : int
        Number of cells.
    ranges : sequence of (float, float)
        ``(low, high)`` of each measure.
    solution_dim : int or tuple of int, optional
        None (default): solutions are configurations (JSON-able objects). An int or a
        tuple: solutions are numeric arrays of that shape (pyribs's meaning; ``()`` is
        a scalar).
    measure_names : sequence of str, optional
        Names of the measures, used by plots, queries and exports
        (default ``measure_0``, ``measure_1``, ...).
    objective_name : str
        Name of the objective for plots and exports.
    qd_score_offset : float
        Subtracted from every objective in the QD score; choose a lower bound of the
        objective so every elite counts positively.
    learning_rate : float, optional
        CMA-MAE threshold learning rate in [0, 1]; None means 1 (plain MAP-Elites).
    threshold_min : float
        CMA-MAE initial cell threshold (default -inf). A finite value needs
        ``learning_rate``; ``learning_rate != 1`` needs a finite value (pyribs's rules).
    seed : int, optional
        Seeds the generator :meth:`sample_elites` uses when given no ``rng``.
    solution_dtype, objective_dtype, measures_dtype, dtype : numpy dtype, optional
        Storage dtypes as in pyribs (default float64; ``dtype`` sets all three).
        Configuration archives store solutions as objects whatever ``solution_dtype``.
    extra_fields : dict, optional
        pyribs-style typed fields, ``{name: (shape, dtype)}``; every insertion must
        pass them. Other keyword fields passed to :meth:`add` are created on first
        use (``id`` as int64, anything else as an object field).
    """

    def __init__(self, cells: int, ranges: Sequence[Sequence[float]], *,
                 solution_dim: int | tuple[int, ...] | None = None,
                 measure_names: Sequence[str] | None = None, objective_name: str = "objective",
                 qd_score_offset: float = 0.0, learning_rate: float | None = None,
                 threshold_min: float | None = -math.inf, seed: int | None = None,
                 solution_dtype: Any = None, objective_dtype: Any = None, measures_dtype: Any = None,
                 dtype: Any = None, extra_fields: dict[str, tuple[Any, Any]] | None = None):
        ranges_arr = np.asarray(ranges, dtype=float)
        if ranges_arr.ndim != 2 or ranges_arr.shape[1] != 2 or len(ranges_arr) == 0:
            raise ValueError(f"ranges must be a non-empty list of (low, high) pairs, got {ranges!r}")
        if not np.all(np.isfinite(ranges_arr)):
            raise ValueError(f"ranges must be finite, got {ranges_arr.tolist()}")
        bad = np.flatnonzero(ranges_arr[:, 0] >= ranges_arr[:, 1])
        if len(bad):
            raise ValueError(f"ranges[{bad[0]}] = {ranges_arr[bad[0]].tolist()} is empty or inverted: need low < high")
        if int(cells) < 1:
            raise ValueError(f"an archive needs at least one cell, got {cells}")
        sol_dt, obj_dt, meas_dt = _parse_dtypes(dtype, solution_dtype, objective_dtype, measures_dtype)
        self._cells = int(cells)
        self._measure_dim = len(ranges_arr)
        self._lower = ranges_arr[:, 0].astype(meas_dt)
        self._upper = ranges_arr[:, 1].astype(meas_dt)
        names = list(measure_names) if measure_names is not None else [f"measure_{i}" for i in range(self._measure_dim)]
        if len(names) != self._measure_dim:
            raise ValueError(f"{len(names)} measure_names for {self._measure_dim} measures")
        self.measure_names: list[str] = [str(n) for n in names]
        self.objective_name = str(objective_name)

        if solution_dim is None:
            self._solution_dim: int | tuple[int, ...] | None = None
            self._solution_shape: tuple[int, ...] = ()
            sol_dt = np.dtype(object)
        else:
            shape = _shape(solution_dim)
            if any(d < 0 for d in shape):
                raise ValueError(f"solution_dim must be >= 0, got {solution_dim}")
            self._solution_dim = int(solution_dim) if isinstance(solution_dim, numbers.Integral) else shape
            self._solution_shape = shape
        self._obj_dt, self._meas_dt = obj_dt, meas_dt
        # float64 archives run insertion on plain Python floats (the same IEEE doubles, less overhead).
        self._fast = obj_dt == np.float64 and meas_dt == np.float64
        self._ocast: Callable[[Any], Any] = float if obj_dt == np.float64 else obj_dt.type

        offset = _finite_float(qd_score_offset, "qd_score_offset")
        tmin = -math.inf if threshold_min is None else float(threshold_min)
        if math.isnan(tmin) or tmin == math.inf:
            raise ValueError(f"threshold_min must be a number or -inf, got {tmin}")
        if tmin != -math.inf and learning_rate is None:
            raise ValueError("threshold_min was set without setting learning_rate; threshold_min is only used in "
                             "CMA-MAE, so pass learning_rate too (1.0 keeps elitist insertion)")
        lr = 1.0 if learning_rate is None else float(learning_rate)
        if not 0.0 <= lr <= 1.0:
            raise ValueError(f"learning_rate must be in [0, 1], got {lr}")
        if tmin == -math.inf and lr != 1.0:
            raise ValueError("threshold_min can only be -inf if learning_rate is 1.0 (CMA-MAE needs a finite "
                             "threshold_min)")
        self._offset, self._tmin, self._lr = (self._ocast(offset), self._ocast(tmin), self._ocast(lr))
        self._one_minus_lr = self._ocast(1.0 - self._lr)
        # Threshold a new cell is measured against (pyribs: 0 in plain MAP-Elites, else threshold_min).
        self._new_base = self._ocast(0.0 if tmin == -math.inf else tmin)

        self._declared: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
        for name, (shape, dt) in (extra_fields or {}).items():
            if name in _BUILTIN_FIELDS:
                raise ValueError(f"extra_fields cannot use the built-in names {sorted(_BUILTIN_FIELDS)}; got {name!r}")
            if not str(name).isidentifier():
                raise ValueError(f"extra field names must be valid identifiers, got {name!r}")
            self._declared[str(name)] = (_shape(shape), np.dtype(dt))
        self._sol_dt = sol_dt
        self._seed = seed
        self._rng = np.random.default_rng(seed)
        self._changed: set[int] | None = None  # cells changed since take_changes(), while tracking
        self._allocate()

    # -- storage -------------------------------------------------------------------------------
    def _allocate(self) -> None:
        n = self._cells
        self._occupied = np.zeros(n, dtype=bool)
        self._objective = np.zeros(n, dtype=self._obj_dt)
        self._threshold = np.full(n, self._tmin, dtype=self._obj_dt)
        self._measures = np.zeros((n, self._measure_dim), dtype=self._meas_dt)
        self._solution = (np.empty(n, dtype=object) if self._solution_dim is None
                          else np.zeros((n, *self._solution_shape), dtype=self._sol_dt))
        self._fields: dict[str, np.ndarray] = {
            name: np.zeros((n, *shape), dtype=dt) for name, (shape, dt) in self._declared.items()}
        # Occupied cells in order of first occupation: O(1) uniform sampling and pyribs's data() order.
        self._order = np.empty(n, dtype=np.int32)
        # When each cell was last occupied (a count of occupations), so that a snapshot of some
        # cells keeps that order (take_changes, qd.archives.io.restore).
        self._rank = np.zeros(n, dtype=np.int64)
        self._occupations = 0
        self._num_elites = 0
        self._osum = self._ocast(0.0)
        # The best elite ever inserted: the objective (compared on every insertion), and the elite
        # itself read from its cell when asked; copied out only when something else is about to
        # change that cell (CMA-MAE replacing it with a lower objective, or a new field).
        self._obj_max: Any = None
        self._best_cell = -1
        self._best_copy: dict[str, Any] | None = None
        self._updates = getattr(self, "_updates", 0) + 1  # invalidates running iterators
        self._stats_cache: ArchiveStats | None = None

    def _field(self, name: str) -> np.ndarray:
        """The array of a keyword field, created on first use (``id`` int64, others object)."""
        arr = self._fields.get(name)
        if arr is None:
            self._keep_best()  # the best elite was inserted without this field
            if name == "id":
                arr = np.full(self._cells, -1, dtype=np.int64)
            else:
                arr = np.empty(self._cells, dtype=object)
            self._fields[name] = arr
        return arr

    def _check_field_names(self, fields: dict) -> None:
        clash = _BUILTIN_FIELDS.intersection(fields)
        if clash:
            raise ValueError(f"{sorted(clash)} are built-in fields and cannot be passed as extra data")
        if self._declared:
            missing = [n for n in self._declared if n not in fields]
            if missing:
                raise ValueError(f"extra_fields {missing} must be passed to add()/add_single() (declared when "
                                 "the archive was created)")

    def clear(self) -> None:
        """Remove every elite (fields and statistics included)."""
        if self._changed is not None:
            self._changed.update(self._order[:self._num_elites].tolist())
        self._allocate()

    # -- change tracking (what a run store writes after each group of results) -------------------
    def track_changes(self, current: bool = False, cells: Collection[int] = ()) -> None:
        """Start recording which cells change (insertions, replacements, removals, clear).

        With ``current``, the cells occupied now count as changed too (to write the whole archive);
        ``cells`` count as changed (changes taken but not written after all).
        """
        if self._changed is None:
            self._changed = set()
        if current:
            self._changed.update(self._order[:self._num_elites].tolist())
        self._changed.update(int(c) for c in cells)

    def take_changes(self) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """The cells changed since the last call (or since :meth:`track_changes`), and forget them.

        Returns
        -------
        elites : dict of arrays
            Every field (:meth:`data`'s) of the changed cells that hold an elite, plus ``rank``:
            when each was last occupied (``data()`` lists elites by ascending rank).
        emptied : ndarray of int
            Changed cells that hold no elite now.
        """
        if self._changed is None:
            raise RuntimeError("call track_changes() before take_changes()")
        cells = np.fromiter(self._changed, dtype=np.int64, count=len(self._changed))
        cells.sort()
        self._changed = set()
        occupied = self._occupied[cells]
        live = cells[occupied].astype(np.int32)
        data = self._collect(live, None, "dict")
        data["rank"] = self._rank[live]
        return data, cells[~occupied]

    # -- geometry and dtypes -------------------------------------------------------------------
    @property
    def cells(self) -> int:
        """Number of cells."""
        return self._cells

    @property
    def measure_dim(self) -> int:
        """Number of measures."""
        return self._measure_dim

    @property
    def solution_dim(self) -> int | tuple[int, ...] | None:
        """Shape of a numeric solution (int or tuple), or None for configuration archives."""
        return self._solution_dim

    @property
    def objective_dim(self) -> tuple[()]:
        """``()``: the objective is a scalar (pyribs's name)."""
        return ()

    @property
    def lower_bounds(self) -> np.ndarray:
        """Low end of each measure range."""
        return self._lower.copy()

    @property
    def upper_bounds(self) -> np.ndarray:
        """High end of each measure range."""
        return self._upper.copy()

    @property
    def interval_size(self) -> np.ndarray:
        """``upper_bounds - lower_bounds``."""
        return self._upper - self._lower

    @property
    def ranges(self) -> list[tuple[float, float]]:
        """``(low, high)`` of each measure."""
        return [(float(lo), float(hi)) for lo, hi in zip(self._lower, self._upper)]

    @property
    def learning_rate(self) -> Any:
        """CMA-MAE threshold learning rate (1 is plain MAP-Elites)."""
        return self._obj_dt.type(self._lr)

    @property
    def threshold_min(self) -> Any:
        """Initial threshold of every cell (-inf unless CMA-MAE)."""
        return self._obj_dt.type(self._tmin)

    @property
    def qd_score_offset(self) -> Any:
        """Subtracted from every objective in the QD score."""
        return self._obj_dt.type(self._offset)

    @property
    def field_list(self) -> list[str]:
        """Every per-elite field in ``data()`` order: built-ins, extra fields, then ``index``."""
        return ["solution", "objective", "measures", "threshold", *self._fields, "index"]

    @property
    def dtypes(self) -> dict[str, np.dtype]:
        """Dtype of every field (``solution`` is ``object`` in configuration archives)."""
        return {"solution": self._sol_dt, "objective": self._obj_dt, "measures": self._meas_dt,
                "threshold": self._obj_dt, **{n: a.dtype for n, a in self._fields.items()},
                "index": np.dtype(np.int32)}

    def index_of(self, measures: Any) -> np.ndarray:
        """Cell index (int32) of each row of a ``(batch, measure_dim)`` array of measures.

        The caller's array is never modified. Grid archives send measures outside the
        ranges to the edge cells; CVT archives take the nearest centroid of the point
        itself (both as pyribs).
        """
        return self._index_cells(self._check_batch_measures(measures)).astype(np.int32, copy=False)

    def _index_cells(self, measures: np.ndarray) -> np.ndarray:
        """Cells of validated ``(batch, measure_dim)`` measures; must not modify ``measures``."""
        raise NotImplementedError

    def index_of_single(self, measures: Any) -> int:
        """Cell index of one point of measure space."""
        if self._fast:
            return self._index_single(self._check_single_measures(measures))
        return int(self.index_of(self._check_single_array(measures)[None])[0])

    def _index_single(self, measures: list[float]) -> int:
        raise NotImplementedError

    # -- validation ----------------------------------------------------------------------------
    def _check_single_measures(self, measures: Any) -> list[float]:
        if isinstance(measures, np.ndarray):
            measures = measures.tolist()  # one conversion instead of a numpy scalar per value
        try:
            values = [float(v) for v in measures]
        except (TypeError, ValueError):
            raise ValueError(f"measures must be a sequence of {self._measure_dim} numbers, got {measures!r}") from None
        if len(values) != self._measure_dim:
            raise ValueError(f"measures has {len(values)} values; the archive has {self._measure_dim} measures "
                             f"({', '.join(self.measure_names)})")
        for name, v in zip(self.measure_names, values):
            if not math.isfinite(v):
                raise ValueError(f"measure {name!r} must be finite, got {v}")
        return values

    def _check_single_array(self, measures: Any) -> np.ndarray:
        values = self._check_single_measures(measures)
        return np.asarray(measures, dtype=self._meas_dt).reshape(len(values))

    def _check_batch_measures(self, measures: Any, batch: int | None = None) -> np.ndarray:
        arr = np.asarray(measures, dtype=self._meas_dt)
        if arr.ndim != 2 or arr.shape[1] != self._measure_dim or (batch is not None and len(arr) != batch):
            want = f"({batch if batch is not None else 'batch'}, {self._measure_dim})"
            raise ValueError(f"measures must have shape {want}, got {arr.shape}")
        if not np.all(np.isfinite(arr)):
            row = int(np.flatnonzero(~np.isfinite(arr).all(axis=1))[0])
            raise ValueError(f"measures must be finite; row {row} is {arr[row].tolist()}")
        return arr

    def _check_solutions(self, solutions: Any, batch: int) -> Any:
        if self._solution_dim is not None:
            arr = np.asarray(solutions, dtype=self._sol_dt)
            if arr.shape != (batch, *self._solution_shape):
                raise ValueError(f"solutions must have shape {(batch, *self._solution_shape)}, got {arr.shape}")
            return arr
        if isinstance(solutions, np.ndarray) and solutions.dtype != object:
            raise ValueError("this archive stores configurations (solution_dim=None); pass a list of configs, "
                             "or create the archive with solution_dim for numeric solutions")
        solutions = list(solutions)
        if len(solutions) != batch:
            raise ValueError(f"{len(solutions)} solutions for a batch of {batch}")
        return solutions

    def _check_batch_fields(self, fields: dict[str, Any], batch: int) -> dict[str, Any]:
        self._check_field_names(fields)
        extra = {}
        for name, values in fields.items():
            if name in self._declared:
                shape, dt = self._declared[name]
                values = np.asarray(values, dtype=dt)
                if values.shape != (batch, *shape):
                    raise ValueError(f"field {name!r} must have shape {(batch, *shape)}, got {values.shape}")
            elif not isinstance(values, np.ndarray):
                values = list(values)
            if len(values) != batch:
                raise ValueError(f"field {name!r} has {len(values)} values for a batch of {batch}")
            extra[name] = values
        return extra

    def _check_batch(self, solution: Any, objective: Any, measures: Any, fields: dict[str, Any],
                     dtype: np.dtype) -> tuple[np.ndarray, np.ndarray, Any, dict[str, Any]]:
        """A batch's objectives (as ``dtype``), measures, solutions and extra fields, checked."""
        obj = np.asarray(objective, dtype=dtype)
        if obj.ndim != 1:
            raise ValueError(f"objective must be a 1-D array, got shape {obj.shape}")
        if not np.all(np.isfinite(obj)):
            raise ValueError(f"objective must be finite; item {int(np.flatnonzero(~np.isfinite(obj))[0])} is "
                             f"{obj[~np.isfinite(obj)][0]}")
        batch = len(obj)
        return (obj, self._check_batch_measures(measures, batch), self._check_solutions(solution, batch),
                self._check_batch_fields(fields, batch))

    # -- insertion -----------------------------------------------------------------------------
    def add(self, solution: Any, objective: Any, measures: Any, **fields: Any) -> dict[str, np.ndarray]:
        """Insert a batch (pyribs's rule).

        An item can enter its cell when its objective beats the cell's threshold
        (``threshold_min`` for an empty cell). Among the items of one cell that can,
        the best enters, the earliest on ties. Thresholds then become the winner's
        objective (``threshold_min == -inf``), or follow the CMA-MAE batch rule
        ``(1 - lr)^k · t + mean · (1 - (1 - lr)^k)`` over the ``k`` items that could
        enter. New cells join ``data()`` in ascending cell order.

        Parameters
        ----------
        solution : sequence or array-like
            Configurations, or a ``(batch, *solution_dim)`` array for numeric archives.
        objective : array-like of shape (batch,)
            Finite objectives (higher is better).
        measures : array-like of shape (batch, measure_dim)
            Finite measures.
        **fields : sequence of length batch
            Extra per-elite data: declared ``extra_fields``, ``id`` (int64) or any other
            name (kept as an object, e.g. ``feedback``).

        Returns
        -------
        dict
            ``status`` (int32 :class:`~qd.archives.AddStatus` values per item, relative to
            the archive before the batch) and ``value`` (objective minus the cell's
            threshold; for new cells minus ``threshold_min``, or minus 0 when that is -inf).
        """
        obj, meas, sols, extra = self._check_batch(solution, objective, measures, fields, self._obj_dt)
        batch = len(obj)
        for name in extra:
            self._field(name)
        status = np.zeros(batch, dtype=np.int32)
        if batch == 0:
            return {"status": status, "value": np.zeros(0, dtype=self._obj_dt)}
        idx = self._index_cells(meas).astype(np.int64, copy=False)
        occupied = self._occupied[idx]
        cur = self._threshold[idx]
        cur[~occupied] = self._tmin
        can = obj > cur
        is_new = can & ~occupied
        status[is_new] = _NEW
        status[can & occupied] = _IMPROVE
        cur[is_new] = self._new_base
        value = obj - cur
        if not can.any():
            return {"status": status, "value": value}

        cand = np.flatnonzero(can)
        c_idx, c_obj, c_cur = idx[cand], obj[cand], cur[cand]
        if self._tmin == -math.inf:
            new_threshold = c_obj
        else:  # CMA-MAE batch rule (Fontaine & Nikolaidis 2023, appendix), computed as pyribs does
            # bincount sums in input order, as pyribs's aggregate does, so thresholds agree bit for bit.
            counts = np.bincount(c_idx, minlength=self._cells)[c_idx]
            sums = np.bincount(c_idx, weights=c_obj, minlength=self._cells)[c_idx].astype(self._obj_dt)
            ratio = np.asarray(self._one_minus_lr, dtype=self._obj_dt) ** counts
            new_threshold = ratio * c_cur + (sums / counts) * (1 - ratio)
        # Winner per cell, cells ascending: best objective, earliest on ties (lexsort is stable).
        order = np.lexsort((-c_obj, c_idx))
        sorted_cells = c_idx[order]
        starts = np.flatnonzero(np.concatenate(([True], sorted_cells[1:] != sorted_cells[:-1])))
        winners = order[starts]
        pos = cand[winners]  # batch positions of the inserted items, in ascending cell order
        cells = c_idx[winners]
        won_obj = c_obj[winners]
        was_occupied = occupied[pos]
        cur_obj = np.where(was_occupied, self._objective[cells], 0.0).astype(self._obj_dt)

        best = int(np.argmax(won_obj))
        new_best = self._obj_max is None or won_obj[best] > self._obj_max
        if not new_best and self._best_cell >= 0 and (cells == self._best_cell).any():
            self._keep_best()

        new_cells = cells[~was_occupied]
        n = self._num_elites
        self._order[n:n + len(new_cells)] = new_cells
        self._num_elites = n + len(new_cells)
        self._rank[new_cells] = np.arange(self._occupations, self._occupations + len(new_cells))
        self._occupations += len(new_cells)
        if self._changed is not None:
            self._changed.update(cells.tolist())
        self._occupied[new_cells] = True
        self._objective[cells] = won_obj
        self._threshold[cells] = new_threshold[winners]
        self._measures[cells] = meas[pos]
        if self._solution_dim is not None:
            self._solution[cells] = sols[pos]
        else:
            for cell, p in zip(cells.tolist(), pos.tolist()):
                self._solution[cell] = sols[p]
        for name, arr in self._fields.items():
            values = extra.get(name)
            if values is None:
                arr[cells] = -1 if name == "id" else None
            elif arr.dtype != object:
                arr[cells] = np.asarray(values, dtype=arr.dtype)[pos]
            else:
                for cell, p in zip(cells.tolist(), pos.tolist()):
                    arr[cell] = values[p]
        self._updates += 1
        self._osum = self._ocast(self._osum + np.sum(won_obj - cur_obj))
        if new_best:
            self._set_best(won_obj[best], int(cells[best]))
        self._stats_cache = None
        return {"status": status, "value": value}

    def add_single(self, solution: Any, objective: Any, measures: Any, **fields: Any) -> dict[str, Any]:
        """Insert one item; the fast path for results that land one at a time.

        pyribs's single-item rule: the item enters when its objective beats the cell's
        threshold (``threshold_min`` for an empty cell), and the threshold becomes
        ``t · (1 - lr) + objective · lr``. Returns ``status`` (an
        :class:`~qd.archives.AddStatus`) and ``value`` as :meth:`add` does.
        """
        obj = self._ocast(_finite_float(objective, "objective"))
        if self._fast:
            values: Any = self._check_single_measures(measures)
            i = self._index_single(values)
        else:
            values = self._check_single_array(measures)
            i = int(self._index_cells(values[None])[0])
        if fields or self._declared:
            self._check_field_names(fields)
        if self._solution_dim is not None:
            solution = np.asarray(solution, dtype=self._sol_dt)
            if solution.shape != self._solution_shape:
                raise ValueError(f"solution must have shape {self._solution_shape}, got {solution.shape}")
        return self._insert(i, obj, values, solution, fields)

    def _insert(self, i: int, obj: Any, values: Any, solution: Any, fields: dict[str, Any]) -> dict[str, Any]:
        """The single-item rule on cell ``i`` (checked inputs): what :meth:`add_single` does after the checks."""
        if self._occupied[i]:
            cur = self._threshold.item(i)
            if not cur < obj:
                return {"status": _NOT_ADDED, "value": obj - cur}
            status = _IMPROVE
            cur_obj = self._objective.item(i)
            if i == self._best_cell and not obj > self._obj_max:
                self._keep_best()
        else:
            cur = self._new_base
            if not self._tmin < obj:
                return {"status": _NOT_ADDED, "value": obj - cur}
            status = _NEW
            cur_obj = 0.0
            self._occupied[i] = True
            self._order[self._num_elites] = i
            self._num_elites += 1
            self._rank[i] = self._occupations
            self._occupations += 1
        self._objective[i] = obj
        self._threshold[i] = cur * self._one_minus_lr + obj * self._lr
        self._measures[i] = values
        self._solution[i] = solution
        for name, arr in self._fields.items():
            if name not in fields:
                arr[i] = -1 if name == "id" else None
        for name, v in fields.items():
            self._field(name)[i] = v
        self._updates += 1
        self._osum = self._osum + obj - cur_obj
        if self._obj_max is None or obj > self._obj_max:
            self._set_best(obj, i)
        self._stats_cache = None
        if self._changed is not None:
            self._changed.add(i)
        return {"status": status, "value": obj - cur}

    def add_in_order(self, solution: Any, objective: Any, measures: Any, **fields: Any) -> np.ndarray:
        """Insert a batch exactly as :meth:`add_single` would insert its items one after another.

        The result (elites, thresholds, statistics to the last bit, the order of ``data()``) and
        the statuses are those of the loop of ``add_single`` calls, which a steady-state search
        relies on (a run replayed result by result rebuilds the same archive); the cells of the
        whole batch are found at once, and only the items that beat their cell's threshold as
        it was before the batch are inserted one by one (thresholds never fall during insertion,
        so no other item can enter).

        Parameters
        ----------
        solution : sequence or array-like
            As for :meth:`add`.
        objective : array-like of shape (batch,)
            Finite objectives.
        measures : array-like of shape (batch, measure_dim)
            Finite measures.
        **fields : sequence of length batch
            As for :meth:`add`.

        Returns
        -------
        ndarray of int32
            :class:`~qd.archives.AddStatus` of each item, as ``add_single`` returned it.
        """
        obj, meas, sols, extra = self._check_batch(solution, objective, measures, fields, np.dtype(np.float64))
        batch = len(obj)
        status = np.zeros(batch, dtype=np.int32)
        if batch == 0:
            return status
        cells = self._index_cells(meas).astype(np.int64, copy=False)
        cast = self._ocast
        before = np.where(self._occupied[cells], self._threshold[cells], self._tmin)
        for p in np.flatnonzero(obj.astype(self._obj_dt) > before).tolist():
            values = meas[p].tolist() if self._fast else meas[p]
            status[p] = self._insert(int(cells[p]), cast(float(obj[p])), values, sols[p],
                                     {name: v[p] for name, v in extra.items()})["status"]
        return status

    def remove_single(self, index: int) -> bool:
        """Empty cell ``index``; returns whether it held an elite.

        For policies that revise an elite after evaluating it again (``qd.noise``: its mean
        fell, or its mean measures moved it to another cell). The cell's threshold returns to
        ``threshold_min``; the other elites keep their order. ``obj_max`` and
        :attr:`best_elite` become those of the best remaining elite when the removed one was it.
        """
        i = int(index)
        if not self._occupied[i]:
            return False
        n = self._num_elites
        pos = int(np.flatnonzero(self._order[:n] == i)[0])
        self._order[pos:n - 1] = self._order[pos + 1:n]
        self._num_elites = n - 1
        self._occupied[i] = False
        self._threshold[i] = self._tmin
        removed = self._objective.item(i)
        self._osum = self._osum - removed
        if self._solution_dim is None:
            self._solution[i] = None
        for name, arr in self._fields.items():
            arr[i] = None if arr.dtype == object else (-1 if name == "id" else 0)
        if self._obj_max is not None and not removed < self._obj_max:
            if self._num_elites:
                live = self._order[:self._num_elites]
                best = int(live[int(np.argmax(self._objective[live]))])
                self._set_best(self._objective[best], best)
            else:
                self._obj_max, self._best_cell, self._best_copy = None, -1, None
        self._updates += 1
        self._stats_cache = None
        if self._changed is not None:
            self._changed.add(i)
        return True

    # -- statistics ----------------------------------------------------------------------------
    @property
    def stats(self) -> ArchiveStats:
        """QD metrics, computed with pyribs's floating-point operations (so they agree exactly)."""
        if self._stats_cache is None:
            n, t = self._num_elites, self._obj_dt.type
            if n == 0:
                self._stats_cache = ArchiveStats(0, t(0.0), t(0.0), t(0.0), None, None)
            else:
                osum = t(self._osum)
                qd_score = t(osum - t(n) * t(self._offset))
                self._stats_cache = ArchiveStats(n, t(n / self._cells), qd_score, t(qd_score / self._cells),
                                                 t(self._obj_max), t(osum / n))
        return self._stats_cache

    @property
    def best_elite(self) -> dict[str, Any] | None:
        """The elite with the highest objective ever inserted, as it was inserted (None while empty).

        Its ``threshold`` is its cell's threshold just after insertion. In a non-elitist
        (CMA-MAE) archive it may since have been replaced.
        """
        if self._best_cell >= 0:
            return self._snapshot(self._best_cell)
        return None if self._best_copy is None else dict(self._best_copy)

    def _set_best(self, objective: Any, cell: int) -> None:
        """A new best elite, just inserted in ``cell``."""
        self._obj_max, self._best_cell, self._best_copy = objective, cell, None

    def _keep_best(self) -> None:
        """Copy the best elite out of its cell, which is about to change."""
        if self._best_cell >= 0:
            self._best_copy, self._best_cell = self._snapshot(self._best_cell), -1

    def __len__(self) -> int:
        return self._num_elites

    @property
    def empty(self) -> bool:
        """True when no cell is occupied."""
        return self._num_elites == 0

    # -- reading -------------------------------------------------------------------------------
    def _snapshot(self, cell: int) -> dict[str, Any]:
        data = self._collect(np.array([cell], dtype=np.int32), None, "dict")
        return {k: v[0] for k, v in data.items()}

    def _column(self, name: str, cells: np.ndarray) -> np.ndarray:
        if name == "index":
            return np.asarray(cells, dtype=np.int32).copy()
        if name == "objective":
            return self._objective[cells]
        if name == "measures":
            return self._measures[cells]
        if name == "solution":
            return self._solution[cells]
        if name == "threshold":
            return self._threshold[cells]
        if name in self._fields:
            return self._fields[name][cells]
        raise ValueError(f"unknown field {name!r}; fields: {', '.join(self.field_list)}")

    def _collect(self, cells: np.ndarray, fields: Collection[str] | str | None, return_type: str | None) -> Any:
        """Fields of ``cells`` in pyribs's return types (``None``: array for one name, else dict)."""
        single = isinstance(fields, str)
        if return_type is None:
            return_type = "single" if single else "dict"
        if return_type not in ("single", "dict", "tuple", "pandas"):
            raise ValueError(f"return_type must be 'dict', 'tuple' or 'pandas', got {return_type!r}")
        names = [fields] if single else (self.field_list if fields is None else list(fields))
        if return_type == "single":
            return self._column(names[0], cells)
        if return_type == "tuple":
            return tuple(self._column(name, cells) for name in names)
        data = {name: self._column(name, cells) for name in names}
        if return_type == "dict":
            return data
        try:
            from qd.archives.dataframe import ArchiveDataFrame
        except ImportError:
            raise ImportError("data(return_type='pandas') needs pandas: pip install pandas") from None
        columns: dict[str, Any] = {}
        for name, arr in data.items():
            if arr.ndim == 1:
                columns[name] = arr
            elif arr.ndim == 2:
                columns.update({f"{name}_{j}": arr[:, j] for j in range(arr.shape[1])})
            else:
                raise ValueError(f"field {name!r} has shape {arr.shape[1:]}; fields with more than one dimension "
                                 "cannot become DataFrame columns")
        return ArchiveDataFrame(columns, copy=False)

    def data(self, fields: Collection[str] | str | None = None, return_type: str | None = None) -> Any:
        """Every elite, in order of first occupation of their cells (as pyribs).

        Parameters
        ----------
        fields : str or collection of str, optional
            Fields to return (default :attr:`field_list`: ``solution``, ``objective``,
            ``measures``, ``threshold``, extra fields, ``index``).
        return_type : {None, "dict", "tuple", "pandas"}
            None: one array when ``fields`` is a str, else a dict of arrays. "tuple":
            arrays in ``fields`` order. "pandas": an :class:`~qd.archives.ArchiveDataFrame`
            (one column per scalar field, ``name_0``, ``name_1``, ... per vector field).
        """
        return self._collect(self._order[:self._num_elites], fields, return_type)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Elites one by one as pyribs gives them: ``{"index": cell, field: value, ...}``.

        Raises
        ------
        RuntimeError
            When the archive is added to or cleared during the iteration.
        """
        state = self._updates
        i = 0
        while True:
            if self._updates != state:
                raise RuntimeError("the archive was modified with add() or clear() during iteration")
            if i >= self._num_elites:
                return
            cell = self._order[i]
            i += 1
            yield {"index": cell, **{name: self._column(name, cell) for name in self.field_list[:-1]}}

    def elite(self, index: int) -> dict[str, Any]:
        """The elite of cell ``index`` as a dict of plain values (KeyError when empty)."""
        if not (0 <= index < self._cells) or not self._occupied[index]:
            raise KeyError(f"cell {index} holds no elite")
        return {"index": int(index), "objective": float(self._objective[index]),
                "measures": self._measures[index].copy(), "solution": self._solution[index],
                "threshold": float(self._threshold[index]),
                **{name: (arr[index].item() if arr.dtype != object and arr.ndim == 1 else arr[index])
                   for name, arr in self._fields.items()}}

    def sample_elites(self, n: int, replace: bool = True, rng: np.random.Generator | None = None
                      ) -> dict[str, np.ndarray]:
        """``n`` elites drawn uniformly (with replacement unless ``replace=False``), all fields.

        Draws as pyribs does, so an archive built from the same seed samples the same
        elites. ``rng`` (a qd addition) draws from another generator.

        Raises
        ------
        IndexError
            When the archive is empty.
        ValueError
            When ``replace=False`` and ``n`` exceeds the number of elites.
        """
        if self._num_elites == 0:
            raise IndexError("no elites in the archive to sample")
        if not replace and n > self._num_elites:
            raise ValueError(f"cannot sample {n} elites without replacement from {self._num_elites}")
        rng = self._rng if rng is None else rng
        # With replacement, Generator.choice draws exactly integers(0, k, size, int64): same stream, less overhead.
        picks = (rng.integers(0, self._num_elites, size=n, dtype=np.int64) if replace
                 else rng.choice(self._num_elites, size=n, replace=False))
        cells = self._order[picks]
        return self._collect(cells, None, "dict")

    def retrieve(self, measures: Any) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Elites of the cells that a batch of measures falls in.

        Returns
        -------
        occupied : ndarray of bool
            Whether each cell holds an elite.
        data : dict of arrays
            Every field of those cells. Where ``occupied`` is False (as pyribs): ``index``
            is -1, float fields NaN, integer fields 0 (qd's own ``id``: -1), object fields None.
        """
        cells = self.index_of(measures)
        occupied = self._occupied[cells]
        data = self._collect(cells, None, "dict")
        empty = ~occupied
        if empty.any():
            for name, arr in data.items():
                if arr.dtype == object:
                    arr[empty] = None
                elif name == "index" or (name == "id" and name not in self._declared):
                    arr[empty] = -1
                elif np.issubdtype(arr.dtype, np.integer):
                    arr[empty] = 0
                else:
                    arr[empty] = np.nan
        return occupied, data

    def retrieve_single(self, measures: Any) -> tuple[bool, dict[str, Any]]:
        """The elite of the cell one point falls in: ``(occupied, fields)`` (see :meth:`retrieve`)."""
        occupied, data = self.retrieve(self._check_single_array(measures)[None])
        return occupied[0], {name: arr[0] for name, arr in data.items()}

    # -- queries (archives.query) --------------------------------------------------------------
    def top(self, k: int | None = None, where: str | Callable[[dict], bool] | None = None) -> list[dict]:
        """The ``k`` best elites (all when None), best first; see :func:`qd.archives.query.top`."""
        from qd.archives.query import top

        return top(self, k, where)

    def diverse(self, k: int, where: str | Callable[[dict], bool] | None = None) -> list[dict]:
        """``k`` elites spread over measure space; see :func:`qd.archives.query.diverse`."""
        from qd.archives.query import diverse

        return diverse(self, k, where)

    def where(self, predicate: str | Callable[[dict], bool]) -> list[dict]:
        """Elites that satisfy ``predicate``, best first; see :func:`qd.archives.query.where`."""
        from qd.archives.query import where

        return where(self, predicate)

    # -- persistence (archives.io) ---------------------------------------------------------------
    def save(self, path: Any) -> None:
        """Write the archive to ``path`` (an ``.npz`` file; format in :mod:`qd.archives.io`)."""
        from qd.archives.io import save

        save(self, path)

    @classmethod
    def load(cls, path: Any) -> ArchiveBase:
        """Read an archive written by :meth:`save`."""
        from qd.archives.io import load

        archive = load(path)
        if not isinstance(archive, cls):
            raise ValueError(f"{path} holds a {type(archive).__name__}, not a {cls.__name__}")
        return archive

    def _params(self) -> dict[str, Any]:
        """Constructor arguments (JSON-able) that rebuild an empty copy of this archive."""
        dim = self._solution_dim
        return dict(solution_dim=list(dim) if isinstance(dim, tuple) else dim,
                    measure_names=list(self.measure_names), objective_name=self.objective_name,
                    qd_score_offset=float(self._offset), learning_rate=float(self._lr),
                    threshold_min=float(self._tmin) if self._tmin != -math.inf else None, seed=self._seed,
                    solution_dtype=None if dim is None else self._sol_dt.str,
                    objective_dtype=self._obj_dt.str, measures_dtype=self._meas_dt.str,
                    extra_fields={n: [list(s), d.str] for n, (s, d) in self._declared.items()} or None)

    def __repr__(self) -> str:
        s = self.stats
        return (f"{type(self).__name__}(cells={self._cells}, measures={self.measure_names}, "
                f"elites={s.num_elites}, coverage={s.coverage:.3f})")
