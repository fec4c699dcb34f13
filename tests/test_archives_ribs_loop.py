"""pyribs's own emitters, schedulers and plots run on qd's archives, with pyribs's results.

Each loop runs twice from the same seeds, once on a qd archive and once on the pyribs
archive it replaces, and must end with identical archives: the emitters draw parents with
the archives' ``sample_elites`` and rank offspring by the statuses and values ``add``
returns, so any difference in those would change the search.
"""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from qd.archives import CVTArchive, GridArchive  # noqa: E402

ribs_archives = pytest.importorskip("ribs.archives")
emitters = pytest.importorskip("ribs.emitters")
from ribs.schedulers import Scheduler  # noqa: E402
from ribs.visualize import cvt_archive_heatmap, grid_archive_heatmap, parallel_axes_plot  # noqa: E402

SOLUTION_DIM = 6
RANGES = [(-1.5, 1.5), (-1.5, 1.5)]
CENTROIDS = np.random.default_rng(0).uniform(-1.5, 1.5, size=(60, 2))


def _evaluate(solutions):
    """Sphere objective; measures are the first two coordinates (some fall outside the ranges)."""
    objective = -np.sum(np.square(solutions), axis=1)
    measures = solutions[:, :2] * 1.2
    jacobian = np.zeros((len(solutions), 3, SOLUTION_DIM))
    jacobian[:, 0] = -2 * solutions
    jacobian[:, 1, 0] = jacobian[:, 2, 1] = 1.2
    return objective, measures, jacobian


def _archives(kind, **kw):
    kw = dict(solution_dim=SOLUTION_DIM, ranges=RANGES, seed=11, **kw)
    if kind == "grid":
        return GridArchive(dims=[12, 12], **kw), ribs_archives.GridArchive(dims=[12, 12], **kw)
    return CVTArchive(centroids=CENTROIDS, **kw), ribs_archives.CVTArchive(centroids=CENTROIDS, **kw)


EMITTERS = {
    "gaussian": lambda a: [emitters.GaussianEmitter(a, sigma=0.2, x0=np.zeros(SOLUTION_DIM), batch_size=8, seed=1)],
    "iso_line": lambda a: [emitters.IsoLineEmitter(a, iso_sigma=0.1, line_sigma=0.2, x0=np.zeros(SOLUTION_DIM),
                                                   batch_size=8, seed=2)],
    "evolution_strategy": lambda a: [emitters.EvolutionStrategyEmitter(a, x0=np.zeros(SOLUTION_DIM), sigma0=0.3,
                                                                       ranker="2imp", batch_size=8, seed=s)
                                     for s in (3, 4)],
    "genetic_algorithm": lambda a: [emitters.GeneticAlgorithmEmitter(
        a, operator="isoline", operator_kwargs=dict(iso_sigma=0.1, line_sigma=0.2),
        initial_solutions=np.random.default_rng(5).normal(0, 0.3, size=(8, SOLUTION_DIM)), batch_size=8, seed=5)],
}


def _run(archive, make_emitters, iterations=25, add_mode="batch", result_archive=None, dqd=False):
    scheduler = Scheduler(archive, make_emitters(archive), result_archive=result_archive, add_mode=add_mode)
    for _ in range(iterations):
        if dqd:
            solutions = scheduler.ask_dqd()
            objective, measures, jacobian = _evaluate(solutions)
            scheduler.tell_dqd(objective, measures, jacobian)
        solutions = scheduler.ask()
        objective, measures, _ = _evaluate(solutions)
        scheduler.tell(objective, measures)
    return scheduler


def _assert_same(ours, theirs):
    mine, ref = ours.data(), theirs.data()
    assert list(mine) == list(ref) and len(ref["index"]) > 5
    assert all(np.array_equal(mine[k], ref[k]) for k in ref)
    assert ours.stats.qd_score == theirs.stats.qd_score and ours.stats.obj_max == theirs.stats.obj_max


