"""Archive invariants (hypothesis) and behaviour: insertion, statistics, queries, save/load, plots."""
import math

import numpy as np
import pytest
from archive_views import exact
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qd.archives import CVTArchive, GridArchive, compile_where, load

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
RANGES = [(-1.0, 1.0), (0.0, 10.0)]

# Objectives on a coarse lattice so ties are common; measures partly outside the ranges (edge cells).
objectives = st.integers(-20, 20).map(lambda i: i / 4)
points = st.tuples(st.floats(-1.5, 1.5), st.floats(-2.0, 12.0))
items = st.lists(st.tuples(objectives, points), min_size=0, max_size=60)
batches = st.lists(items, min_size=1, max_size=4)


def _grid(**kw):
    return GridArchive(dims=[4, 5], ranges=RANGES, measure_names=["a", "b"], **kw)


_CVT_CENTROIDS = np.random.default_rng(1).uniform([-1, 0], [1, 10], size=(15, 2))


def _cvt(**kw):
    return CVTArchive(centroids=_CVT_CENTROIDS, ranges=RANGES, measure_names=["a", "b"], **kw)


def _snapshot(archive):
    """Every elite's fields, in cell order (batch and single insertion order new cells differently)."""
    if archive.empty:  # keyword fields exist only once passed, so two empty archives may list different fields
        return {}
    data = archive.data()
    order = np.argsort(data["index"])
    return {k: (v[order].tolist() if k != "solution" else list(v[order])) for k, v in data.items()}


def _add_batch(archive, batch, start):
    objective = [o for o, _ in batch]
    measures = np.array([m for _, m in batch], dtype=float).reshape(-1, 2)
    configs = [{"n": start + i} for i in range(len(batch))]
    return archive.add(configs, objective, measures, id=range(start, start + len(batch)),
                       feedback=[f"f{start + i}" for i in range(len(batch))])


@pytest.mark.parametrize("make", [_grid, _cvt])
@SETTINGS
@given(batches=batches)
def test_batch_add_equals_add_single_in_order(make, batches):
    batched, single = make(), make()
    n = 0
    for batch in batches:
        _add_batch(batched, batch, n)
        for i, (objective, measures) in enumerate(batch):
            single.add_single({"n": n + i}, objective, measures, id=n + i, feedback=f"f{n + i}")
        n += len(batch)
    assert _snapshot(batched) == _snapshot(single)
    assert batched.stats == single.stats


@pytest.mark.parametrize("make", [_grid, _cvt])
@SETTINGS
@given(batches=batches, offset=st.sampled_from([0.0, -5.0, 3.0]))
def test_each_cell_holds_the_best_ever_offered_and_stats_agree(make, batches, offset):
    archive = make(qd_score_offset=offset)
    best: dict[int, tuple[float, int]] = {}
    n = 0
    for batch in batches:
        _add_batch(archive, batch, n)
        for i, (objective, measures) in enumerate(batch):
            cell = archive.index_of_single(measures)
            if cell not in best or objective > best[cell][0]:  # strict: the earliest wins ties
                best[cell] = (objective, n + i)
        n += len(batch)
    data = archive.data()
    assert {int(c): (float(o), int(i)) for c, o, i in zip(data["index"], data["objective"], data["id"])} == best
    assert archive.stats.num_elites == len(best) == len(archive) == int(archive._occupied.sum())
    assert archive.stats.coverage == len(best) / archive.cells
    assert math.isclose(archive.stats.qd_score, sum(o - offset for o, _ in best.values()), abs_tol=1e-9)
    if best:
        assert archive.stats.obj_max == max(o for o, _ in best.values())
        assert math.isclose(archive.stats.obj_mean, np.mean([o for o, _ in best.values()]))
    else:
        assert archive.stats.obj_max is None and archive.stats.qd_score == 0.0


