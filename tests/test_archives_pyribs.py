"""Differential tests: qd's archives and pyribs 0.12's, fed identical seeded streams, agree exactly.

Every comparison is exact (``==`` on floats, NaN where both are NaN): statuses, values,
thresholds, elites, ``data()`` in every return type and in order, statistics, the best
elite, retrieval of occupied and empty cells, and ``sample_elites`` from one seed.
"""
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qd.archives import AddStatus, CVTArchive, GridArchive, k_means_centroids

ribs = pytest.importorskip("ribs.archives")

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
RANGES = [(-1.0, 1.0), (0.0, 10.0)]
DIMS = [4, 5]
CENTROIDS = np.random.default_rng(1).uniform([-1, 0], [1, 10], size=(15, 2))
SOLUTION_DIM = 3

# Objectives: a coarse lattice (ties, equal thresholds) mixed with arbitrary floats (rounding).
objectives = st.one_of(st.integers(-8, 8).map(lambda i: i / 4), st.floats(-10, 10, allow_subnormal=False))
# Measures partly outside the ranges: edge cells in grids, far centroids in CVTs.
points = st.tuples(st.floats(-1.6, 1.6), st.floats(-3.0, 13.0))
single_ops = st.tuples(st.just("single"), objectives, points)
batch_ops = st.tuples(st.just("batch"), st.lists(st.tuples(objectives, points), max_size=25))
streams = st.lists(st.one_of(single_ops, batch_ops), min_size=1, max_size=8)
# (learning_rate, threshold_min): MAP-Elites, then CMA-MAE including the rates pyribs special-cases.
modes = st.sampled_from([(None, -math.inf), (1.0, -math.inf), (1.0, -2.0), (0.5, -1.0), (0.1, 0.0), (0.0, -0.5)])


def _pair(kind, learning_rate, threshold_min, seed, **kw):
    common = dict(solution_dim=SOLUTION_DIM, learning_rate=learning_rate, threshold_min=threshold_min, seed=seed,
                  qd_score_offset=-3.0, **kw)
    if kind == "grid":
        return (GridArchive(dims=DIMS, ranges=RANGES, **common),
                ribs.GridArchive(dims=DIMS, ranges=RANGES, **common))
    return (CVTArchive(centroids=CENTROIDS, ranges=RANGES, **common),
            ribs.CVTArchive(centroids=CENTROIDS, ranges=RANGES, **common))


def _same(a, b):
    """Exact equality of two values from the archives (arrays, numpy scalars, None), NaN equal to NaN."""
    if a is None or b is None:
        return a is None and b is None
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and bool(np.array_equal(a, b, equal_nan=a.dtype.kind == "f"))


def _assert_same_archive(ours, theirs):
    assert ours.field_list == theirs.field_list
    assert ours.dtypes == theirs.dtypes
    mine, ref = ours.data(), theirs.data()
    assert list(mine) == list(ref)
    for name in ref:
        assert mine[name].dtype == ref[name].dtype, name
        assert _same(mine[name], ref[name]), name  # contents and order
    for field in ("num_elites", "coverage", "qd_score", "norm_qd_score", "obj_max", "obj_mean"):
        assert _same(getattr(ours.stats, field), getattr(theirs.stats, field)), field
    if theirs.best_elite is None:
        assert ours.best_elite is None
    else:
        assert list(ours.best_elite) == list(theirs.best_elite)
        assert all(_same(ours.best_elite[k], v) for k, v in theirs.best_elite.items())
    assert len(ours) == len(theirs) and ours.empty == theirs.empty