@pytest.mark.parametrize("kind", ["grid", "cvt"])
@pytest.mark.parametrize("name", sorted(EMITTERS))
def test_pyribs_emitters_and_scheduler_run_on_qd_archives_with_pyribs_results(kind, name):
    ours, theirs = _archives(kind)
    _run(ours, EMITTERS[name])
    _run(theirs, EMITTERS[name])
    _assert_same(ours, theirs)


@pytest.mark.parametrize("kind", ["grid", "cvt"])
def test_cma_mae_with_a_result_archive_and_single_add_mode(kind):
    def make(a):
        return [emitters.EvolutionStrategyEmitter(a, x0=np.zeros(SOLUTION_DIM), sigma0=0.3, ranker="imp",
                                                  selection_rule="mu", restart_rule="basic", batch_size=8, seed=6)]

    runs = []
    for side in (0, 1):
        archive = _archives(kind, learning_rate=0.05, threshold_min=-10.0)[side]
        result = _archives(kind)[side]
        _run(archive, make, iterations=20, result_archive=result)
        runs.append((archive, result))
    _assert_same(runs[0][0], runs[1][0])
    _assert_same(runs[0][1], runs[1][1])
    ours, theirs = _archives(kind)
    _run(ours, EMITTERS["gaussian"], iterations=10, add_mode="single")
    _run(theirs, EMITTERS["gaussian"], iterations=10, add_mode="single")
    _assert_same(ours, theirs)


@pytest.mark.parametrize("kind", ["grid", "cvt"])
def test_gradient_arborescence_emitter_runs_dqd_on_qd_archives(kind):
    def make(a):
        return [emitters.GradientArborescenceEmitter(a, x0=np.full(SOLUTION_DIM, 0.5), sigma0=0.1, lr=0.05,
                                                     batch_size=8, seed=7)]

    pair = _archives(kind, learning_rate=0.1, threshold_min=-20.0)
    for archive in pair:
        _run(archive, make, iterations=15, dqd=True)
    _assert_same(*pair)


def _filled(kind, measure_dim=2):
    if measure_dim == 1:
        pair = (GridArchive(dims=[20], ranges=[(-1, 1)], solution_dim=2, seed=0),
                ribs_archives.GridArchive(dims=[20], ranges=[(-1, 1)], solution_dim=2, seed=0))
    else:
        pair = _archives(kind)
    rng = np.random.default_rng(3)
    solutions = rng.normal(0, 0.6, size=(400, pair[0].solution_dim))
    for archive in pair:
        objective, measures, _ = _evaluate(np.pad(solutions, ((0, 0), (0, max(0, SOLUTION_DIM - solutions.shape[1])))))
        archive.add(solutions, objective, measures[:, :measure_dim])
    return pair


@pytest.mark.parametrize("kind, measure_dim", [("grid", 1), ("grid", 2), ("cvt", 2)])
def test_ribs_visualize_draws_qd_archives_as_it_draws_its_own(kind, measure_dim):
    ours, theirs = _filled(kind, measure_dim)
    drawn = []
    for archive in (ours, theirs):
        fig, (ax, ax2) = plt.subplots(1, 2)
        if kind == "grid":
            grid_archive_heatmap(archive, ax=ax)
        else:
            cvt_archive_heatmap(archive, ax=ax)
        if measure_dim > 1:  # one measure has no parallel axes
            parallel_axes_plot(archive, ax=ax2, sort_archive=True)
        heat = ax.collections[0]
        values = heat.get_array() if kind == "grid" else heat.get_facecolors()
        drawn.append((np.asarray(values), [line.get_xydata() for line in ax2.lines]))
        plt.close(fig)
    (values, lines), (values_ref, lines_ref) = drawn
    assert np.array_equal(values, values_ref, equal_nan=True)
    assert len(lines) == len(lines_ref) == (len(ours) if measure_dim > 1 else 0)
    assert all(np.array_equal(a, b) for a, b in zip(lines, lines_ref))