@pytest.mark.parametrize("make", [_grid, _cvt])
@SETTINGS
@given(batches=batches)
def test_save_load_round_trip_is_exact(make, batches, tmp_path_factory):
    archive = make(qd_score_offset=-2.0)
    n = 0
    for batch in batches:
        _add_batch(archive, batch, n)
        n += len(batch)
    path = tmp_path_factory.mktemp("save") / "archive.npz"
    archive.save(path)
    loaded = type(archive).load(path)
    assert _snapshot(loaded) == _snapshot(archive)
    assert loaded.stats == archive.stats
    assert loaded.measure_names == archive.measure_names and loaded.cells == archive.cells
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    if len(archive):
        assert archive.sample_elites(7, rng=rng_a)["id"].tolist() == loaded.sample_elites(7, rng=rng_b)["id"].tolist()


def _row(archive, cell):
    """The elite of ``cell`` as the archive reads its rows (every field it has now, ``index`` last)."""
    data = archive.data()
    pos = int(np.flatnonzero(data["index"] == cell)[0])
    return {k: v[pos] for k, v in data.items()}


def _same_row(a, b):
    return (a is None and b is None) or (
        a is not None and b is not None and list(a) == list(b)
        and all(np.array_equal(np.asarray(a[k]), np.asarray(b[k])) if k != "solution" else a[k] == b[k] for k in b))


single_ops = st.one_of(st.tuples(st.just("add"), objectives, points, st.booleans()),
                       st.tuples(st.just("remove"), st.integers(0, 19)))


@SETTINGS
@given(ops=st.lists(single_ops, min_size=1, max_size=40),
       mode=st.sampled_from([(None, -math.inf), (1.0, -1.0), (0.5, -1.0), (0.0, 0.0)]))
def test_best_elite_is_the_best_one_as_it_was_inserted(ops, mode):
    # The archive reads the best elite from its cell and copies it out only before that cell changes
    # (CMA-MAE replacing it with a lower objective, a keyword field first passed later, a removal):
    # it must always equal the row read right after the insertion that made it the best.
    archive = _grid(learning_rate=mode[0], threshold_min=mode[1])
    expected = None
    for n, op in enumerate(ops):
        if op[0] == "add":
            _, objective, measures, note = op
            out = archive.add_single({"n": n}, objective, measures, **({"note": f"n{n}"} if note else {}))
            if out["status"] and (expected is None or objective > expected["objective"]):
                expected = _row(archive, archive.index_of_single(measures))
        else:
            held = archive.elite(op[1])["objective"] if op[1] in archive.data("index") else None
            archive.remove_single(op[1])
            if held is not None and not held < expected["objective"]:  # the best went: the best left is it
                live = archive.data()
                expected = (None if archive.empty
                            else _row(archive, live["index"][int(np.argmax(live["objective"]))]))
        assert _same_row(archive.best_elite, expected)


@SETTINGS
@given(st.lists(st.tuples(st.floats(-1e6, 1e6), st.floats(-1e6, 1e6)), min_size=1, max_size=40),
       st.integers(1, 30), st.integers(1, 30))
def test_batch_and_single_index_agree_and_stay_in_range(measures, d0, d1):
    archive = GridArchive(dims=[d0, d1], ranges=[(-3.3, 7.1), (0.1, 0.2)])
    batch = archive.index_of(np.array(measures))
    assert batch.tolist() == [archive.index_of_single(m) for m in measures]
    assert all(0 <= i < archive.cells for i in batch)


def test_grid_cells_follow_the_boundaries():
    archive = GridArchive(dims=[10], ranges=[(0, 1)])
    assert archive.index_of([[0.0], [0.05], [0.1], [0.3], [0.999], [1.0], [-5], [5]]).tolist() == \
        [0, 0, 1, 3, 9, 9, 0, 9]
    assert np.allclose(archive.boundaries[0], np.linspace(0, 1, 11))
    grid = GridArchive(dims=[3, 4], ranges=[(0, 3), (0, 4)])
    cells = grid.index_of([[2.5, 0.5], [0.5, 3.5]])
    assert grid.int_to_grid_index(cells).tolist() == [[2, 0], [0, 3]]
    assert grid.grid_to_int_index([[2, 0], [0, 3]]).tolist() == cells.tolist()


