"""Held-out validation and the corrected QD score (qd.analysis.validation)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from qd.analysis.descriptors import resolve_measures
from qd.analysis.validation import validate, validated_scores
from qd.archives import GridArchive
from qd.domain import Domain
from qd.domains import get_domain
from qd.evaluators import SerialEvaluator
from qd.result import EvalResult
from qd.space import Float, Space
from qd.store import RunStore


def _arm_archive(domain, n: int, seed: int = 0) -> GridArchive:
    """A plain MAP-Elites archive of ``n`` random arms, each scored once (noise included)."""
    archive = GridArchive(dims=[8, 8], ranges=domain.default_ranges, measure_names=["x", "y"],
                          qd_score_offset=domain.qd_score_offset)
    rng = np.random.default_rng(seed)
    for i in range(n):
        config = domain.space.sample(rng)
        r = domain.evaluate(config)
        archive.add_single(config, r.fitness, [r.measures["x"], r.measures["y"]], id=i)
    return archive


def _empty_like(archive: GridArchive):
    return lambda: GridArchive(dims=list(archive.dims), ranges=archive.ranges, measure_names=archive.measure_names,
                               qd_score_offset=archive.qd_score_offset)


def test_validated_scores_estimate_the_true_objective_and_expose_the_search_optimism(tmp_path):
    domain = get_domain("arm", joints=6, noise=1.0)
    archive = _arm_archive(domain, 400)
    with RunStore(tmp_path / "run.sqlite") as store:
        report = validate(store, archive, domain, SerialEvaluator(domain),
                          measures=resolve_measures(["x", "y"], domain), samples=12,
                          empty_archive=_empty_like(archive))
        assert report.evaluations == 12 * len(archive) and report.failures == 0
        for e in report.elites:
            config = next(el["solution"] for el in archive if int(el["id"]) == e.id)
            assert e.n == 12
            assert abs(e.mean - domain.true_objective(config)) < 5 * 1.0 / math.sqrt(12)
        # Single noisy evaluations that won their cells are lucky: the search scores are optimistic.
        assert np.mean([e.gap for e in report.elites]) > 0.3
        assert report.corrected_qd_score < report.qd_score
        assert report.corrected_coverage == pytest.approx(report.coverage)  # the arm's measures are exact
        assert store.get_meta("validation")["corrected_qd_score"] == pytest.approx(report.corrected_qd_score)


def test_a_second_validation_reuses_the_stored_draws_and_extends_them(tmp_path):
    domain = get_domain("arm", joints=4, noise=0.3)
    archive = _arm_archive(domain, 60)
    measures = resolve_measures(["x", "y"], domain)
    with RunStore(tmp_path / "run.sqlite") as store:
        first = validate(store, archive, domain, SerialEvaluator(domain), measures=measures, samples=3)
        again = validate(store, archive, domain, SerialEvaluator(domain), measures=measures, samples=3)
        assert again.evaluations == 0
        assert [e.mean for e in again.elites] == [e.mean for e in first.elites]
        more = validate(store, archive, domain, SerialEvaluator(domain), measures=measures, samples=5)
        assert more.evaluations == 2 * len(archive)
        assert {n for n, *_ in validated_scores(store).values()} == {5}


def test_on_a_deterministic_domain_the_corrected_qd_score_equals_the_search_score(tmp_path):
    domain = get_domain("arm", joints=5)
    archive = _arm_archive(domain, 300)
    with RunStore(tmp_path / "run.sqlite") as store:
        report = validate(store, archive, domain, SerialEvaluator(domain),
                          measures=resolve_measures(["x", "y"], domain), samples=2,
                          empty_archive=_empty_like(archive))
    assert report.corrected_qd_score == pytest.approx(report.qd_score)
    assert report.corrected_coverage == report.coverage
    assert all(e.gap == pytest.approx(0.0) for e in report.elites)


def test_validating_only_the_top_elites_reports_no_corrected_score(tmp_path):
    domain = get_domain("arm", joints=4, noise=0.3)
    archive = _arm_archive(domain, 60)
    with RunStore(tmp_path / "run.sqlite") as store:
        report = validate(store, archive, domain, SerialEvaluator(domain), elites=archive.top(3),
                          measures=resolve_measures(["x", "y"], domain), samples=2,
                          empty_archive=_empty_like(archive))
    assert len(report.elites) == 3 and report.corrected_qd_score is None


class OneSplit(Domain):
    name = "one-split"
    space = Space({"x": Float(0.0, 1.0)})

    def evaluate(self, config: dict) -> EvalResult:
        return EvalResult(fitness=config["x"], measures={"m": config["x"]})


def test_a_domain_without_a_validation_split_is_refused_with_the_fix(tmp_path):
    domain = OneSplit()
    archive = GridArchive(dims=[4], ranges=[[0, 1]], measure_names=["m"])
    with RunStore(tmp_path / "run.sqlite") as store, pytest.raises(ValueError, match="no 'validation' split"):
        validate(store, archive, domain, SerialEvaluator(domain), measures=[], samples=2)


def test_retrieval_validation_instances_never_appear_in_search_draws():
    domain = get_domain("retrieval-sim", n_pairs=8, n_instances=3)
    search = {(i.records, i.key) for d in range(200) for i in domain.instances_for(d)}
    held_out = {(i.records, i.key) for d in range(50) for i in domain.instances_for(d, "validation")}
    assert not search & held_out
    assert domain.instances_for(0) == domain.instances


class NaNOnValidation(Domain):
    """Scores 1.0 on the search split and NaN on the validation split (a broken held-out metric)."""

    name = "nan-on-validation"
    splits = ("search", "validation")

    def __init__(self):
        self.space = Space({"x": Float(0.0, 1.0)})

    def evaluate(self, config, *, draw=0, split="search"):
        return EvalResult(fitness=math.nan if split == "validation" else 1.0, measures={"x": config["x"]})


def test_a_validation_draw_with_a_nan_objective_is_an_invalid_failure_not_an_ok_score(tmp_path):
    domain = NaNOnValidation()
    archive = GridArchive(dims=[4], ranges=[(0.0, 1.0)], measure_names=["x"])
    archive.add_single({"x": 0.3}, 1.0, [0.3], id=0)
    with RunStore(tmp_path / "run.sqlite") as store:
        report = validate(store, archive, domain, SerialEvaluator(domain), measures=[lambda c, r: c["x"]],
                          samples=2)
        statuses = [row[0] for row in store._db.execute("SELECT status FROM validations")]
    assert report.failures == 2 and statuses == ["invalid", "invalid"]


def test_status_marks_the_corrected_score_stale_once_a_resume_changed_the_archive(tmp_path, capsys):
    """Issue 22: qd status showed an earlier validation's corrected QD score after a resume changed the archive."""
    import json

    from qd.cli import main

    config = tmp_path / "arm.toml"
    config.write_text("""
[run]
name = "stale"
evaluations = 40
init_random = 20
plot = false
progress = false
[domain]
name = "arm"
options = {joints = 4, noise = 0.3}
[archive]
measures = ["x", "y"]
bins = [5, 5]
noise = "none"
[operators]
iso_line_dd = 1.0
[evaluator]
backend = "serial"
""")
    run_dir = tmp_path / "run"

    def status() -> tuple[dict, str]:
        assert main(["status", str(run_dir), "--json"]) == 0
        as_json = json.loads(capsys.readouterr().out)["validation"]
        assert main(["status", str(run_dir)]) == 0
        line = next(t for t in capsys.readouterr().out.splitlines() if t.startswith("validation"))
        return as_json, line

    assert main(["run", str(config), "--out", str(run_dir), "--no-progress"]) == 0
    assert main(["validate", str(run_dir), "--samples", "2"]) == 0
    capsys.readouterr()
    validation, line = status()
    assert validation["stale"] is False and validation["evaluations"] == 40 and "stale" not in line
    assert main(["run", "--resume", str(run_dir), "--evals", "120", "--no-progress"]) == 0  # the archive changes
    capsys.readouterr()
    validation, line = status()
    assert validation["stale"] is True and validation["corrected_qd_score"] is not None
    assert "STALE: the archive changed since this validation (at 40 evaluations, now 120)" in line
    assert main(["validate", str(run_dir), "--samples", "2"]) == 0
    capsys.readouterr()
    validation, line = status()
    assert validation["stale"] is False and validation["evaluations"] == 120


