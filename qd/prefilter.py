"""Propose several, evaluate one: choose among candidate children by the cell they are predicted to land in.

An evaluation of a compound AI system costs far more than writing a candidate, so the scheduler
can ask an operator for several candidates (``[operators] filter = true``, ``proposals``) and
evaluate one. :class:`CellFilter` chooses it by where the candidate is *predicted* to land, before
anything runs (ShinkaEvolve's rejection sampling, re-expressed for configurations whose measures
can be predicted):

1. a candidate predicted into an **empty** cell first: the target cell, else the one nearest the
   target, else the first in the operator's order;
2. then a candidate whose cell cannot be predicted yet;
3. then a candidate predicted into an occupied cell, the one whose elite is weakest first (the
   likeliest to be beaten).

So the filter never drops a candidate it predicts into an empty cell in favour of one it predicts
into a full cell. Duplicates never reach it (the scheduler drops configurations already seen).

Predictions come from the domain's static cost model where it has one
(``Domain.predict_measures(config) -> {measure: value}``: the k-module domain's measures, the
retrieval domain's call counts), and otherwise from what the run has learned:
:class:`LearnedPredictor` averages the measures of the nearest configurations evaluated so far.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from qd.space import Bool, Categorical, Numeric, Space, Text
from qd.space.units import to_unit

__all__ = ["CellFilter", "LearnedPredictor", "MAX_HISTORY", "MeasurePredictor", "config_features", "nearest"]

Predict = Callable[[dict], Mapping[str, float] | None]


def config_features(space: Space, config: dict) -> dict[str, float]:
    """A configuration as named numbers in ``[0, 1]`` (for distances between configurations).

    Numbers map to their unit position, a categorical to a one-hot feature ``path=choice``, a
    bool to 0/1 and a text to its length over the maximum (what it says is not compared).
    """
    out: dict[str, float] = {}
    for path, param, value in space.walk(config):
        key = "/".join(map(str, path))
        if isinstance(param, Numeric):
            out[key] = to_unit(param, value)
        elif isinstance(param, Categorical):
            out[f"{key}={value}"] = 1.0
        elif isinstance(param, Bool):
            out[key] = float(bool(value))
        elif isinstance(param, Text):
            out[key] = len(value) / max(param.max_len, 1)
    return out


MAX_HISTORY = 20_000  # results a LearnedPredictor keeps: a prediction reads them all


def nearest(distances: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` smallest ``distances``, nearest first, ties to the lower index.

    What ``np.argsort(distances, kind="stable")[:k]`` gives for finite ``distances`` (a
    predictor's are), in ``k`` linear passes (a prediction's ``k`` is a handful, its history
    thousands). ``distances`` is overwritten.
    """
    chosen = []
    for _ in range(min(int(k), len(distances))):
        i = int(np.argmin(distances))  # the first of equal minima: the lower index
        chosen.append(i)
        distances[i] = np.inf
    return np.array(chosen, dtype=np.intp)


class LearnedPredictor:
    """Measures of a configuration predicted from the ``k`` nearest ones the run evaluated.

    Distances are Euclidean over :func:`config_features`; the prediction is the mean of the
    neighbours' measures. Until ``min_history`` results have been seen it predicts nothing; it
    keeps the ``max_history`` most recent, so memory and a prediction's cost stay bounded however
    long the run: a prediction makes one pass over each feature's values and ``k`` over the
    distances (:func:`nearest`), linear in the history.

    Parameters
    ----------
    space : Space
        The configurations.
    names : sequence of str
        Measure names, in the archive's order.
    k : int
        Neighbours averaged.
    min_history : int
        Results needed before the first prediction.
    max_history : int
        Results kept (the most recent).
    """

    def __init__(self, space: Space, names: Sequence[str], k: int = 3, min_history: int = 5,
                 max_history: int = MAX_HISTORY) -> None:
        self.space, self.names, self.k, self.min_history = space, list(names), int(k), int(min_history)
        self.max_history = int(max_history)
        self._next = 0  # the row the next result takes once max_history are kept
        self._columns: dict[str, int] = {}
        rows = min(64, self.max_history)
        # a feature per row, a result per column (grown by doubling up to max_history): a
        # prediction reads each feature's values in one contiguous pass
        self._features = np.zeros((8, rows))
        self._measures = np.zeros((rows, len(self.names)))
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def _row(self, config: dict, grow: bool) -> np.ndarray:
        features = config_features(self.space, config)
        if grow:
            for key in features:
                self._columns.setdefault(key, len(self._columns))
            if len(self._columns) > self._features.shape[0]:  # a new feature is 0 for earlier results
                wider = np.zeros((2 * len(self._columns), self._features.shape[1]))
                wider[: self._features.shape[0]] = self._features
                self._features = wider
        row = np.zeros(self._features.shape[0])
        for key, value in features.items():
            j = self._columns.get(key)
            if j is not None:
                row[j] = value
        return row

    def learn(self, config: dict, measures: Sequence[float]) -> None:
        """Remember one evaluated configuration and its measures (archive order)."""
        row = self._row(config, grow=True)
        if self._n == self._features.shape[1] and self._n < self.max_history:
            self._features = np.concatenate([self._features, np.zeros_like(self._features)], axis=1)[
                :, : self.max_history]
            self._measures = np.concatenate([self._measures, np.zeros_like(self._measures)])[: self.max_history]
        slot = self._n if self._n < self.max_history else self._next
        self._features[:, slot] = row
        self._measures[slot] = [float(m) for m in measures]
        if self._n < self.max_history:
            self._n += 1
        else:  # full: overwrite the oldest
            self._next = (self._next + 1) % self.max_history

    def predict(self, config: dict) -> dict[str, float] | None:
        """The mean measures of the ``k`` nearest evaluated configurations (None before ``min_history``)."""
        if self._n < self.min_history:
            return None
        row = self._row(config, grow=False)
        distances = np.zeros(self._n)
        scratch = np.empty(self._n)
        for j, value in enumerate(row[: len(self._columns)].tolist()):  # later features are 0 on both sides
            np.subtract(self._features[j, : self._n], value, out=scratch)
            np.multiply(scratch, scratch, out=scratch)
            distances += scratch
        return dict(zip(self.names, map(float, self._measures[nearest(distances, self.k)].mean(axis=0))))