def test_cvt_cells_are_nearest_centroids_inside_the_ranges():
    archive = CVTArchive(cells=200, ranges=RANGES, seed=3)
    c = archive.centroids
    assert c.shape == (200, 2) and len(np.unique(c, axis=0)) == 200
    assert np.all(c >= [-1, 0]) and np.all(c <= [1, 10])
    pts = np.random.default_rng(0).uniform([-1, 0], [1, 10], size=(500, 2))
    brute = np.argmin(((pts[:, None, :] - c[None]) ** 2).sum(-1), axis=1)
    assert archive.index_of(pts).tolist() == brute.tolist()
    same = CVTArchive(cells=200, ranges=RANGES, seed=3)
    assert np.array_equal(same.centroids, c)


def test_cvt_takes_centroids_from_an_array_or_a_file(tmp_path):
    np.save(tmp_path / "c.npy", _CVT_CENTROIDS)
    np.savetxt(tmp_path / "c.txt", _CVT_CENTROIDS)
    for source in (_CVT_CENTROIDS, tmp_path / "c.npy", str(tmp_path / "c.txt")):
        archive = CVTArchive(centroids=source, ranges=RANGES)
        assert archive.cells == 15 and np.allclose(archive.centroids, _CVT_CENTROIDS)
    with pytest.raises(ValueError, match="either cells"):
        CVTArchive(cells=10, centroids=_CVT_CENTROIDS, ranges=RANGES)
    with pytest.raises(ValueError, match="shape"):
        CVTArchive(centroids=np.zeros((4, 3)), ranges=RANGES)


def test_status_and_value_follow_pyribs():
    archive = _grid()
    out = archive.add([{"a": 1}, {"b": 2}, {"c": 3}], [1.0, 3.0, 2.0], [[0.1, 1], [0.1, 1], [0.9, 9]])
    assert out["status"].tolist() == [2, 2, 2] and out["value"].tolist() == [1.0, 3.0, 2.0]
    out = archive.add([{"d": 4}, {"e": 5}], [2.5, 3.5], [[0.1, 1], [0.1, 1]])
    assert out["status"].tolist() == [0, 1] and out["value"].tolist() == [-0.5, 0.5]
    assert archive.add_single({"f": 6}, 3.5, [0.1, 1]) == {"status": 0, "value": 0.0}  # a tie does not replace
    assert archive.retrieve_single([0.1, 1])[1]["solution"] == {"e": 5}


def test_duplicates_and_ties_are_deterministic():
    archive = _grid()
    configs = [{"i": i} for i in range(4)]
    archive.add(configs, [1.0, 2.0, 2.0, 0.5], [[0, 5]] * 4, id=[10, 11, 12, 13])
    assert archive.data("id").tolist() == [11]  # best objective, earliest on the tie
    again = archive.add(configs, [1.0, 2.0, 2.0, 0.5], [[0, 5]] * 4, id=[20, 21, 22, 23])
    assert again["status"].tolist() == [0, 0, 0, 0] and archive.data("id").tolist() == [11]


def test_extra_fields_are_kept_and_reset_when_an_elite_is_replaced():
    archive = _grid()
    archive.add_single({"x": 1}, 1.0, [0, 0], id=7, feedback="slow", metadata={"calls": 3})
    archive.add_single({"x": 2}, 2.0, [0, 0])
    elite = archive.retrieve_single([0, 0])[1]
    assert elite["solution"] == {"x": 2} and elite["id"] == -1 and elite["feedback"] is None
    assert elite["metadata"] is None
    with pytest.raises(ValueError, match="built-in"):
        archive.add_single({"x": 3}, 3.0, [0, 0], threshold=1)
    with pytest.raises(ValueError, match="built-in"):
        archive.add([{"x": 3}], [3.0], [[0, 0]], index=[1])
    assert archive.retrieve_single([0, 0])[1]["solution"] == {"x": 2}  # nothing half-inserted


