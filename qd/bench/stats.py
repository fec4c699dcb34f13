"""Paired statistics for benchmark arms run on the same seeds, and the hypervolume of a front.

Every arm of a benchmark runs on the same seeds, so arms are compared seed by seed:
:func:`compare` gives the two-sided Wilcoxon signed-rank test of the paired differences
(``scipy.stats.wilcoxon``), the Vargha-Delaney A12 effect size, and a bootstrap confidence
interval of the median paired difference (``scipy.stats.bootstrap``); :func:`holm` adjusts a
family of p-values (Holm 1979). :func:`hypervolume` measures a front of points to maximise.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Comparison", "a12", "compare", "holm", "hypervolume", "pareto_front"]


def a12(x: Sequence[float], y: Sequence[float]) -> float:
    """Vargha-Delaney A12: the probability that a draw of ``x`` beats one of ``y`` (ties count half).

    0.5 is no effect; 0.56, 0.64 and 0.71 are the conventional small, medium and large effects.
    """
    a, b = np.asarray(x, float), np.asarray(y, float)
    if not len(a) or not len(b):
        raise ValueError("a12 needs two non-empty samples")
    greater = (a[:, None] > b[None, :]).sum()
    ties = (a[:, None] == b[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(a) * len(b)))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the order given (NaN stays NaN and counts for nothing)."""
    p = np.asarray(pvalues, float)
    valid = np.flatnonzero(~np.isnan(p))
    out = np.full(len(p), np.nan)
    m = len(valid)
    running = 0.0
    for rank, i in enumerate(valid[np.argsort(p[valid], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()


@dataclass
class Comparison:
    """Arm ``a`` against arm ``b`` over the seeds both ran.

    Attributes
    ----------
    n : int
        Paired seeds.
    mean_a, mean_b, median_a, median_b : float
        Per-arm summaries over those seeds.
    median_diff : float
        Median of the paired differences ``a - b``.
    ci_low, ci_high : float
        Bootstrap confidence interval (BCa where it can be computed, else percentile) of the median
        paired difference; NaN below 3 seeds.
    p : float
        Two-sided Wilcoxon signed-rank p-value (1.0 when every difference is 0; NaN below 2 seeds).
    a12 : float
        Vargha-Delaney A12 of ``a`` over ``b`` (unpaired: the chance a run of ``a`` beats one of ``b``).
    wins, losses : int
        Seeds where ``a`` is above, below ``b``.
    """

    n: int
    mean_a: float
    mean_b: float
    median_a: float
    median_b: float
    median_diff: float
    ci_low: float
    ci_high: float
    p: float
    a12: float
    wins: int
    losses: int

    @property
    def ratio(self) -> float:
        """``mean_a / mean_b`` (NaN when ``mean_b`` is 0)."""
        return self.mean_a / self.mean_b if self.mean_b else math.nan


def compare(a: Sequence[float], b: Sequence[float], *, confidence: float = 0.95, n_resamples: int = 9999,
            seed: int = 0) -> Comparison:
    """Paired comparison of two arms' values on the same seeds (``a[i]`` and ``b[i]``: seed ``i``).

    Raises
    ------
    ValueError
        When the samples differ in length or are empty.
    """
    from scipy import stats

    x, y = np.asarray(a, float), np.asarray(b, float)
    if x.shape != y.shape or x.ndim != 1 or not len(x):
        raise ValueError(f"compare needs two paired samples of the same length, got {x.shape} and {y.shape}")
    d = x - y
    # sums of the same cell values in another order differ by rounding: that is a tie, not a win
    d[np.abs(d) <= 1e-9 * max(1.0, float(np.max(np.abs(x))), float(np.max(np.abs(y))))] = 0.0
    n = len(d)
    if n < 2:
        p = math.nan
    elif not np.any(d):
        p = 1.0
    else:
        p = float(stats.wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)
    low = high = math.nan
    if n >= 3 and np.ptp(d) > 0:
        rng = np.random.default_rng(seed)
        for method in ("BCa", "percentile"):
            with warnings.catch_warnings():  # a degenerate BCa interval is NaN: the percentile one follows
                warnings.simplefilter("ignore")
                ci = stats.bootstrap((d,), np.median, confidence_level=confidence, n_resamples=n_resamples,
                                     method=method, rng=rng).confidence_interval
            if np.isfinite(ci.low) and np.isfinite(ci.high):
                low, high = float(ci.low), float(ci.high)
                break
    elif n >= 3:
        low = high = float(d[0])
    return Comparison(n, float(x.mean()), float(y.mean()), float(np.median(x)), float(np.median(y)),
                      float(np.median(d)), low, high, p, a12(x, y), int((d > 0).sum()), int((d < 0).sum()))


def pareto_front(points: np.ndarray) -> np.ndarray:
    """The points no other point dominates, every coordinate to be maximised (duplicates kept once)."""
    pts = np.unique(np.asarray(points, float).reshape(len(points), -1), axis=0)
    if not len(pts):
        return pts
    dominated = np.zeros(len(pts), bool)
    for i, p in enumerate(pts):
        others = np.all(pts >= p, axis=1) & np.any(pts > p, axis=1)
        dominated[i] = bool(others.any())
    return pts[~dominated]


def hypervolume(points: Sequence[Sequence[float]], reference: Sequence[float]) -> float:
    """Volume dominated by ``points`` above ``reference``, every coordinate to be maximised.

    Exact, by slicing: the front is sorted on its last coordinate and each slab between two
    consecutive values adds the (d-1)-dimensional hypervolume of the points above it, down to
    one dimension (the largest coordinate). Points not above the reference in every coordinate
    add nothing. Meant for fronts of up to a few hundred points in two or three dimensions.
    """
    ref = np.asarray(reference, float)
    pts = np.asarray(points, float).reshape(-1, len(ref))
    pts = pts[np.all(pts > ref, axis=1)]
    if not len(pts):
        return 0.0
    return _hv(pareto_front(pts) - ref)


def _hv(pts: np.ndarray) -> float:
    """Hypervolume of ``pts`` (all coordinates > 0) over the origin."""
    if pts.shape[1] == 1:
        return float(pts[:, 0].max())
    order = np.argsort(-pts[:, -1], kind="stable")
    pts = pts[order]
    total = 0.0
    for i in range(len(pts)):
        upper = pts[i, -1]
        lower = pts[i + 1, -1] if i + 1 < len(pts) else 0.0
        if upper > lower:
            total += (upper - lower) * _hv(pareto_front(pts[: i + 1, :-1]))
    return float(total)