class MeasurePredictor:
    """The domain's static predictions where it gives them, the learned ones for the other measures.

    Parameters
    ----------
    space : Space
        The configurations.
    names : sequence of str
        Measure names, in the archive's order.
    static : callable, optional
        ``predict_measures(config) -> {name: value}`` of the domain; names it leaves out (or a
        call that raises or returns None) are learned.
    """

    def __init__(self, space: Space, names: Sequence[str], static: Predict | None = None) -> None:
        self.names = list(names)
        self.static = static
        self.learned = LearnedPredictor(space, names)

    def learn(self, config: dict, measures: Sequence[float]) -> None:
        """Remember one evaluated configuration (the learned part)."""
        self.learned.learn(config, measures)

    def predict(self, config: dict) -> list[float] | None:
        """Predicted measures in archive order, or None when some measure cannot be predicted yet."""
        known: dict[str, float] = {}
        if self.static is not None:
            try:
                known = dict(self.static(config) or {})
            except Exception:  # noqa: BLE001 - a cost model that fails on one config leaves it to the learned one
                known = {}
        if any(n not in known for n in self.names):
            learned = self.learned.predict(config)
            if learned is None:
                return None
            known = {**learned, **known}
        values = [float(known[n]) for n in self.names]
        return values if all(math.isfinite(v) for v in values) else None


class CellFilter:
    """Chooses, among candidate children, the one to evaluate (see the module docstring).

    Parameters
    ----------
    archive : GridArchive or CVTArchive
        Where cells are looked up (read only).
    predictor : MeasurePredictor
        Predicts each candidate's measures.
    """

    def __init__(self, archive: Any, predictor: MeasurePredictor) -> None:
        self.archive, self.predictor = archive, predictor

    def rank(self, configs: Sequence[dict], target: Sequence[float] | Mapping[str, float] | None = None
             ) -> list[int]:
        """Indices of ``configs``, best first (the order of the module docstring)."""
        span = np.where(self.archive.interval_size > 0, self.archive.interval_size, 1.0)
        goal = None
        if target is not None:
            goal = np.array([float(target[n]) for n in self.predictor.names] if isinstance(target, Mapping)
                            else [float(v) for v in target])
        goal_cell = None if goal is None else self.archive.index_of_single(goal)
        keys = []
        for i, config in enumerate(configs):
            point = self.predictor.predict(config)
            if point is None:
                keys.append((1, 0.0, i))
                continue
            cell = self.archive.index_of_single(point)
            try:
                elite = self.archive.elite(cell)
            except KeyError:  # empty: the best kind, the target cell (then the nearest) first
                distance = 0.0 if goal is None or cell == goal_cell else float(
                    np.max(np.abs((np.asarray(point) - goal) / span)))
                keys.append((0, distance, i))
                continue
            keys.append((2, float(elite["objective"]), i))
        return [i for *_, i in sorted(keys)]

    def choose(self, configs: Sequence[dict], target: Sequence[float] | Mapping[str, float] | None = None) -> int:
        """Index of the candidate to evaluate (:meth:`rank`'s first)."""
        if not configs:
            raise ValueError("no candidates to choose from")
        return self.rank(configs, target)[0]