def _feed(ours, theirs, stream, rng):
    for op in stream:
        if op[0] == "single":
            _, objective, measures = op
            solution = rng.normal(size=SOLUTION_DIM)
            a, b = ours.add_single(solution, objective, measures), theirs.add_single(solution, objective, measures)
            assert a["status"] == b["status"] and _same(a["value"], b["value"])
        else:
            items = op[1]
            solution = rng.normal(size=(len(items), SOLUTION_DIM))
            objective = np.array([o for o, _ in items], dtype=float)
            measures = np.array([m for _, m in items], dtype=float).reshape(-1, 2)
            before = measures.copy()
            a = ours.add(solution=solution, objective=objective, measures=measures)
            b = theirs.add(solution=solution, objective=objective, measures=measures)
            assert np.array_equal(measures, before)  # the caller's arrays are never modified
            assert a["status"].dtype == b["status"].dtype and _same(a["status"], b["status"])
            assert _same(a["value"], b["value"])
        _assert_same_archive(ours, theirs)


@pytest.mark.parametrize("kind", ["grid", "cvt"])
@SETTINGS
@given(stream=streams, mode=modes, seed=st.integers(0, 2**16), probes=st.lists(points, min_size=1, max_size=12))
def test_identical_streams_give_identical_archives(kind, stream, mode, seed, probes):
    ours, theirs = _pair(kind, *mode, seed=seed)
    _feed(ours, theirs, stream, np.random.default_rng(seed))

    probe = np.array(probes, dtype=float)  # occupied and empty cells, in and out of range
    assert _same(ours.index_of(probe), theirs.index_of(probe))
    occupied, mine = ours.retrieve(probe)
    occupied_ref, ref = theirs.retrieve(probe)
    assert _same(occupied, occupied_ref) and list(mine) == list(ref)
    assert all(_same(mine[k], ref[k]) for k in ref)
    hit, one = ours.retrieve_single(probe[0])
    hit_ref, one_ref = theirs.retrieve_single(probe[0])
    assert hit == hit_ref and all(_same(one[k], one_ref[k]) for k in one_ref)

    for fields in (None, ["objective", "index"], "measures"):
        for return_type in ("dict", "tuple"):
            a, b = ours.data(fields, return_type=return_type), theirs.data(fields, return_type=return_type)
            assert type(a) is type(b) and len(a) == len(b)
            assert all(_same(x, y) for x, y in zip(a.values() if isinstance(a, dict) else a,
                                                   b.values() if isinstance(b, dict) else b))
    assert [list(e) for e in ours] == [list(e) for e in theirs]
    assert all(all(_same(x[k], y[k]) for k in y) for x, y in zip(ours, theirs))

    if theirs.empty:
        with pytest.raises(IndexError):
            ours.sample_elites(3)
        return
    for n, replace in ((5, True), (len(theirs), False), (1, True)):  # the archives' own seeded generators
        a, b = ours.sample_elites(n, replace=replace), theirs.sample_elites(n, replace=replace)
        assert list(a) == list(b) and all(_same(a[k], b[k]) for k in b)
    with pytest.raises(ValueError, match=r"cannot sample \d+ elites without replacement"):
        ours.sample_elites(len(ours) + 1, replace=False)

    frame, frame_ref = ours.data(return_type="pandas"), theirs.data(return_type="pandas")
    assert list(frame.columns) == list(frame_ref.columns) and type(frame).__name__ == "ArchiveDataFrame"
    assert _same(frame.to_numpy(), frame_ref.to_numpy())
    assert _same(frame.get_field("measures"), frame_ref.get_field("measures"))
    assert [list(e) for e in frame.iterelites()] == [list(e) for e in frame_ref.iterelites()]
    ours.clear(), theirs.clear()
    _assert_same_archive(ours, theirs)


@pytest.mark.parametrize("kind", ["grid", "cvt"])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream=streams, seed=st.integers(0, 2**16))
def test_float32_archives_match_pyribs(kind, stream, seed):
    ours, theirs = _pair(kind, None, -math.inf, seed, dtype=np.float32)
    _feed(ours, theirs, stream, np.random.default_rng(seed))


