"""qd.analysis.measuring: the one place the search and ``qd validate`` turn a result into measures."""
from __future__ import annotations

import math

import pytest

from qd.analysis.measuring import measure_result
from qd.result import EvalResult


def _x(config, result):
    return config["x"]


def _boom(config, result):
    raise ZeroDivisionError("no cells")


def test_a_usable_result_keeps_its_own_measures_and_gains_the_descriptors():
    result = EvalResult(fitness=1.0, measures={"own": 2.0})
    assert measure_result({"x": 0.5}, result, [_x], ["x"]) == {"own": 2.0, "x": 0.5}
    assert result.usable and result.error == ""


def test_a_descriptor_that_raises_makes_the_result_an_error_and_adds_no_values():
    result = EvalResult(fitness=1.0, measures={"own": 2.0})
    assert measure_result({"x": 0.5}, result, [_x, _boom], ["x", "y"]) == {"own": 2.0}
    assert result.status == "error" and not result.usable
    assert result.error == "descriptor failed: ZeroDivisionError: no cells"


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_non_finite_measure_makes_the_result_invalid_and_is_kept_for_the_record(bad):
    result = EvalResult(fitness=1.0)
    values = measure_result({"x": bad}, result, [_x], ["x"])
    assert list(values) == ["x"] and not math.isfinite(values["x"])
    assert result.status == "invalid" and result.error == "non-finite measures: x"


def test_an_unusable_result_runs_no_descriptor_and_keeps_its_status():
    result = EvalResult.failure("timeout", "too slow")
    assert measure_result({"x": 0.5}, result, [_boom], ["x"]) == {}
    assert (result.status, result.error) == ("timeout", "too slow")


@pytest.mark.parametrize("objective", [math.inf, -math.inf])
def test_an_infinite_objective_makes_the_result_invalid(objective):
    infinite = EvalResult(fitness=objective)
    measure_result({"x": 0.5}, infinite, [_boom], ["x"])
    assert infinite.status == "invalid" and infinite.error == f"non-finite objective: {objective}"


def test_a_nan_objective_stays_an_ok_result_with_no_score():
    none = EvalResult(fitness=math.nan)
    measure_result({"x": 0.5}, none, [_boom], ["x"])
    assert none.status == "ok" and not none.usable  # a NaN objective: a result with no score, counted ok