def test_cma_mae_thresholds():
    archive = GridArchive(dims=[2], ranges=[(0, 1)], learning_rate=0.5, threshold_min=0.0)
    assert archive.add_single({}, -1.0, [0.1])["status"] == 0  # must beat threshold_min
    assert archive.add_single({"a": 1}, 4.0, [0.1]) == {"status": 2, "value": 4.0}
    assert archive.data("threshold").tolist() == [2.0]  # 0.5 * 0 + 0.5 * 4
    assert archive.add_single({"a": 2}, 3.0, [0.1]) == {"status": 1, "value": 1.0}  # non-elitist: 3 > 2
    assert archive.data("threshold").tolist() == [2.5] and archive.stats.obj_max == 4.0
    batch = GridArchive(dims=[2], ranges=[(0, 1)], learning_rate=0.5, threshold_min=0.0)
    batch.add([{}, {}], [4.0, 2.0], [[0.1], [0.2]])
    # Batch rule: ratio = 0.5**2, threshold = 0.25 * 0 + 0.75 * mean(4, 2)
    assert batch.data("threshold").tolist() == [2.25] and batch.data("objective").tolist() == [4.0]
    with pytest.raises(ValueError, match="threshold_min"):
        GridArchive(dims=[2], ranges=[(0, 1)], learning_rate=0.5)


@pytest.mark.parametrize("kwargs, message", [
    (dict(dims=[10, 0], ranges=RANGES), "dims must all be >= 1"),
    (dict(dims=[], ranges=[]), "dims must be a non-empty"),
    (dict(dims=[3, 3], ranges=[(0, 1)]), "2 dims but 1 ranges"),
    (dict(dims=[3], ranges=[(1, 1)]), "empty or inverted"),
    (dict(dims=[3], ranges=[(2, 1)]), "empty or inverted"),
    (dict(dims=[3], ranges=[(0, math.inf)]), "finite"),
    (dict(dims=[3], ranges=[(0, 1)], measure_names=["a", "b"]), "2 measure_names for 1 measures"),
    (dict(dims=[3], ranges=[(0, 1)], learning_rate=1.5), "learning_rate"),
])
def test_bad_construction_is_a_clear_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GridArchive(**kwargs)


@pytest.mark.parametrize("call, message", [
    (lambda a: a.add_single({}, math.nan, [0, 1]), "objective must be finite"),
    (lambda a: a.add_single({}, 1.0, [0, math.inf]), "measure 'b' must be finite"),
    (lambda a: a.add_single({}, 1.0, [0]), "has 1 values; the archive has 2 measures"),
    (lambda a: a.add_single({}, "high", [0, 1]), "objective must be a number"),
    (lambda a: a.add([{}], [math.inf], [[0, 1]]), "objective must be finite"),
    (lambda a: a.add([{}], [1.0], [[0, math.nan]]), "measures must be finite"),
    (lambda a: a.add([{}, {}], [1.0, 2.0], [[0, 1]]), r"shape \(2, 2\)"),
    (lambda a: a.add([{}], [1.0, 2.0], [[0, 1], [0, 1]]), "1 solutions for a batch of 2"),
    (lambda a: a.add([{}], [[1.0]], [[0, 1]]), "1-D"),
    (lambda a: a.add([{}], [1.0], [[0, 1]], id=[1, 2]), "field 'id' has 2 values"),
    (lambda a: a.data(return_type="xml"), "return_type"),
])
def test_bad_input_is_a_clear_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call(_grid())