@SETTINGS
@given(stream=streams, seed=st.integers(0, 2**16), new_dims=st.tuples(st.integers(1, 7), st.integers(1, 7)))
def test_retessellate_keeps_the_elites_pyribs_keeps(stream, seed, new_dims):
    ours, theirs = _pair("grid", None, -math.inf, seed)
    _feed(ours, theirs, stream, np.random.default_rng(seed))
    ours.retessellate(list(new_dims))
    theirs.retessellate(list(new_dims))
    mine, ref = ours.data(), theirs.data()
    assert all(_same(mine[k], ref[k]) for k in ref) and _same(ours.dims, theirs.dims)
    assert ours.stats.num_elites == len(ref["index"])
    assert math.isclose(ours.stats.qd_score, float(np.sum(ref["objective"] + 3.0)), abs_tol=1e-9)


def test_extra_fields_and_dtypes_match_pyribs():
    extra = {"age": ((), np.int32), "grad": ((2,), np.float32)}
    ours = GridArchive(dims=DIMS, ranges=RANGES, solution_dim=(2, 2), extra_fields=extra, seed=3)
    theirs = ribs.GridArchive(dims=DIMS, ranges=RANGES, solution_dim=(2, 2), extra_fields=extra, seed=3)
    rng = np.random.default_rng(0)
    for _ in range(3):
        kw = dict(solution=rng.normal(size=(6, 2, 2)), objective=rng.normal(size=6),
                  measures=rng.uniform([-1, 0], [1, 10], size=(6, 2)), age=rng.integers(0, 9, 6),
                  grad=rng.normal(size=(6, 2)))
        assert _same(ours.add(**kw)["status"], theirs.add(**kw)["status"])
    _assert_same_archive(ours, theirs)
    assert ours.solution_dim == theirs.solution_dim == (2, 2)
    with pytest.raises(ValueError, match="extra_fields"):
        ours.add_single(np.zeros((2, 2)), 1.0, [0, 1])  # a declared field must be passed, as in pyribs
    scalar = GridArchive(dims=DIMS, ranges=RANGES, solution_dim=(), dtype=np.float32)
    scalar.add_single(1.5, 1.0, [0, 1])
    assert scalar.data("solution").shape == (1,) and scalar.dtypes["solution"] == np.float32


def test_construction_rules_match_pyribs():
    for cls, ref in ((GridArchive, ribs.GridArchive),):
        for kwargs in (dict(threshold_min=0.0), dict(learning_rate=0.5),
                       dict(dtype=np.float32, objective_dtype=np.float32),
                       dict(extra_fields={"index": ((), np.int32)})):
            with pytest.raises(ValueError):
                ref(solution_dim=2, dims=DIMS, ranges=RANGES, **kwargs)
            with pytest.raises(ValueError, match="threshold_min|dtype cannot be used|extra_fields cannot use"):
                cls(solution_dim=2, dims=DIMS, ranges=RANGES, **kwargs)
        ours = cls(solution_dim=2, dims=DIMS, ranges=RANGES, learning_rate=0.0, threshold_min=1.0)
        theirs = ref(solution_dim=2, dims=DIMS, ranges=RANGES, learning_rate=0.0, threshold_min=1.0)
        assert ours.learning_rate == theirs.learning_rate == 0.0 and ours.threshold_min == theirs.threshold_min
        assert _same(ours.interval_size, theirs.interval_size) and _same(ours.epsilon, theirs.epsilon)
        assert all(_same(a, b) for a, b in zip(ours.boundaries, theirs.boundaries))
    assert AddStatus.NEW == 2 and AddStatus(1) is AddStatus.IMPROVE_EXISTING and not AddStatus.NOT_ADDED


@pytest.mark.parametrize("method, kwargs", [("brute_force", dict(chunk_size=7)), ("brute_force", {}),
                                            ("sklearn_nn", {}), ("scipy_kd_tree", dict(kdtree_query_kwargs={"p": 1}))])
def test_cvt_nearest_neighbor_methods_match_pyribs(method, kwargs):
    ours = CVTArchive(centroids=CENTROIDS, ranges=RANGES, solution_dim=1, nearest_neighbors=method, **kwargs)
    theirs = ribs.CVTArchive(centroids=CENTROIDS, ranges=RANGES, solution_dim=1, nearest_neighbors=method, **kwargs)
    probe = np.random.default_rng(2).uniform([-3, -5], [3, 15], size=(60, 2))
    assert _same(ours.index_of(probe), theirs.index_of(probe))
    assert [ours.index_of_single(p) for p in probe[:10]] == theirs.index_of(probe[:10]).tolist()


