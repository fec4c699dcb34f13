"""Propose several, evaluate one: the pre-evaluation filter, its predictors, and the scheduler using it."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qd.archives import GridArchive
from qd.domains.k_module import KModuleDomain
from qd.operators import Generation, Mutation, Operator
from qd.prefilter import CellFilter, LearnedPredictor, MeasurePredictor, nearest
from qd.scheduler import GenerationJob, Scheduler, SchedulerOptions
from qd.space import Int, Space

SPACE = Space({"x": Int(0, 9), "y": Int(0, 9)})
NAMES = ["x", "y"]


def grid() -> GridArchive:
    return GridArchive(dims=[10, 10], ranges=[(0, 10), (0, 10)], measure_names=NAMES)


def exact(config: dict) -> dict[str, float]:
    """A static cost model that is always right: the measures are the configuration."""
    return {"x": config["x"] + 0.5, "y": config["y"] + 0.5}


def filled(cells: list[tuple[int, int, float]]) -> GridArchive:
    archive = grid()
    for x, y, objective in cells:
        archive.add_single({"x": x, "y": y}, objective, [x + 0.5, y + 0.5])
    return archive


CELLS = st.lists(st.tuples(st.integers(0, 9), st.integers(0, 9), st.floats(-5, 5)), max_size=60)
POINTS = st.lists(st.fixed_dictionaries({"x": st.integers(0, 9), "y": st.integers(0, 9)}), min_size=1, max_size=8)


@settings(max_examples=200, deadline=None)
@given(cells=CELLS, configs=POINTS, target=st.none() | st.tuples(st.floats(0, 10), st.floats(0, 10)))
def test_the_filter_never_drops_a_candidate_predicted_into_an_empty_cell_for_one_into_a_full_cell(
        cells, configs, target):
    archive = filled(cells)
    chooser = CellFilter(archive, MeasurePredictor(SPACE, NAMES, exact))
    occupied = {(x, y) for x, y, _ in cells}
    empty = [(c["x"], c["y"]) not in occupied for c in configs]
    order = chooser.rank(configs, target)
    assert sorted(order) == list(range(len(configs)))
    ranked_empty = [empty[i] for i in order]
    assert ranked_empty == sorted(ranked_empty, reverse=True)  # every empty one before every full one
    chosen = configs[chooser.choose(configs, target)]
    if any(empty):
        assert (chosen["x"], chosen["y"]) not in occupied
    else:  # all full: the weakest elite's cell
        weakest = min(archive.elite(archive.index_of_single(list(exact(c).values())))["objective"] for c in configs)
        assert archive.elite(archive.index_of_single(list(exact(chosen).values())))["objective"] == weakest


def test_among_empty_cells_the_target_cell_then_the_nearest_comes_first():
    chooser = CellFilter(filled([(0, 0, 1.0)]), MeasurePredictor(SPACE, NAMES, exact))
    configs = [{"x": 9, "y": 9}, {"x": 5, "y": 6}, {"x": 0, "y": 0}, {"x": 5, "y": 5}]
    assert chooser.rank(configs, {"x": 5.2, "y": 5.7}) == [3, 1, 0, 2]
    assert chooser.rank(configs) == [0, 1, 3, 2]  # no target: the operator's order among empty cells


def test_a_candidate_that_cannot_be_predicted_ranks_between_empty_and_full():
    def partial(config):  # knows x only; y is learned, and nothing has been learned yet
        return {"x": config["x"] + 0.5}

    chooser = CellFilter(filled([(1, 1, 0.0)]), MeasurePredictor(SPACE, NAMES, partial))
    assert chooser.predictor.predict({"x": 1, "y": 1}) is None
    assert chooser.rank([{"x": 1, "y": 1}, {"x": 2, "y": 2}]) == [0, 1]  # both unknown: in order


def test_the_learned_predictor_averages_the_nearest_evaluated_configurations():
    learned = LearnedPredictor(SPACE, NAMES, k=1, min_history=3)
    for x, y in [(0, 0), (9, 9), (4, 5)]:
        assert learned.predict({"x": x, "y": y}) is None or len(learned) >= 3
        learned.learn({"x": x, "y": y}, [10 * x, 10 * y])
    assert learned.predict({"x": 5, "y": 5}) == {"x": 40.0, "y": 50.0}
    assert learned.predict({"x": 8, "y": 9}) == {"x": 90.0, "y": 90.0}


def test_the_learned_predictor_places_k_module_configurations_near_their_cells():
    domain = KModuleDomain()
    learned = LearnedPredictor(domain.space, domain.default_measures)
    rng = np.random.default_rng(0)
    for _ in range(400):
        config = domain.space.sample(rng)
        learned.learn(config, list(domain.predict_measures(config).values()))
    errors = []
    for _ in range(100):
        config = domain.space.sample(rng)
        truth, guess = domain.predict_measures(config), learned.predict(config)
        errors.append([abs(guess[n] - truth[n]) for n in domain.default_measures])
    assert np.mean(errors, axis=0)[1] < 1.0  # log2_batch, bins of width 1
    assert np.mean(errors, axis=0)[0] < 2.0  # cost, bins of width 2


class Proposals(Operator):
    """Writes the same fixed list of candidates at every call (so the test knows what was proposed)."""

    name = "fixed"

    def __init__(self, configs):
        self.configs = configs

    def generate(self, parents, rng, target=None):
        return Generation([dict(c) for c in self.configs])


@settings(max_examples=60, deadline=None)
@given(cells=CELLS, configs=POINTS)
def test_the_scheduler_evaluates_the_filters_choice_and_counts_the_rest(cells, configs):
    archive = filled(cells)
    if len(archive) == 0:
        archive.add_single({"x": 0, "y": 0}, 0.0, [0.5, 0.5])
    scheduler = Scheduler(archive, SPACE, {"fixed": (Proposals(configs), 1.0)},
                          SchedulerOptions(init_random=0, filter=True, proposals=1), predict=exact)
    candidate = scheduler.ask()
    occupied = {(x, y) for x, y, _ in cells} or {(0, 0)}
    distinct = {(c["x"], c["y"]) for c in configs}
    if candidate.operator == "fixed":
        if distinct - occupied:
            assert (candidate.config["x"], candidate.config["y"]) not in occupied
        stats = scheduler.stats["fixed"]
        assert stats.filtered == len(distinct) - 1 and stats.duplicates == len(configs) - len(distinct)


def test_every_operator_proposes_the_configured_number_of_children_under_the_filter():
    domain = KModuleDomain()
    archive = GridArchive(dims=domain.default_bins, ranges=domain.default_ranges, measure_names=domain.default_measures)
    mutation = Mutation(domain.space)
    scheduler = Scheduler(archive, domain.space, {"mutation": (mutation, 1.0)},
                          SchedulerOptions(init_random=5, filter=True, proposals=6), predict=domain.predict_measures)
    for _ in range(60):
        candidate = scheduler.ask()
        result = domain.evaluate(candidate.config)
        scheduler.tell(candidate, result.fitness, list(result.measures.values()))
    stats = scheduler.stats["mutation"]
    assert stats.offspring == 6 * 55  # six per draw, never a retry: the space is far from exhausted
    assert stats.filtered == stats.valid - stats.duplicates - stats.evaluated
    assert stats.evaluated == 55


def test_a_generation_job_asks_for_its_proposals_in_one_call():
    class Counting(Operator):
        uses_llm = True
        calls: list = []

        def propose(self, parents, rng, n, target=None):
            self.calls.append(n)
            return Generation([SPACE.sample(rng) for _ in range(n)], tokens=3 * n)

    job = GenerationJob("c", Counting(), [], np.random.default_rng(0), None, proposals=5)
    assert len(job.run().configs) == 5 and Counting.calls == [5]


def test_proposals_must_be_positive():
    with pytest.raises(ValueError, match="proposals"):
        Scheduler(grid(), SPACE, {"m": (Mutation(SPACE), 1.0)}, SchedulerOptions(filter=True, proposals=0))


def test_a_run_config_with_the_filter_covers_more_of_the_k_module_map(tmp_path):
    from qd.cli import run_status
    from qd.config import resolve_config
    from qd.runner import run_search

    def run(filtered: bool) -> dict:
        config = resolve_config({
            "run": {"evaluations": 100, "init_random": 20, "progress": False, "plot": False},
            "domain": {"name": "k-module"}, "archive": {"noise": "none"},
            "operators": {"mutation": 1.0, "filter": filtered, "proposals": 4}, "evaluator": {"backend": "serial"}})
        run_search(config, tmp_path / str(filtered), progress=False).store.close()
        return run_status(tmp_path / str(filtered))

    plain, filtered = run(False), run(True)
    mutation = filtered["operators"]["mutation"]
    assert plain["operators"]["mutation"]["filtered"] == 0
    assert mutation["offspring"] >= 4 * 80 and mutation["filtered"] > 0.5 * mutation["offspring"]
    assert filtered["coverage"] > plain["coverage"]


def test_the_learned_predictor_keeps_the_most_recent_results_only():
    space = Space({"a": Int(0, 100)})
    predictor = LearnedPredictor(space, ["m"], k=1, max_history=8)
    for a in range(20):  # 20 results, the first 12 forgotten
        predictor.learn({"a": a}, [float(a)])
    assert len(predictor) == 8 and predictor._features.shape[1] == 8
    assert predictor.predict({"a": 0}) == {"m": 12.0}  # the oldest kept one is nearest
    assert predictor.predict({"a": 19}) == {"m": 19.0}


@pytest.mark.parametrize("makes_calls", [True, False])
def test_filter_auto_is_on_for_a_domain_that_makes_calls_and_off_for_computation_only(makes_calls):
    from qd.analysis import resolve_measures
    from qd.domains import get_domain
    from qd.evaluators import SerialEvaluator
    from qd.search import Search

    domain = get_domain("arm", joints=4)
    domain.makes_calls = makes_calls  # the arm says False: the same domain, as if it called a model
    archive = GridArchive(dims=[8, 8], ranges=domain.default_ranges, measure_names=["x", "y"])
    with Search(domain, archive, SerialEvaluator(domain), operators={"mutation": (Mutation(domain.space), 1.0)},
                measures=resolve_measures(["x", "y"], domain), budget=120, init_random=10, seed=3,
                noise="none") as search:
        assert search.options.filter == "auto"
        search.run()
    assert (search.scheduler.prefilter is not None) is makes_calls
    assert search.scheduler.predictor_learns is makes_calls  # no memory spent when it is off
    assert (search.stats["mutation"].filtered > 0) is makes_calls


@given(st.lists(st.integers(0, 5), min_size=1, max_size=60), st.integers(1, 8))
def test_nearest_picks_what_a_stable_sort_picks_ties_included(values, k):
    distances = np.array(values, dtype=float)
    assert nearest(distances.copy(), k).tolist() == np.argsort(distances, kind="stable")[:k].tolist()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4), st.floats(-5, 5)), min_size=5, max_size=80),
       st.tuples(st.integers(0, 4), st.integers(0, 4)), st.integers(1, 4))
def test_the_learned_predictor_averages_the_k_nearest_by_brute_force(history, query, k):
    space = Space({"x": Int(0, 4), "y": Int(0, 4)})
    learned = LearnedPredictor(space, ["m"], k=k, max_history=50)
    for x, y, m in history:
        learned.learn({"x": x, "y": y}, [m])
    slots = [None] * min(len(history), 50)
    for i, item in enumerate(history):  # once full, each result overwrites the oldest, slot by slot
        slots[i % 50] = item
    distances = np.array([((x - query[0]) / 4) ** 2 + ((y - query[1]) / 4) ** 2 for x, y, _ in slots])
    chosen = np.argsort(distances, kind="stable")[:k]
    expected = float(np.mean([slots[i][2] for i in chosen]))
    assert learned.predict({"x": query[0], "y": query[1]})["m"] == pytest.approx(expected, rel=1e-12, abs=1e-12)
