"""scripts/bench_search.py's machinery: paired arms, the Optuna/pyribs adapters, the statistics."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import qd
from qd.bench.arms import (
    ARMS,
    FlatSpace,
    arms_for,
    bench_domain,
    bench_run,
    check_paired,
    front_hypervolume,
    initial_configs,
    instance_digest,
    parse_arm,
    run_arm,
)
from qd.bench.report import arm_table, comparison_table, is_qd, plot_domain, seed_table, targets
from qd.bench.stats import a12, compare, holm, hypervolume, pareto_front
from qd.domains import get_domain

pytest.importorskip("optuna")
pytest.importorskip("ribs")


def small(name: str, **kw):
    defaults = {"retrieval-sim": dict(budget=40, init=10, validation_samples=2),
                "arm": dict(budget=150, init=20, validation_samples=2)}[name]
    return bench_domain(name, **{**defaults, **kw})


@pytest.mark.parametrize("name", ["retrieval-sim", "arm"])
def test_every_arm_sees_the_same_budget_initial_configurations_and_instances(name):
    spec = small(name)
    arms = [a for a in arms_for(spec.build()) if a != "qd-llm"]  # qd-llm calls the embedded model: benchmark only
    assert set(arms) == (set(ARMS) - {"qd-llm"} if name == "arm"
                         else {"qd-default", "qd-classic", "random", "optuna-tpe", "optuna-nsga2"})
    rows = [bench_run(spec, arm, seed=3) for arm in arms]
    check_paired(rows)
    assert {r["evaluations"] for r in rows} == {spec.budget}
    assert len({r["init_hash"] for r in rows}) == 1 and len({r["instances"] for r in rows}) == 1
    for r in rows:
        assert 0 < r["corrected_coverage"] <= 1 and r["elites"] >= 1
        assert (r["hypervolume"] is None) == (name == "arm")
    json.dumps(rows)  # the bench appends rows to a JSON-lines file


def test_paired_check_fails_when_an_arm_ran_another_seed_or_other_instances():
    spec = small("retrieval-sim")
    good = bench_run(spec, "random", seed=0)
    other_seed = {**bench_run(spec, "qd-classic", seed=1), "seed": 0}  # labelled seed 0, drawn from seed 1
    with pytest.raises(AssertionError, match="init_hash"):
        check_paired([good, other_seed])
    other_domain = small("retrieval-sim", options={**spec.options, "seed": 1})  # other questions, same space
    with pytest.raises(AssertionError, match="instances"):
        check_paired([good, bench_run(other_domain, "random", seed=0)])
    short = {**good, "arm": "x", "evaluations": spec.budget - 1}
    with pytest.raises(AssertionError, match="evaluations"):
        check_paired([good, short])


def test_qd_arms_evaluate_exactly_the_shared_initial_configurations():
    spec = small("retrieval-sim")
    domain = spec.build()
    init, _ = initial_configs(domain.space, 5, spec.init)
    out = run_arm(spec, "qd-classic", 5, domain)
    first = {r["solution"]["chunk_size"] for r in out.archive}  # the archive is a real search's
    assert first and out.evaluations == spec.budget
    random_out = run_arm(spec, "random", 5, domain)
    assert out.init_hash == random_out.init_hash
    assert len({domain.space.hash(c) for c in init}) == spec.init


def test_initial_configurations_do_not_replay_the_schedulers_stream():
    # qd's scheduler draws its random configurations from default_rng(seed): drawn from the same
    # stream, the shared initial ones came back as duplicates until the scheduler gave up.
    domain = get_domain("arm", joints=10)
    init, _ = initial_configs(domain.space, 16, 20)
    scheduler_stream = np.random.default_rng(16)
    replayed = {domain.space.hash(domain.space.sample(scheduler_stream)) for _ in range(20)}
    assert replayed.isdisjoint(domain.space.hash(c) for c in init)
    spec = small("arm", budget=200, init=100)
    assert run_arm(spec, "qd-classic", 16).evaluations == 200


def test_instance_digest_tells_domains_apart_and_is_stable():
    a, b = get_domain("retrieval-sim", n_pairs=16, n_instances=3), get_domain("retrieval-sim", n_pairs=16,
                                                                               n_instances=3, seed=1)
    assert instance_digest(a) == instance_digest(get_domain("retrieval-sim", n_pairs=16, n_instances=3))
    assert instance_digest(a) != instance_digest(b)
    assert instance_digest(get_domain("arm", joints=10, noise=1.0)) != instance_digest(get_domain("arm", joints=10))


class TinyDomain(qd.Domain):
    """Eight configurations: a sampler on it repeats itself long before a budget of eight is spent."""

    name = "tiny"
    space = qd.Space({"a": qd.Int(0, 3), "b": qd.Categorical(["x", "y"]), "note": qd.Text(10, default="hi")})
    default_measures = ("a",)
    default_ranges = ((-0.5, 3.5),)
    default_bins = (4,)

    def descriptors(self):
        return {"a": lambda c, r: float(c["a"])}

    def evaluate(self, config):
        return qd.EvalResult(fitness=config["a"] + (config["b"] == "y"))


@pytest.mark.parametrize("arm", ["optuna-tpe", "optuna-nsga2", "random"])
def test_optuna_repeats_are_free_and_a_stuck_sampler_gets_random_configurations(arm, monkeypatch):
    import qd.bench.arms as arms

    monkeypatch.setitem(arms.BENCH_DOMAINS, "tiny", lambda: arms.BenchDomain(
        "tests.test_bench_search:TinyDomain", budget=8, init=2, objective_range=(0.0, 4.0), validation_samples=1))
    spec = bench_domain("tiny")
    domain = TinyDomain()
    out = run_arm(spec, arm, 0, domain)
    assert out.evaluations == 8
    assert len(out.archive) == 4  # every configuration evaluated once: each of the 4 cells holds its best (b = y)
    assert sorted(float(e["objective"]) for e in out.archive) == [1.0, 2.0, 3.0, 4.0]


def test_flat_space_round_trips_and_keeps_text():
    domain = get_domain("retrieval-sim", n_pairs=16)
    rng = np.random.default_rng(1)
    template = {**domain.space.sample(rng), "instruction": "keep me"}
    flat = FlatSpace(domain.space, template)
    assert "instruction" not in flat.distributions() and not flat.numeric
    for _ in range(20):
        config = {**domain.space.sample(rng), "instruction": "keep me"}
        assert flat.config(flat.params(config)) == config
    arm = get_domain("arm", joints=4)
    flat = FlatSpace(arm.space, arm.space.sample(rng))
    assert flat.numeric and list(flat.distributions()) == [f"angles[{i}]" for i in range(4)]
    x = np.array([0.1, -0.2, 9.0, 0.0])
    assert flat.from_vector(x)["angles"] == [0.1, -0.2, math.pi, 0.0]  # clipped to the bounds
    with pytest.raises(ValueError, match="variable-length Seq"):
        FlatSpace(qd.Space({"xs": qd.Seq(qd.Float(0, 1), 1, 3)}), {"xs": [0.5]})


def test_arm_names_take_a_noise_policy_and_the_filter_for_qd_arms_only():
    assert parse_arm("qd-classic:noise=none") == ("qd-classic", {"noise": "none"})
    assert parse_arm("qd-classic:noise=none,filter=true") == ("qd-classic", {"noise": "none", "filter": True})
    assert parse_arm("optuna-tpe") == ("optuna-tpe", {})
    for bad in ("random:noise=none", "qd-classic:noise=loud", "qd-classic:seed=3", "qd-classic:filter=yes",
                "random:filter=true", "sgd"):
        with pytest.raises(ValueError):
            parse_arm(bad)
    spec = small("retrieval-sim", budget=30)
    plain, naive = bench_run(spec, "qd-classic", 2), bench_run(spec, "qd-classic:noise=none", 2)
    assert naive["resamples"] == 0 < plain["resamples"] and naive["arm"] == "qd-classic:noise=none"
    assert is_qd("qd-classic:noise=none") and not is_qd("optuna-tpe")
    assert "qd-iso:noise=none" in arms_for(get_domain("arm", joints=3), ["qd-iso:noise=none"])


def test_arms_for_numeric_and_structured_spaces():
    assert arms_for(get_domain("arm", joints=3)) == list(ARMS)
    assert "pyribs-iso" not in arms_for(get_domain("retrieval-sim")) and "optuna-tpe" in arms_for(
        get_domain("retrieval-sim"))


def test_front_hypervolume_scales_objective_and_costs():
    spec = small("retrieval-sim")
    spec.build()
    archive = spec.empty_archive()
    low, high = spec.ranges[0], spec.ranges[1]
    archive.add_single({"c": 1}, 1.0, [low[0] + 1e-9, high[0] + 1e-9])  # best objective, cheapest: volume 1
    assert front_hypervolume(spec, archive) == pytest.approx(1.0, abs=1e-6)
    empty = spec.empty_archive()
    empty.add_single({"c": 2}, 0.5, [(low[0] + low[1]) / 2, (high[0] + high[1]) / 2])
    assert front_hypervolume(spec, empty) == pytest.approx(0.5 * 0.5 * 0.5, rel=0.05)
    arm = small("arm")
    arm.build()
    assert front_hypervolume(arm, arm.empty_archive()) is None


# -- statistics ------------------------------------------------------------------------------------------

floats = st.lists(st.floats(-5, 5, allow_nan=False), min_size=1, max_size=12)


@given(floats, floats)
def test_a12_is_a_probability_and_antisymmetric(x, y):
    assert 0.0 <= a12(x, y) <= 1.0
    assert a12(x, y) + a12(y, x) == pytest.approx(1.0)


def test_a12_known_values():
    assert a12([3, 4], [1, 2]) == 1.0 and a12([1, 2], [3, 4]) == 0.0 and a12([1, 2], [1, 2]) == 0.5


@given(st.lists(st.floats(0, 1, allow_nan=False), min_size=1, max_size=10))
def test_holm_never_below_raw_and_keeps_order(ps):
    adjusted = holm(ps)
    for p, q in zip(ps, adjusted):
        assert p <= q + 1e-12 and q <= 1.0
    order = np.argsort(ps, kind="stable")
    assert all(adjusted[order[i]] <= adjusted[order[i + 1]] + 1e-12 for i in range(len(ps) - 1))


def test_holm_matches_the_textbook_example():
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert math.isnan(holm([0.01, math.nan])[1]) and holm([0.01, math.nan])[0] == pytest.approx(0.01)


def test_compare_matches_scipy_and_brackets_the_median_difference():
    from scipy import stats

    rng = np.random.default_rng(0)
    b = rng.normal(size=20)
    a = b + 0.8 + rng.normal(scale=0.5, size=20)
    c = compare(a, b)
    assert c.p == pytest.approx(stats.wilcoxon(a, b).pvalue) and c.p < 0.01
    assert c.ci_low <= c.median_diff <= c.ci_high and c.ci_low > 0
    assert c.wins + c.losses == 20 and c.a12 > 0.64
    same = compare(b, b)
    assert same.p == 1.0 and same.median_diff == 0.0 and same.a12 == 0.5
    with pytest.raises(ValueError, match="paired"):
        compare(a, b[:5])


def test_a_rounding_difference_is_a_tie_not_a_win():
    cells = [0.1, 0.7, 0.2, 0.9, 0.35, 0.6]  # the same cells summed in two orders differ in the last bit
    forward, backward = sum(cells), sum([0.1, 0.7, 0.35, 0.2, 0.6, 0.9])
    assert forward != backward
    c = compare([forward, 3.0, 2.0], [backward, 2.5, 2.5])
    assert (c.wins, c.losses) == (1, 1) and c.median_diff == 0.0

points = st.lists(st.tuples(st.floats(0.01, 1), st.floats(0.01, 1), st.floats(0.01, 1)), min_size=1, max_size=15)


@settings(max_examples=60, deadline=None)
@given(points, st.integers(2, 3))
def test_hypervolume_matches_optuna(pts, d):
    from optuna._hypervolume import compute_hypervolume  # Optuna's own (minimisation) implementation

    arr = np.array(pts)[:, :d]
    ours = hypervolume(arr, np.zeros(d))
    theirs = compute_hypervolume(-arr, np.zeros(d))
    assert ours == pytest.approx(theirs, rel=1e-9, abs=1e-12)


def test_pareto_front_drops_dominated_points():
    front = pareto_front(np.array([[1, 1], [2, 0], [0.5, 0.5], [1, 1], [0, 2]]))
    assert sorted(map(tuple, front)) == [(0, 2), (1, 1), (2, 0)]
    assert hypervolume([[1, 1], [0.5, 0.5]], [0, 0]) == 1.0 and hypervolume([[-1, 1]], [0, 0]) == 0.0


def test_report_tables_targets_and_plot(tmp_path):
    rows = []
    for seed in range(4):
        for arm, shift in (("qd-classic", 2.0), ("random", 1.0), ("optuna-tpe", 1.9), ("optuna-nsga2", 1.2)):
            rows.append({"domain": "d", "arm": arm, "seed": seed, "budget": 10, "evaluations": 10, "init_hash": "h",
                         "instances": "i", "corrected_qd": shift + 0.1 * seed, "corrected_coverage": 0.1 * shift,
                         "best_validated": 0.5 + 0.01 * shift, "hypervolume": 0.2 * shift, "qd_score": shift,
                         "total_s": 1.0})
    t = targets(rows, "d", (0.0, 1.0), "qd-classic")
    assert t["qd"]["best_other"] == "optuna-tpe" and t["qd"]["ratio"] == pytest.approx(2.15 / 2.05)
    assert not t["qd"]["met"] and t["best"]["met"] and t["hypervolume"]["met"]
    assert "| qd-classic | 4 |" in arm_table(rows, "d")
    table = comparison_table(rows, "d")
    assert table.count("| qd-classic | random |") == 4  # one line per metric
    assert plot_domain(rows, "d", tmp_path / "p.png").stat().st_size > 0
    seeds = seed_table([r for r in rows if not (r["arm"] == "random" and r["seed"] == 2)], "d").splitlines()
    assert seeds[0] == "| seed | qd-classic | random | optuna-tpe | optuna-nsga2 |" and len(seeds) == 2 + 4
    assert seeds[2 + 3] == "| 3 | 2.3 | 1.3 | 2.2 | 1.5 |" and seeds[2 + 2].split(" | ")[2] == "-"  # a seed not run