def test_cvt_built_from_a_cell_count():
    ribs_kw = dict(solution_dim=2, centroids=40, ranges=RANGES, samples=2000, seed=4, k_means_kwargs={"max_iter": 30})
    ours, theirs = CVTArchive(**ribs_kw), ribs.CVTArchive(**ribs_kw)  # pyribs's k-means on request: same centroids
    assert _same(ours.centroids, theirs.centroids)
    centroids, samples = k_means_centroids(centroids=40, ranges=RANGES, samples=2000, seed=4,
                                           k_means_kwargs={"max_iter": 30})
    assert _same(centroids, theirs.centroids) and samples.shape == (2000, 2)
    fast = CVTArchive(solution_dim=2, centroids=500, ranges=RANGES, seed=4)  # pyribs's usual form, qd's builder
    assert fast.centroids.shape == (500, 2) and fast.cells == 500
    assert np.all(fast.centroids >= [-1, 0]) and np.all(fast.centroids <= [1, 10])


def test_adding_while_iterating_raises_like_pyribs():
    for archive in (GridArchive(dims=DIMS, ranges=RANGES, solution_dim=1),
                    ribs.GridArchive(dims=DIMS, ranges=RANGES, solution_dim=1)):
        archive.add_single([0.0], 1.0, [0, 1])
        archive.add_single([0.0], 1.0, [0.9, 9])
        with pytest.raises(RuntimeError, match="during iteration"):
            for _ in archive:
                archive.add_single([1.0], 2.0, [0, 5])
        with pytest.raises(RuntimeError, match="during iteration"):
            for _ in archive:
                archive.clear()


def test_inputs_pyribs_takes_are_taken_alike():
    kw = dict(solution_dim=SOLUTION_DIM, ranges=RANGES)
    # whole-number float dims, as pyribs casts them
    assert GridArchive(dims=[4.0, 5.0], **kw).cells == ribs.GridArchive(dims=[4.0, 5.0], **kw).cells == 20
    ours, theirs = GridArchive(dims=DIMS, **kw), ribs.GridArchive(dims=DIMS, **kw)
    # a one-element array as add_single's objective (code slicing objectives[i:i + 1])
    for archive in (ours, theirs):
        assert int(archive.add_single(np.ones(SOLUTION_DIM), np.array([1.0]), [0.0, 5.0])["status"]) == 2
    assert ours.stats.obj_max == theirs.stats.obj_max == 1.0
    # the grid index conversions check shapes as pyribs does
    for archive in (ours, theirs):
        assert _same(archive.grid_to_int_index([[1, 2]]), [7]) and _same(archive.int_to_grid_index([7]), [[1, 2]])
        with pytest.raises(ValueError, match="Expected int_indices to be a 1D array"):
            archive.int_to_grid_index([[7]])
        with pytest.raises(ValueError, match=r"Expected grid_indices to be an array with shape \(batch_size, 2\)"):
            archive.grid_to_int_index([1, 2])


def test_a_declared_extra_field_named_id_reads_as_pyribs_in_empty_cells():
    kw = dict(solution_dim=SOLUTION_DIM, dims=DIMS, ranges=RANGES, extra_fields={"id": ((), np.float64)})
    ours, theirs = GridArchive(**kw), ribs.GridArchive(**kw)
    for archive in (ours, theirs):
        archive.add(np.ones((1, SOLUTION_DIM)), [1.0], [[0.0, 5.0]], id=[7.5])
    (occ_a, a), (occ_b, b) = ours.retrieve([[0.0, 5.0], [-0.9, 0.5]]), theirs.retrieve([[0.0, 5.0], [-0.9, 0.5]])
    assert _same(occ_a, occ_b) and _same(a["id"], b["id"]) and _same(a["index"], b["index"])
