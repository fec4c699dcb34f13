"""CVTArchive: cells are the Voronoi regions of centroids spread evenly over measure space.

``centroids=int`` builds the centroids with :func:`cvt_centroids`: Lloyd's k-means on
uniform samples with a KD-tree doing each iteration's nearest-centroid assignment
(O(samples · log cells) per iteration instead of the O(samples · cells) of a dense
k-means). pyribs clusters with scikit-learn instead, so the two give different (equally
valid) centroids from one seed; pass ``k_means_kwargs`` to cluster exactly as pyribs
does (needs scikit-learn), or pass the centroids themselves.
"""
from __future__ import annotations

import numbers
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qd.archives.base import ArchiveBase

__all__ = ["CVTArchive", "cvt_centroids", "k_means_centroids"]

_NEAREST = ("scipy_kd_tree", "brute_force", "sklearn_nn")
_DEPRECATED = ("custom_centroids", "centroid_method", "use_kd_tree", "ckdtree_kwargs")


def cvt_centroids(cells: int, ranges: Sequence[Sequence[float]], *, samples: int | Any = None,
                  iterations: int = 20, seed: int | None = None) -> np.ndarray:
    """Centroids of a centroidal Voronoi tessellation of the box ``ranges``.

    Parameters
    ----------
    cells : int
        Number of centroids.
    ranges : sequence of (float, float)
        The box, one ``(low, high)`` per dimension.
    samples : int or array-like, optional
        Number of uniform samples that k-means clusters (default ``max(10 · cells,
        10,000)`` capped at 100,000), or a ``(samples, len(ranges))`` array of points.
    iterations : int
        Lloyd iterations.
    seed : int, optional
        Seeds the samples and the initial centroids.

    Returns
    -------
    ndarray of shape (cells, len(ranges))
    """
    ranges_arr = np.asarray(ranges, dtype=float)
    low, high = ranges_arr[:, 0], ranges_arr[:, 1]
    rng = np.random.default_rng(seed)
    if samples is None or isinstance(samples, numbers.Integral):
        count = int(samples) if samples is not None else min(max(10 * cells, 10_000), 100_000)
        if cells < 1 or count < cells:
            raise ValueError(f"need 1 <= cells <= samples, got cells={cells}, samples={count}")
        points = rng.uniform(low, high, size=(count, len(low)))
    else:
        points = np.array(samples, dtype=float)
        if points.ndim != 2 or points.shape[1] != len(low) or len(points) < cells:
            raise ValueError(f"samples must have shape (n >= {cells}, {len(low)}), got {points.shape}")
    n = len(points)
    centroids = points[rng.choice(n, size=cells, replace=False)].copy()
    points = points[_spatial_order(points, low, high)]  # neighbours in memory: faster KD-tree queries
    for _ in range(int(iterations)):
        from scipy.spatial import cKDTree

        _, nearest = cKDTree(centroids).query(points, workers=-1)
        counts = np.bincount(nearest, minlength=cells)
        filled = counts > 0
        for j in range(centroids.shape[1]):
            sums = np.bincount(nearest, weights=points[:, j], minlength=cells)
            centroids[filled, j] = sums[filled] / counts[filled]
        empty = np.flatnonzero(~filled)
        if len(empty):  # an empty cluster restarts at a random sample
            centroids[empty] = points[rng.choice(n, size=len(empty), replace=False)]
    return centroids