def test_numeric_archives_store_vectors():
    archive = GridArchive(dims=[5, 5], ranges=RANGES, solution_dim=3)
    archive.add(np.ones((2, 3)), [1.0, 2.0], [[0, 1], [0.5, 5]])
    archive.add_single(np.full(3, 2.0), 3.0, [0, 1])
    assert archive.data("solution").shape == (2, 3)
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        archive.add_single([1, 2], 1.0, [0, 1])
    with pytest.raises(ValueError, match="configurations"):
        _grid().add(np.ones((1, 3)), [1.0], [[0, 1]])


def test_sampling_and_retrieval():
    archive = _grid(seed=0)
    with pytest.raises(IndexError, match="no elites in the archive to sample"):
        archive.sample_elites(3)
    archive.add([{"i": i} for i in range(3)], [1.0, 2.0, 3.0], [[-0.9, 1], [0, 5], [0.9, 9]], id=[0, 1, 2])
    sample = archive.sample_elites(200, rng=np.random.default_rng(1))
    assert set(sample["id"].tolist()) == {0, 1, 2} and sample["measures"].shape == (200, 2)
    assert [s["i"] for s in sample["solution"][:5]] == sample["id"][:5].tolist()
    occupied, data = archive.retrieve([[0, 5], [0.9, 0.1]])
    assert occupied.tolist() == [True, False] and data["id"][0] == 1 and math.isnan(data["objective"][1])
    occupied, empty = archive.retrieve_single([0.9, 0.1])
    assert not occupied and empty["index"] == -1 and empty["solution"] is None and math.isnan(empty["objective"])
    frame = archive.data(return_type="pandas")
    assert list(frame.columns) == ["solution", "objective", "measures_0", "measures_1", "threshold", "id", "index"]
    assert len(frame) == 3 and frame.get_field("measures").shape == (3, 2)
    assert [e["id"] for e in archive] == [0, 1, 2]
    archive.clear()
    assert len(archive) == 0 and archive.stats.num_elites == 0


def test_top_diverse_and_where():
    archive = GridArchive(dims=[10, 10], ranges=[(0, 1), (0, 1)], measure_names=["cost", "depth"])
    rng = np.random.default_rng(0)
    m = rng.uniform(0, 1, size=(300, 2))
    archive.add([{"i": i} for i in range(300)], -m.sum(axis=1) + rng.normal(0, 0.1, 300), m, id=range(300))
    ranked = archive.top()
    assert [e["objective"] for e in ranked] == sorted((e["objective"] for e in ranked), reverse=True)
    ids = lambda elites: [e["id"] for e in elites]  # noqa: E731
    assert ids(archive.top(3)) == ids(ranked[:3])
    picks = archive.diverse(6)
    assert picks[0]["id"] == ranked[0]["id"]
    assert ids(archive.diverse(3)) == ids(picks[:3])
    spread = min(np.linalg.norm(a["measures"] - b["measures"]) for i, a in enumerate(picks) for b in picks[i + 1:])
    best_six = [e["measures"] for e in ranked[:6]]
    clustered = min(np.linalg.norm(a - b) for i, a in enumerate(best_six) for b in best_six[i + 1:])
    assert spread > 2 * clustered
    cheap = archive.where("cost < 0.3 and objective > -1")
    assert cheap and all(e["measures"][0] < 0.3 and e["objective"] > -1 for e in cheap)
    assert ids(cheap) == ids(archive.where(lambda e: e["measures"][0] < 0.3 and e["objective"] > -1))
    assert all(e["measures"][1] > 0.5 for e in archive.diverse(4, where="depth > 0.5"))
    with pytest.raises(ValueError, match="unknown name 'calls'"):
        archive.where("calls < 3")
    named = GridArchive(dims=[10, 10], ranges=[(0, 1), (0, 1)], measure_names=["cost", "depth"],
                        objective_name="accuracy")  # the README's query: the objective by its name
    named.add([{"i": i} for i in range(300)], -m.sum(axis=1), m, id=range(300))
    by_name = named.where("cost < 0.3 and accuracy > -1")
    assert by_name and ids(by_name) == ids(named.where("cost < 0.3 and objective > -1"))


