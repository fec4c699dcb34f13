"""Storage, insertion and statistics shared by every archive.

An archive has a fixed number of cells. Subclasses only say which cell a point of
measure space falls in (:meth:`ArchiveBase.index_of` for a batch, ``_index_single`` for
one point); everything else lives here: the per-cell arrays, batch and single insertion
with pyribs semantics (CMA-MAE thresholds included), QD statistics, sampling and
retrieval, and the elite queries of :mod:`qd.archives.query`.

Two kinds of solution are stored. By default a solution is a configuration (any
JSON-able object, kept by reference in an object array). With ``solution_dim > 0`` it
is a numeric vector of that length, as in pyribs.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["ArchiveBase", "ArchiveStats"]

ADD_NOT_ADDED, ADD_IMPROVE, ADD_NEW = 0, 1, 2
_BUILTIN_FIELDS = frozenset({"index", "objective", "measures", "solution", "threshold"})


@dataclass(frozen=True)
class ArchiveStats:
    """QD metrics of an archive (pyribs names).

    Attributes
    ----------
    num_elites : int
        Occupied cells.
    coverage : float
        ``num_elites / cells``.
    qd_score : float
        ``sum(objective - qd_score_offset)`` over elites.
    norm_qd_score : float
        ``qd_score / cells``.
    obj_max : float or None
        Best objective ever inserted (None while empty). In a non-elitist (CMA-MAE)
        archive that elite may since have been replaced.
    obj_mean : float or None
        Mean objective of the current elites (None while empty).
    """

    num_elites: int
    coverage: float
    qd_score: float
    norm_qd_score: float
    obj_max: float | None
    obj_mean: float | None


def _finite_float(value: Any, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{what} must be finite, got {number}")
    return number


class ArchiveBase:
    """Cells, elites and insertion; subclasses map measures to cells.

    Parameters
    ----------
    cells : int
        Number of cells.
    ranges : sequence of (float, float)
        ``(low, high)`` of each measure; measures outside are clipped to the edge cell.
    solution_dim : int
        0 (default): solutions are configurations (JSON-able objects). ``> 0``:
        solutions are float vectors of this length (pyribs style).
    measure_names : sequence of str, optional
        Names of the measures, used by plots, queries and exports
        (default ``measure_0``, ``measure_1``, ...).
    objective_name : str
        Name of the objective for plots and exports.
    qd_score_offset : float
        Subtracted from every objective in the QD score; choose a lower bound of the
        objective so every elite counts positively.
    learning_rate : float, optional
        CMA-MAE threshold learning rate in (0, 1]; 1 (default) is plain MAP-Elites.
    threshold_min : float, optional
        CMA-MAE initial cell threshold (default -inf); required when ``learning_rate < 1``.
    seed : int, optional
        Seeds the generator :meth:`sample_elites` uses when given no ``rng``.
    """

    def __init__(self, cells: int, ranges: Sequence[Sequence[float]], *, solution_dim: int = 0,
                 measure_names: Sequence[str] | None = None, objective_name: str = "objective",
                 qd_score_offset: float = 0.0, learning_rate: float | None = None,
                 threshold_min: float | None = None, seed: int | None = None):
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
        if int(solution_dim) < 0:
            raise ValueError(f"solution_dim must be >= 0, got {solution_dim}")
        self._cells = int(cells)
        self._lower = ranges_arr[:, 0].copy()
        self._upper = ranges_arr[:, 1].copy()
        self._measure_dim = len(ranges_arr)
        names = list(measure_names) if measure_names is not None else [f"measure_{i}" for i in range(self._measure_dim)]
        if len(names) != self._measure_dim:
            raise ValueError(f"{len(names)} measure_names for {self._measure_dim} measures")
        self.measure_names: list[str] = [str(n) for n in names]
        self.objective_name = str(objective_name)
        self.qd_score_offset = _finite_float(qd_score_offset, "qd_score_offset")
        self.learning_rate = 1.0 if learning_rate is None else float(learning_rate)
        if not 0.0 < self.learning_rate <= 1.0:
            raise ValueError(f"learning_rate must be in (0, 1], got {self.learning_rate}")
        self.threshold_min = -math.inf if threshold_min is None else float(threshold_min)
        if math.isnan(self.threshold_min) or self.threshold_min == math.inf:
            raise ValueError(f"threshold_min must be a number or -inf, got {self.threshold_min}")
        if self.learning_rate < 1.0 and self.threshold_min == -math.inf:
            raise ValueError("learning_rate < 1 (CMA-MAE) needs a finite threshold_min")
        self.solution_dim = int(solution_dim)
        self._seed = seed
        self._rng = np.random.default_rng(seed)
        self._allocate()

    # -- storage -------------------------------------------------------------------------------
    def _allocate(self) -> None:
        n = self._cells
        self._occupied = np.zeros(n, dtype=bool)
        self._objective = np.zeros(n, dtype=np.float64)
        self._threshold = np.full(n, self.threshold_min, dtype=np.float64)
        self._measures = np.zeros((n, self._measure_dim), dtype=np.float64)
        self._solution = (np.zeros((n, self.solution_dim), dtype=np.float64) if self.solution_dim
                          else np.empty(n, dtype=object))
        # Extra per-elite fields: "id" always, others created on first use.
        self._fields: dict[str, np.ndarray] = {"id": np.full(n, -1, dtype=np.int64)}
        # Occupied cells in insertion order: O(1) uniform sampling and a stable data() order.
        self._order = np.empty(n, dtype=np.int64)
        self._num_elites = 0
        self._obj_max = -math.inf
        self._stats_cache: ArchiveStats | None = None

    def _field(self, name: str) -> np.ndarray:
        arr = self._fields.get(name)
        if arr is None:
            arr = self._fields[name] = np.empty(self._cells, dtype=object)
        return arr

    @staticmethod
    def _check_field_names(fields: dict) -> None:
        clash = _BUILTIN_FIELDS.intersection(fields)
        if clash:
            raise ValueError(f"{sorted(clash)} are built-in fields and cannot be passed as extra data")

    def clear(self) -> None:
        """Remove every elite (fields and statistics included)."""
        self._allocate()

    # -- geometry ------------------------------------------------------------------------------
    @property
    def cells(self) -> int:
        """Number of cells."""
        return self._cells

    @property
    def measure_dim(self) -> int:
        """Number of measures."""
        return self._measure_dim

    @property
    def lower_bounds(self) -> np.ndarray:
        """Low end of each measure range."""
        return self._lower.copy()

    @property
    def upper_bounds(self) -> np.ndarray:
        """High end of each measure range."""
        return self._upper.copy()

    @property
    def ranges(self) -> list[tuple[float, float]]:
        """``(low, high)`` of each measure."""
        return [(float(lo), float(hi)) for lo, hi in zip(self._lower, self._upper)]

    def index_of(self, measures: Any) -> np.ndarray:
        """Cell index of each row of a ``(batch, measure_dim)`` array of measures.

        Measures outside the ranges are clipped to them first (they land in edge cells).
        """
        return self._index_cells(self._check_batch_measures(measures))

    def _index_cells(self, measures: np.ndarray) -> np.ndarray:
        """Cells of validated ``(batch, measure_dim)`` float64 measures (the array may be modified)."""
        raise NotImplementedError

    def index_of_single(self, measures: Sequence[float]) -> int:
        """Cell index of one point of measure space."""
        return self._index_single(self._check_single_measures(measures))

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

    def _check_batch_measures(self, measures: Any, batch: int | None = None) -> np.ndarray:
        arr = np.asarray(measures, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != self._measure_dim or (batch is not None and len(arr) != batch):
            want = f"({batch if batch is not None else 'batch'}, {self._measure_dim})"
            raise ValueError(f"measures must have shape {want}, got {arr.shape}")
        if not np.all(np.isfinite(arr)):
            row = int(np.flatnonzero(~np.isfinite(arr).all(axis=1))[0])
            raise ValueError(f"measures must be finite; row {row} is {arr[row].tolist()}")
        return arr

    def _check_solutions(self, solutions: Any, batch: int) -> Any:
        if self.solution_dim:
            arr = np.asarray(solutions, dtype=np.float64)
            if arr.shape != (batch, self.solution_dim):
                raise ValueError(f"solutions must have shape ({batch}, {self.solution_dim}), got {arr.shape}")
            return arr
        if isinstance(solutions, np.ndarray) and solutions.dtype != object:
            raise ValueError("this archive stores configurations (solution_dim=0); pass a list of configs, "
                             "or create the archive with solution_dim for numeric solutions")
        solutions = list(solutions)
        if len(solutions) != batch:
            raise ValueError(f"{len(solutions)} solutions for a batch of {batch}")
        return solutions

    # -- insertion -----------------------------------------------------------------------------
    def add(self, solutions: Any, objective: Any, measures: Any, **fields: Any) -> dict[str, np.ndarray]:
        """Insert a batch.

        Each item enters its cell when its objective beats the cell's threshold (the
        elite's objective, unless CMA-MAE thresholds are on). Several items landing in
        one cell resolve to the best of them, the earliest on ties. With the default
        ``learning_rate`` the resulting archive is identical to inserting the items one
        by one with :meth:`add_single` in batch order.

        Parameters
        ----------
        solutions : sequence
            Configurations, or a ``(batch, solution_dim)`` array for numeric archives.
        objective : array-like of shape (batch,)
            Finite objectives (higher is better).
        measures : array-like of shape (batch, measure_dim)
            Finite measures; values outside the ranges go to the edge cell.
        **fields : sequence of length batch
            Extra per-elite data (``id`` is an integer field; any other name is kept as
            an object, e.g. ``feedback`` or ``metadata``).

        Returns
        -------
        dict
            ``status`` (int32 per item: 0 not added, 1 improved an elite, 2 new cell,
            all relative to the archive before the batch) and ``value`` (objective minus
            the cell's threshold; for new cells, minus ``threshold_min`` or 0 when that
            is -inf, as in pyribs).
        """
        obj = np.asarray(objective, dtype=np.float64)
        if obj.ndim != 1:
            raise ValueError(f"objective must be a 1-D array, got shape {obj.shape}")
        if not np.all(np.isfinite(obj)):
            raise ValueError(f"objective must be finite; item {int(np.flatnonzero(~np.isfinite(obj))[0])} is "
                             f"{obj[~np.isfinite(obj)][0]}")
        batch = len(obj)
        meas = self._check_batch_measures(measures, batch)
        sols = self._check_solutions(solutions, batch)
        self._check_field_names(fields)
        extra = {}
        for name, values in fields.items():
            values = list(values) if not isinstance(values, np.ndarray) else values
            if len(values) != batch:
                raise ValueError(f"field {name!r} has {len(values)} values for a batch of {batch}")
            extra[name] = values
        status = np.zeros(batch, dtype=np.int32)
        if batch == 0:
            return {"status": status, "value": np.zeros(0)}
        idx = self._index_cells(meas.copy())
        occupied = self._occupied[idx]
        cur = np.where(occupied, self._threshold[idx], self.threshold_min)
        can = obj > cur
        status[can] = np.where(occupied[can], ADD_IMPROVE, ADD_NEW)
        base = cur.copy()
        base[can & ~occupied] = 0.0 if self.threshold_min == -math.inf else self.threshold_min
        value = obj - base
        if not can.any():
            return {"status": status, "value": value}

        # Winner per cell: best objective, earliest position on ties.
        cand = np.flatnonzero(can)
        order = np.lexsort((cand, -obj[cand], idx[cand]))
        grouped = cand[order]
        cells_sorted = idx[grouped]
        starts = np.flatnonzero(np.concatenate(([True], cells_sorted[1:] != cells_sorted[:-1])))
        winners = grouped[starts]
        cells = idx[winners]
        if self.learning_rate == 1.0:
            new_threshold = obj[winners]  # sequential insertion would leave the best objective
        else:  # CMA-MAE batch rule (Fontaine & Nikolaidis 2023, appendix), as pyribs
            counts = np.diff(np.append(starts, len(grouped)))
            means = np.add.reduceat(obj[grouped], starts) / counts
            ratio = (1.0 - self.learning_rate) ** counts
            new_threshold = ratio * cur[winners] + means * (1.0 - ratio)

        new = ~self._occupied[cells]
        if new.any():  # append new cells in the order sequential insertion would
            first_seen = np.minimum.reduceat(grouped, starts)[new]
            new_cells = cells[new][np.argsort(first_seen, kind="stable")]
            self._order[self._num_elites:self._num_elites + len(new_cells)] = new_cells
            self._num_elites += len(new_cells)
            self._occupied[new_cells] = True
        self._objective[cells] = obj[winners]
        self._threshold[cells] = new_threshold
        self._measures[cells] = meas[winners]
        if self.solution_dim:
            self._solution[cells] = sols[winners]
        else:
            for cell, w in zip(cells.tolist(), winners.tolist()):
                self._solution[cell] = sols[w]
        for name, arr in self._fields.items():
            if name not in extra:
                arr[cells] = -1 if name == "id" else None
        for name, values in extra.items():
            arr = self._field(name)
            if name == "id":
                arr[cells] = np.asarray(values, dtype=np.int64)[winners]
            else:
                for cell, w in zip(cells.tolist(), winners.tolist()):
                    arr[cell] = values[w]
        self._obj_max = max(self._obj_max, float(obj[winners].max()))
        self._stats_cache = None
        return {"status": status, "value": value}

    def add_single(self, solution: Any, objective: float, measures: Sequence[float], **fields: Any) -> dict[str, Any]:
        """Insert one item; the fast path for results that land one at a time.

        Same rule and return values as :meth:`add` (scalars instead of arrays).
        """
        obj = _finite_float(objective, "objective")
        values = self._check_single_measures(measures)
        if fields:
            self._check_field_names(fields)
        if self.solution_dim:
            solution = np.asarray(solution, dtype=np.float64)
            if solution.shape != (self.solution_dim,):
                raise ValueError(f"solution must have shape ({self.solution_dim},), got {solution.shape}")
        i = self._index_single(values)
        occupied = bool(self._occupied[i])
        cur = self._threshold.item(i) if occupied else self.threshold_min
        if not obj > cur:
            return {"status": ADD_NOT_ADDED, "value": obj - cur}
        if occupied:
            status, value = ADD_IMPROVE, obj - cur
        else:
            status = ADD_NEW
            base = 0.0 if self.threshold_min == -math.inf else self.threshold_min
            value = obj - base
            cur = base if self.learning_rate < 1.0 else cur
            self._occupied[i] = True
            self._order[self._num_elites] = i
            self._num_elites += 1
        self._objective[i] = obj
        self._threshold[i] = obj if self.learning_rate == 1.0 else cur * (1.0 - self.learning_rate) + obj * self.learning_rate
        self._measures[i] = values
        self._solution[i] = solution
        for name, arr in self._fields.items():
            if name not in fields:
                arr[i] = -1 if name == "id" else None
        for name, v in fields.items():
            self._field(name)[i] = v
        if obj > self._obj_max:
            self._obj_max = obj
        self._stats_cache = None
        return {"status": status, "value": value}

    # -- statistics ----------------------------------------------------------------------------
    @property
    def stats(self) -> ArchiveStats:
        """QD metrics (recomputed lazily after insertions)."""
        if self._stats_cache is None:
            n = self._num_elites
            if n == 0:
                self._stats_cache = ArchiveStats(0, 0.0, 0.0, 0.0, None, None)
            else:
                obj = self._objective[self._order[:n]]
                qd_score = float(np.sum(obj - self.qd_score_offset))
                self._stats_cache = ArchiveStats(n, n / self._cells, qd_score, qd_score / self._cells,
                                                 self._obj_max, float(obj.mean()))
        return self._stats_cache

    def __len__(self) -> int:
        return self._num_elites

    @property
    def empty(self) -> bool:
        """True when no cell is occupied."""
        return self._num_elites == 0

    # -- reading -------------------------------------------------------------------------------
    @property
    def field_names(self) -> list[str]:
        """Every per-elite field: built-ins then extra fields."""
        return ["index", "objective", "measures", "solution", "threshold", *self._fields]

    def _gather(self, cells: np.ndarray, fields: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for name in fields or self.field_names:
            if name == "index":
                out[name] = cells.copy()
            elif name == "objective":
                out[name] = self._objective[cells]
            elif name == "measures":
                out[name] = self._measures[cells]
            elif name == "solution":
                out[name] = self._solution[cells]
            elif name == "threshold":
                out[name] = self._threshold[cells]
            elif name in self._fields:
                out[name] = self._fields[name][cells]
            else:
                raise ValueError(f"unknown field {name!r}; fields: {', '.join(self.field_names)}")
        return out

    def data(self, fields: Sequence[str] | str | None = None, return_type: str = "dict") -> Any:
        """Every elite, in insertion order of their cells.

        Parameters
        ----------
        fields : str or sequence of str, optional
            Fields to return (default all: ``index``, ``objective``, ``measures``,
            ``solution``, ``threshold``, ``id`` and any extra field). A single name
            returns that array alone.
        return_type : {"dict", "pandas"}
            A dict of arrays, or a pandas DataFrame with one column per measure
            (``measures_0``, ...) and per solution component for numeric archives.
        """
        cells = self._order[:self._num_elites]
        if isinstance(fields, str):
            return self._gather(cells, [fields])[fields]
        data = self._gather(cells, fields)
        if return_type == "dict":
            return data
        if return_type != "pandas":
            raise ValueError(f"return_type must be 'dict' or 'pandas', got {return_type!r}")
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("data(return_type='pandas') needs pandas: pip install pandas") from None
        columns: dict[str, Any] = {}
        for name, arr in data.items():
            if arr.ndim == 2:
                columns.update({f"{name}_{j}": arr[:, j] for j in range(arr.shape[1])})
            else:
                columns[name] = arr
        return pd.DataFrame(columns)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Elites one by one, as dicts (see :meth:`elite`)."""
        for cell in self._order[:self._num_elites].tolist():
            yield self.elite(cell)

    def elite(self, index: int) -> dict[str, Any]:
        """The elite of cell ``index`` as a dict of plain values (KeyError when empty)."""
        if not (0 <= index < self._cells) or not self._occupied[index]:
            raise KeyError(f"cell {index} holds no elite")
        return {"index": int(index), "objective": float(self._objective[index]),
                "measures": self._measures[index].copy(), "solution": self._solution[index],
                "threshold": float(self._threshold[index]),
                **{name: (int(arr[index]) if name == "id" else arr[index]) for name, arr in self._fields.items()}}

    def sample_elites(self, n: int, rng: np.random.Generator | None = None) -> dict[str, np.ndarray]:
        """``n`` elites drawn uniformly with replacement, as a dict of arrays (all fields).

        Raises
        ------
        IndexError
            When the archive is empty.
        """
        if self._num_elites == 0:
            raise IndexError("no elites in the archive to sample")
        rng = self._rng if rng is None else rng
        cells = self._order[rng.integers(self._num_elites, size=int(n))]
        return self._gather(cells)

    def retrieve(self, measures: Any) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Elites of the cells that a batch of measures falls in.

        Returns
        -------
        occupied : ndarray of bool
            Whether each cell holds an elite.
        data : dict of arrays
            Every field of those cells (meaningless where ``occupied`` is False: the
            objective and threshold are NaN there).
        """
        cells = self.index_of(measures)
        occupied = self._occupied[cells]
        data = self._gather(cells)
        data["objective"] = np.where(occupied, data["objective"], np.nan)
        data["threshold"] = np.where(occupied, data["threshold"], np.nan)
        return occupied, data

    def retrieve_single(self, measures: Sequence[float]) -> tuple[bool, dict[str, Any] | None]:
        """The elite of the cell one point of measure space falls in, or None."""
        cell = self.index_of_single(measures)
        return (True, self.elite(cell)) if self._occupied[cell] else (False, None)

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
        """Constructor arguments that rebuild an empty copy of this archive."""
        return dict(solution_dim=self.solution_dim, measure_names=list(self.measure_names),
                    objective_name=self.objective_name, qd_score_offset=self.qd_score_offset,
                    learning_rate=self.learning_rate,
                    threshold_min=None if self.threshold_min == -math.inf else self.threshold_min,
                    seed=self._seed)

    def __repr__(self) -> str:
        s = self.stats
        return (f"{type(self).__name__}(cells={self._cells}, measures={self.measure_names}, "
                f"elites={s.num_elites}, coverage={s.coverage:.3f})")
