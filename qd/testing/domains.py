"""The contract every domain keeps, as a pytest base class."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from qd.analysis.descriptors import resolve_measures
from qd.domain import Domain
from qd.evaluation import evaluate_config
from qd.result import EvalResult, check_result
from qd.space import Space

__all__ = ["DomainContract"]


class DomainContract:
    """Contract tests for a :class:`~qd.domain.Domain` (subclass in a ``Test*`` class).

    Provide the domain as the ``domain`` fixture. The tests evaluate the domain's default
    configuration (:meth:`~qd.domain.Domain.default_config`, the system run today) and
    ``n_samples`` sampled ones (set it lower for slow domains).

    Attributes
    ----------
    n_samples : int
        Sampled configurations evaluated besides the default one.
    deterministic : bool
        Whether evaluating a configuration twice gives the same objective and measures; when
        True, the copy of the domain that pickling makes must score like the original.
    """

    n_samples: int = 3
    deterministic: bool = True

    @pytest.fixture
    def domain(self) -> Domain:
        """The domain under test; a subclass must override this fixture."""
        raise NotImplementedError(f"{type(self).__name__} must define a `domain` fixture returning the domain under "
                                  "test")

    def configs(self, domain: Domain) -> list[dict]:
        """The domain's default configuration and ``n_samples`` sampled ones (fixed seed)."""
        rng = np.random.default_rng(0)
        return [domain.default_config()] + [domain.space.sample(rng) for _ in range(self.n_samples)]

    def test_space_round_trips(self, domain: Domain) -> None:
        """The space survives ``to_dict``/JSON/``from_dict``; the configurations validate and round-trip as JSON."""
        space = domain.space
        assert isinstance(space, Space), f"domain.space is {type(space).__name__}, not a qd.space.Space"
        assert Space.from_dict(json.loads(json.dumps(space.to_dict()))) == space
        for config in self.configs(domain):
            assert space.validate(config) == []
            assert json.loads(space.canonical(config)) == config

    def test_evaluate_returns_an_eval_result(self, domain: Domain) -> None:
        """``evaluate`` returns a well-formed EvalResult; at least one of the configurations scores."""
        results = []
        for config in self.configs(domain):
            result = domain.evaluate(config)
            assert isinstance(result, EvalResult), f"evaluate returned {type(result).__name__}, not EvalResult"
            check_result(result)  # raises MalformedResult naming the bad field
            if result.status == "ok":
                assert not math.isnan(result.objective), "an ok result needs an objective (NaN is for failures)"
            results.append(result)
        assert any(r.usable for r in results), "no configuration gave a usable result: " + "; ".join(
            f"{r.status}: {r.error}" for r in results)

    def test_survives_pickling_for_ray(self, domain: Domain) -> None:
        """The domain round-trips through Ray's pickler (workers get such a copy) and still evaluates."""
        from ray import cloudpickle  # heavy: only this test needs it

        clone = cloudpickle.loads(cloudpickle.dumps(domain))
        assert clone.space == domain.space
        config = domain.default_config()
        original, copied = domain.evaluate(config), clone.evaluate(config)
        assert isinstance(copied, EvalResult) and copied.status == original.status
        if self.deterministic:
            assert (copied.objective == original.objective
                    or (math.isnan(copied.objective) and math.isnan(original.objective)))
            assert copied.measures == original.measures

    def test_descriptors_finite(self, domain: Domain) -> None:
        """Default measures and the domain's own descriptors give finite numbers for usable results."""
        measures = list(domain.default_measures)
        for name, seq in (("default_ranges", domain.default_ranges), ("default_bins", domain.default_bins)):
            assert not seq or len(seq) == len(measures), f"{name} has {len(seq)} entries for {len(measures)} measures"
        functions = resolve_measures(measures, domain)
        own = dict(domain.descriptors())
        for config in self.configs(domain):
            result = evaluate_config(domain, config)  # as the evaluators run it: traced, checked
            if not result.usable:
                continue
            for name, value in result.measures.items():
                assert math.isfinite(value), f"result.measures[{name!r}] = {value}"
            for fn in functions:
                value = fn(config, result)
                assert isinstance(value, (int, float)) and math.isfinite(value), f"measure {fn.__name__!r} = {value!r}"
            for name, fn in own.items():
                value = fn(config, result)
                assert math.isfinite(float(value)), f"descriptor {name!r} = {value!r}"