def test_compile_where_is_safe_and_clear():
    assert compile_where("a <= 2 and not b > 3 or c == 'x'")({"a": 1, "b": 5, "c": "x"})
    assert not compile_where("1 < a < 3")({"a": 3})
    with pytest.raises(ValueError, match="not allowed"):
        compile_where("__import__('os')")({})
    with pytest.raises(ValueError, match="unknown name 'z'; available: a"):
        compile_where("z > 1")({"a": 1})
    with pytest.raises(ValueError, match="where 'a <'"):
        compile_where("a <")


def test_load_rejects_other_files(tmp_path):
    np.savez(tmp_path / "x.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="not a qd archive"):
        load(tmp_path / "x.npz")
    _grid().save(tmp_path / "g.npz")
    with pytest.raises(ValueError, match="holds a GridArchive"):
        CVTArchive.load(tmp_path / "g.npz")
    archive = _grid()
    archive.add_single({"f": object()}, 1.0, [0, 1])
    with pytest.raises(ValueError, match="cannot save solutions"):
        archive.save(tmp_path / "bad.npz")


@pytest.mark.parametrize("make", [
    lambda: GridArchive(dims=[8], ranges=[(0, 1)], measure_names=["calls"], objective_name="accuracy"),
    lambda: GridArchive(dims=[8, 6], ranges=[(0, 1), (0, 2)], measure_names=["calls", "depth"],
                        objective_name="accuracy"),
    lambda: GridArchive(dims=[8, 6, 7], ranges=[(0, 1)] * 3, measure_names=["calls", "depth", "tokens"],
                        objective_name="accuracy"),
    lambda: GridArchive(dims=[4, 4, 3, 12], ranges=[(0, 1)] * 4, measure_names=["calls", "depth", "t", "u"],
                        objective_name="accuracy"),
    lambda: CVTArchive(cells=60, ranges=[(0, 1), (0, 2)], seed=0, measure_names=["calls", "depth"],
                       objective_name="accuracy"),
])
def test_plots_label_measures_and_objective(make, tmp_path):
    import matplotlib.pyplot as plt

    from qd.archives.plot import plot_archive

    archive = make()
    rng = np.random.default_rng(0)
    m = rng.uniform(0, 1, size=(100, archive.measure_dim)) * (archive.upper_bounds - archive.lower_bounds)
    archive.add([{}] * 100, rng.normal(size=100), m)
    fig = plot_archive(archive, title="demo")
    labels = {ax.get_xlabel() for ax in fig.axes} | {ax.get_ylabel() for ax in fig.axes}
    assert "calls" in labels and "accuracy" in labels
    if archive.measure_dim > 1:
        assert "depth" in labels
    fig.savefig(tmp_path / "map.png")
    plt.close(fig)
    assert (tmp_path / "map.png").stat().st_size > 5000


@pytest.mark.parametrize("make", [_grid, _cvt])
def test_lookups_never_modify_the_callers_measures(make):
    archive = make()
    measures = np.array([[5.0, -3.0], [-4.0, 20.0], [0.5, 5.0]])
    before = measures.copy()
    archive.add([{}, {}, {}], [1.0, 2.0, 3.0], measures)
    archive.index_of(measures)
    archive.retrieve(measures)
    archive.retrieve_single(measures[0])
    assert np.array_equal(measures, before)
    assert np.array_equal(archive.data("measures")[np.argsort(archive.data("index"))],
                          measures[np.argsort(archive.index_of(measures))])  # stored as given, unclipped


def test_archives_import_without_pandas_and_export_pyribs_names():
    import subprocess
    import sys

    code = ("import sys, qd, qd.archives as a; assert 'pandas' not in sys.modules; "
            "assert qd.AddStatus is a.AddStatus and a.AddStatus.NEW == 2; "
            "assert a.ArchiveDataFrame.__name__ == 'ArchiveDataFrame' and 'pandas' in sys.modules")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).returncode == 0


