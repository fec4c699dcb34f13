"""The k-module domain: one right combination, feedback that names the wrong stages, static measures."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qd.domains import available_domains, get_domain
from qd.domains.k_module import KModuleDomain


def test_registered_by_name_with_defaults():
    assert "k-module" in available_domains()
    domain = get_domain("k-module")
    assert isinstance(domain, KModuleDomain)
    assert (domain.stages, domain.options, domain.feedback_mode) == (4, 5, "attributable")
    assert len(domain.space.params) == 6


def test_the_right_combination_scores_one_and_only_it_is_solved():
    domain = KModuleDomain(seed=3)
    best = {**domain.answer, "threshold": domain.best_threshold, "batch_size": 5}
    result = domain.evaluate(best)
    assert result.fitness == pytest.approx(1.0) and result.metrics["solved"]
    wrong = dict(best, model=next(o for o in domain.choices["model"] if o != domain.answer["model"]))
    result = domain.evaluate(wrong)
    assert not result.metrics["solved"] and result.fitness == pytest.approx(4 / 5)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 50), draw=st.integers(0, 2**32 - 1))
def test_attributable_feedback_names_exactly_the_wrong_stages(seed, draw):
    domain = KModuleDomain(seed=seed)
    config = domain.space.sample(np.random.default_rng(draw))
    feedback = domain.evaluate(config).feedback
    for stage in domain.stage_names:
        named = f"stage {stage}: {config[stage]} is wrong" in feedback
        assert named == (config[stage] != domain.answer[stage])
    right = sum(config[s] == domain.answer[s] for s in domain.stage_names)
    assert feedback.startswith(f"{right} of 4 stages right")


def test_threshold_feedback_says_which_way():
    domain = KModuleDomain(seed=1)
    high = dict(domain.default_config(), threshold=min(1.0, domain.best_threshold + 0.3))
    low = dict(domain.default_config(), threshold=max(0.0, domain.best_threshold - 0.3))
    assert "is too high" in domain.evaluate(high).feedback
    assert "is too low" in domain.evaluate(low).feedback


def test_count_feedback_names_no_stage_and_none_says_nothing():
    config = KModuleDomain().default_config()
    count = KModuleDomain(feedback="count").evaluate(config).feedback
    assert "of 4 stages right" in count and "stage " not in count and "wrong" not in count
    assert KModuleDomain(feedback="none").evaluate(config).feedback == ""
    # the feedback mode changes nothing else
    a, b = KModuleDomain(feedback="count").evaluate(config), KModuleDomain().evaluate(config)
    assert a.fitness == b.fitness and a.measures == b.measures


def test_measures_are_static_and_predicted_exactly():
    domain = KModuleDomain(stages=3, options=6)
    rng = np.random.default_rng(0)
    for _ in range(20):
        config = domain.space.sample(rng)
        result = domain.evaluate(config)
        assert result.measures == domain.predict_measures(config)
        assert domain.default_ranges[0][0] <= result.measures["cost"] <= domain.default_ranges[0][1]
        assert result.measures["log2_batch"] == pytest.approx(math.log2(config["batch_size"]))


def test_each_stage_costs_a_permutation_of_one_to_options():
    domain = KModuleDomain(stages=6, options=7)
    for stage in domain.stage_names:
        assert sorted(domain.costs[stage].values()) == list(range(1, 8))


@pytest.mark.parametrize("kwargs, message", [
    ({"stages": 0}, "stages"), ({"stages": 7}, "stages"), ({"options": 1}, "options"),
    ({"options": 9}, "options"), ({"feedback": "rich"}, "feedback"),
])
def test_bad_options_name_the_option(kwargs, message):
    with pytest.raises(ValueError, match=message):
        KModuleDomain(**kwargs)


def test_invalid_configuration_is_an_invalid_result():
    domain = KModuleDomain()
    result = domain.evaluate(dict(domain.default_config(), model="transformer"))
    assert result.status == "invalid"