def _spatial_order(points: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Order of ``points`` along a Z-order (Morton) curve over a 2^10-per-axis lattice."""
    dims = points.shape[1]
    bits = max(1, min(10, 60 // dims))
    unit = np.clip((points - low) / (high - low), 0.0, 1.0)  # custom samples may lie outside the box
    lattice = (unit * ((1 << bits) - 1)).astype(np.uint64)
    key = np.zeros(len(points), dtype=np.uint64)
    for b in range(bits - 1, -1, -1):  # interleave bits, most significant first
        for j in range(dims):
            key = (key << np.uint64(1)) | ((lattice[:, j] >> np.uint64(b)) & np.uint64(1))
    return np.argsort(key, kind="stable")


def k_means_centroids(*, centroids: int, ranges: Sequence[Sequence[float]], samples: int | Any = 100_000,
                      dtype: Any = np.float64, seed: int | None = None,
                      k_means_kwargs: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pyribs's ``k_means_centroids``: scikit-learn k-means on uniform samples (needs scikit-learn).

    Same arguments and results as ``ribs.archives.k_means_centroids``: returns the
    ``(centroids, measure_dim)`` centroids and the samples clustered.
    """
    try:
        from sklearn.cluster import k_means
    except ImportError:
        raise ImportError("k_means_centroids (and CVTArchive(k_means_kwargs=...)) needs scikit-learn: "
                          "pip install scikit-learn") from None
    bounds = np.asarray(ranges, dtype=dtype)
    kwargs = dict(k_means_kwargs or {})
    kwargs.setdefault("n_init", 1)
    kwargs.setdefault("init", "random")
    kwargs.setdefault("algorithm", "lloyd")
    kwargs.setdefault("random_state", seed)
    if isinstance(samples, numbers.Integral):
        points = np.random.default_rng(seed).uniform(bounds[:, 0], bounds[:, 1],
                                                     size=(samples, len(bounds))).astype(dtype)
    else:
        points = np.asarray(samples, dtype=dtype)
        if points.ndim != 2 or points.shape[1] != len(bounds):
            raise ValueError(f"samples must have shape (num_samples, {len(bounds)}), got {points.shape}")
    found = k_means(points, centroids, **kwargs)[0]
    if found.shape[0] < centroids:
        raise RuntimeError(f"k-means found {found.shape[0]} centroids, but the archive needs {centroids} cells; "
                           "use more samples or fewer cells")
    return found, points


class CVTArchive(ArchiveBase):
    """An archive whose cells are the Voronoi regions of centroids (pyribs's ``CVTArchive``).

    Parameters
    ----------
    cells : int, optional
        Number of cells (qd's spelling of ``centroids=int``).
    ranges : sequence of (float, float)
        ``(low, high)`` of each measure.
    centroids : int, array-like or path, optional
        An int: compute that many centroids (:func:`cvt_centroids`, or pyribs's
        scikit-learn k-means when ``k_means_kwargs`` is given). Otherwise a
        ``(cells, measure_dim)`` array, or a ``.npy`` or whitespace-separated text file.
    solution_dim : int or tuple of int, optional
        Shape of numeric solutions; None (default) stores configurations.
    samples : int or array-like, optional
        Samples for the k-means (count or points).
    k_means_kwargs : dict, optional
        Build the centroids with :func:`k_means_centroids` (scikit-learn) using these
        arguments, exactly as pyribs does.
    iterations : int
        Lloyd iterations of :func:`cvt_centroids`.
    nearest_neighbors : {"scipy_kd_tree", "brute_force", "sklearn_nn"}
        How measures find their nearest centroid (pyribs's options; ``sklearn_nn``
        needs scikit-learn).
    kdtree_kwargs, kdtree_query_kwargs, sklearn_nn_kwargs : dict, optional
        Passed to :class:`scipy.spatial.KDTree`, its ``query``, and
        ``sklearn.neighbors.NearestNeighbors``.
    chunk_size : int, optional
        ``brute_force`` computes distances for this many measures at a time.
    seed : int, optional
        Seeds the centroids and :meth:`sample_elites`.
    **kwargs
        See :class:`qd.archives.base.ArchiveBase`.
    """

    def __init__(self, cells: int | None = None, ranges: Sequence[Sequence[float]] = (), *,
                 centroids: Any = None, solution_dim: int | tuple[int, ...] | None = None,
                 samples: int | Any = None, k_means_kwargs: dict | None = None, iterations: int = 20,
                 nearest_neighbors: str = "scipy_kd_tree", kdtree_kwargs: dict | None = None,
                 kdtree_query_kwargs: dict | None = None, chunk_size: int | None = None,
                 sklearn_nn_kwargs: dict | None = None, seed: int | None = None, **kwargs: Any):
        deprecated = [name for name in _DEPRECATED if kwargs.pop(name, None) is not None]
        if deprecated:
            raise ValueError(f"{deprecated[0]} was removed in pyribs 0.9.0; pass centroids (an int, an array or "
                             "a file) and nearest_neighbors instead")
        if isinstance(centroids, numbers.Integral):
            cells, centroids = (int(centroids), None) if cells is None else (cells, centroids)
        if (cells is None) == (centroids is None):
            raise ValueError("give either cells / centroids=int (centroids are computed) or a centroids array, "
                             "not both or neither")
        if nearest_neighbors not in _NEAREST:
            raise ValueError(f"Unknown value `{nearest_neighbors}` for nearest_neighbors; use one of {_NEAREST}")
        ranges_arr = np.asarray(ranges, dtype=float)
        if centroids is None:
            super().__init__(int(cells), ranges, solution_dim=solution_dim, seed=seed, **kwargs)  # validates
            if k_means_kwargs is not None:
                found, _ = k_means_centroids(centroids=int(cells), ranges=ranges_arr,
                                             samples=100_000 if samples is None else samples,
                                             dtype=self._meas_dt, seed=seed, k_means_kwargs=k_means_kwargs)
            else:
                found = cvt_centroids(int(cells), ranges_arr, samples=samples, iterations=iterations, seed=seed)
            self._centroids = np.asarray(found, dtype=self._meas_dt)
        else:
            if isinstance(centroids, (str, Path)):
                path = Path(centroids)
                centroids = np.load(path, allow_pickle=False) if path.suffix == ".npy" else np.loadtxt(path, ndmin=2)
            arr = np.array(centroids, dtype=np.float64, ndmin=2)
            if arr.ndim != 2 or arr.shape[1] != ranges_arr.reshape(-1, 2).shape[0]:
                raise ValueError(f"centroids must have shape (cells, {len(ranges_arr)}), got {arr.shape}")
            if not np.all(np.isfinite(arr)):
                raise ValueError("centroids must be finite")
            super().__init__(len(arr), ranges, solution_dim=solution_dim, seed=seed, **kwargs)
            self._centroids = arr.astype(self._meas_dt)
        self._nearest_neighbors = nearest_neighbors
        self._chunk_size = chunk_size
        self._kdtree_kwargs = dict(kdtree_kwargs or {})
        self._query_kwargs = dict(kdtree_query_kwargs or {})
        self._sklearn_nn_kwargs = dict(sklearn_nn_kwargs or {})
        self._kdtree: Any = None  # built on first use: reading a stored archive needs no cell lookups
        self._ckdtree_query: Any = None
        if nearest_neighbors == "sklearn_nn":
            try:
                from sklearn.neighbors import NearestNeighbors
            except ImportError:
                raise ImportError("nearest_neighbors='sklearn_nn' needs scikit-learn: "
                                  "pip install scikit-learn") from None
            self._sklearn_nn = NearestNeighbors(**self._sklearn_nn_kwargs).fit(self._centroids)

    @property
    def centroids(self) -> np.ndarray:
        """``(cells, measure_dim)`` centroid of each cell."""
        return self._centroids.copy()

    @property
    def _tree(self) -> Any:
        """The KD-tree of the centroids (scipy), built on first use."""
        if self._kdtree is None:
            from scipy.spatial import KDTree, cKDTree

            self._kdtree = KDTree(self._centroids, **self._kdtree_kwargs)
            self._ckdtree_query = cKDTree.query
        return self._kdtree

    def _index_cells(self, measures: np.ndarray) -> np.ndarray:
        # Nearest centroid of the point itself, unclipped (pyribs): a point outside the ranges
        # belongs to the cell whose centroid is nearest to it.
        if len(measures) == 0:
            return np.zeros(0, dtype=np.int64)
        if self._nearest_neighbors == "scipy_kd_tree":
            return self._tree.query(measures, **self._query_kwargs)[1].astype(np.int64)
        if self._nearest_neighbors == "sklearn_nn":
            return self._sklearn_nn.kneighbors(measures, n_neighbors=1, return_distance=False)[:, 0].astype(np.int64)
        expanded = measures[:, None, :]
        if self._chunk_size is not None and self._chunk_size < len(measures):
            chunks = np.array_split(expanded, np.ceil(len(expanded) / self._chunk_size))
            return np.concatenate([np.argmin(np.sum(np.square(c - self._centroids), axis=2), axis=1)
                                   for c in chunks]).astype(np.int64)
        return np.argmin(np.sum(np.square(expanded - self._centroids), axis=2), axis=1).astype(np.int64)

    def _index_single(self, measures: list[float]) -> int:
        if self._nearest_neighbors == "scipy_kd_tree" and not self._query_kwargs:
            tree = self._tree
            return int(self._ckdtree_query(tree, measures)[1])  # skips KDTree's Python wrapper; same answer
        return int(self._index_cells(np.asarray([measures], dtype=self._meas_dt))[0])

    def _params(self) -> dict[str, Any]:
        return dict(ranges=[list(r) for r in self.ranges], nearest_neighbors=self._nearest_neighbors,
                    chunk_size=self._chunk_size, kdtree_kwargs=self._kdtree_kwargs,
                    kdtree_query_kwargs=self._query_kwargs, sklearn_nn_kwargs=self._sklearn_nn_kwargs,
                    **super()._params())