def test_cvt_save_load_keeps_the_nearest_neighbour_options(tmp_path):
    from qd.archives import CVTArchive, load

    archive = CVTArchive(solution_dim=2, centroids=50, ranges=[(0, 1), (0, 1)], seed=0,
                         kdtree_kwargs={"leafsize": 7}, kdtree_query_kwargs={"eps": 0.5})
    archive.save(tmp_path / "a.npz")
    loaded = load(tmp_path / "a.npz")
    assert loaded._kdtree_kwargs == {"leafsize": 7} and loaded._query_kwargs == {"eps": 0.5}


@pytest.mark.parametrize("make", [_grid, _cvt, lambda: _grid(learning_rate=0.5, threshold_min=-3.0)])
@SETTINGS
@given(batches=batches)
def test_add_in_order_is_add_single_in_a_loop_to_the_last_bit(make, batches):
    in_order, single = make(), make()
    n = 0
    for batch in batches:
        objective = [o for o, _ in batch]
        measures = np.array([m for _, m in batch], dtype=float).reshape(-1, 2)
        status = in_order.add_in_order([{"n": n + i} for i in range(len(batch))], objective, measures,
                                       id=range(n, n + len(batch)), feedback=[f"f{n + i}" for i in range(len(batch))])
        expected = [int(single.add_single({"n": n + i}, o, m, id=n + i, feedback=f"f{n + i}")["status"])
                    for i, (o, m) in enumerate(batch)]
        assert status.tolist() == expected
        n += len(batch)
    assert exact(in_order) == exact(single)


operations = st.lists(st.tuples(st.sampled_from(["single", "batch", "in_order", "remove"]), items), min_size=1,
                      max_size=6)


@pytest.mark.parametrize("make", [_grid, _cvt])
@SETTINGS
@given(ops=operations)
def test_changes_taken_after_each_step_restore_the_archive_exactly(make, ops):
    from qd.archives import archive_state, restore

    live = make()
    live.track_changes()
    table: dict[int, dict] = {}  # what a run store keeps: one row per occupied cell
    n = 0
    for op, batch in ops:
        configs = [{"n": n + i} for i in range(len(batch))]
        objective = [o for o, _ in batch]
        measures = np.array([m for _, m in batch], dtype=float).reshape(-1, 2)
        ids, feedback = list(range(n, n + len(batch))), [f"f{n + i}" for i in range(len(batch))]
        if op == "single":
            for c, o, m, i, f in zip(configs, objective, measures, ids, feedback):
                live.add_single(c, o, m, id=i, feedback=f)
        elif op == "batch":
            live.add(configs, objective, measures, id=ids, feedback=feedback)
        elif op == "in_order":
            live.add_in_order(configs, objective, measures, id=ids, feedback=feedback)
        else:  # remove the cells these points fall in (qd.noise revises elites so)
            for cell in live.index_of(measures).tolist() if len(batch) else []:
                live.remove_single(cell)
        n += len(batch)
        elites, emptied = live.take_changes()
        for cell in emptied.tolist():
            table.pop(cell, None)
        for j, cell in enumerate(elites["index"].tolist()):
            table[cell] = {k: v[j] for k, v in elites.items()}
        rows = list(table.values())
        copy = restore(make(), [r["index"] for r in rows], [r["objective"] for r in rows],
                       [r["threshold"] for r in rows], [r["measures"] for r in rows], [r["solution"] for r in rows],
                       {"id": [r["id"] for r in rows], "feedback": [r["feedback"] for r in rows]} if rows else {},
                       archive_state(live), ranks=[r["rank"] for r in rows])
        assert exact(copy) == exact(live)
        if len(live):  # the copy samples the same parents and goes on the same way
            assert _exact_sample(copy) == _exact_sample(live)


def _exact_sample(archive):
    drawn = archive.sample_elites(5, rng=np.random.default_rng(3))
    return drawn["index"].tolist(), drawn["objective"].tolist()