# -- issue 22: qd validate on a FunctionDomain re-scored the identical held-out set on every draw ---------------------
def _function_domain(**options):
    import qd

    calls: list[tuple[float, int]] = []

    def score(config, example):
        calls.append((config["x"], example))
        return float(abs(config["x"] - example / 10) < 0.3)

    domain = qd.FunctionDomain(qd.Space({"x": qd.Float(0.0, 1.0)}), examples=list(range(10)), score=score,
                               validation=list(range(10, 18)), measures={"llm_calls": (0.0, 1.0)}, **options)
    archive = GridArchive(dims=[4], ranges=[(0.0, 1.0)], measure_names=["llm_calls"])  # cells by x, for the test
    for i, x in enumerate((0.1, 0.4, 0.9)):
        archive.add_single({"x": x}, 0.5, [x], id=i)
    return domain, archive, calls


def test_function_domain_validation_draws_score_different_held_out_subsets_when_sample_is_set(tmp_path):
    domain, archive, calls = _function_domain(sample=3)
    with RunStore(tmp_path / "run.sqlite") as store:
        report = validate(store, archive, domain, SerialEvaluator(domain),
                          measures=resolve_measures(["llm_calls"], domain), samples=10)
    assert report.samples == 10 and report.evaluations == 30
    assert len(calls) == 30 * 3 and {e for _, e in calls} <= set(range(10, 18))  # held-out examples only
    subsets = {}
    for x, example in calls:
        subsets.setdefault(x, []).append(example)
    for examples in subsets.values():  # one elite's 10 draws: 3 examples each, not the same 3 every time
        draws = [frozenset(examples[i:i + 3]) for i in range(0, 30, 3)]
        assert all(len(d) == 3 for d in draws) and len(set(draws)) > 1


def test_a_deterministic_function_domain_with_a_fixed_held_out_set_is_validated_once(tmp_path):
    domain, archive, calls = _function_domain(deterministic=True)
    with RunStore(tmp_path / "run.sqlite") as store:
        report = validate(store, archive, domain, SerialEvaluator(domain),
                          measures=resolve_measures(["llm_calls"], domain), samples=10)
        assert store.get_meta("validation")["samples"] == 1
    assert report.samples == 1 and report.evaluations == 3 and len(calls) == 3 * 8  # one pass over the held-out set
    assert all(e.n == 1 for e in report.elites)


def test_a_function_domain_that_may_be_noisy_still_repeats_its_fixed_held_out_set(tmp_path):
    """Without ``deterministic=True`` the draws re-score the same examples: they measure the score's own noise."""
    domain, archive, calls = _function_domain()
    with RunStore(tmp_path / "run.sqlite") as store:
        report = validate(store, archive, domain, SerialEvaluator(domain),
                          measures=resolve_measures(["llm_calls"], domain), samples=4)
    assert report.samples == 4 and len(calls) == 3 * 4 * 8
