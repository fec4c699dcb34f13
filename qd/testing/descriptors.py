"""The contract every descriptor keeps, as a pytest base class."""
from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import pytest

from qd.analysis.descriptors import resolve_measures
from qd.domain import Domain
from qd.result import EvalResult

__all__ = ["DescriptorContract", "SAMPLE_TRACES"]


def _llm(i: int, example: int | None, deps: tuple[int, ...] = (), parent: int | None = None, ok: bool = True,
         tokens: int = 100, start: float = 0.0) -> dict:
    return {"id": i, "kind": "llm", "example": example, "deps": list(deps), "parent_id": parent, "ok": ok,
            "tokens_in": tokens, "tokens_out": tokens // 4, "cost_usd": tokens * 1e-6, "model": "m",
            "start_s": start, "latency_s": 0.5}


#: Traces of the shapes pipelines make: none, a chain, a fan-out under a step, two examples, a failed call.
SAMPLE_TRACES: dict[str, list[dict]] = {
    "empty": [],
    "chain": [_llm(1, None), _llm(2, None, deps=(1,), start=0.5)],
    "fan_out": [{"id": 1, "kind": "step", "name": "map", "start_s": 0.0, "latency_s": 1.0}]
               + [_llm(i, None, parent=1, start=0.1) for i in range(2, 6)] + [_llm(6, None, deps=(2, 3, 4, 5))],
    "two_examples": [_llm(1, 0), _llm(2, 0, deps=(1,), start=0.5), _llm(3, 1, tokens=300), _llm(4, 1, deps=(3,)),
                     {"id": 5, "kind": "tool", "name": "search", "example": 1, "deps": [4], "start_s": 1.0,
                      "latency_s": 0.1}],
    "failed_call": [_llm(1, None), _llm(2, None, deps=(1,), ok=False), _llm(3, None, deps=(1,))],
}


class DescriptorContract:
    """Contract tests for a descriptor ``f(config, result) -> float`` (subclass in a ``Test*`` class).

    Provide the ``descriptor`` fixture: the function, or its name as a run config gives it in
    ``[archive] measures`` (a built-in or ``"package.module:function"``, resolved by
    :func:`qd.analysis.resolve_measures` against the ``domain`` fixture). The ``cases`` fixture
    gives the ``(config, result)`` pairs it is tried on: by default the domain's default
    configuration with each of :data:`SAMPLE_TRACES` (override it with your domain's own
    results). On every case the descriptor gives a finite float, the same one twice, and leaves
    the configuration and the result as they were; with :attr:`order_free` its value does not
    depend on the order of the trace's spans (how examples and threads happened to interleave).

    Attributes
    ----------
    order_free : bool
        Whether the value must not depend on the order of the spans in the trace.
    """

    order_free: bool = True

    @pytest.fixture
    def descriptor(self) -> Callable[[dict, EvalResult], float] | str:
        """The descriptor under test, or its name; a subclass must override this fixture."""
        raise NotImplementedError(f"{type(self).__name__} must define a `descriptor` fixture returning the function "
                                  "or its name")

    @pytest.fixture
    def domain(self) -> Domain | None:
        """The domain names are resolved against (its space binds static descriptors); ``None``: none."""
        return None

    @pytest.fixture
    def cases(self, domain: Domain | None) -> list[tuple[dict, EvalResult]]:
        """``(config, result)`` pairs: the domain's default configuration (or ``{}``) with each sample trace."""
        config = domain.default_config() if domain is not None else {}
        return [(config, EvalResult(objective=0.0, trace=copy.deepcopy(trace))) for trace in SAMPLE_TRACES.values()]

    @pytest.fixture
    def function(self, descriptor: Any, domain: Domain | None) -> Callable[[dict, EvalResult], float]:
        """The descriptor as the search calls it (a name resolved as ``[archive] measures`` resolves it)."""
        if isinstance(descriptor, str):
            return resolve_measures([descriptor], domain)[0]
        assert callable(descriptor), f"descriptor is a {type(descriptor).__name__}, not a function or a name"
        return descriptor

    def test_gives_a_finite_float(self, function: Any, cases: list) -> None:
        """Every case gives a finite int or float (not a bool, not NaN: a NaN makes the evaluation invalid)."""
        for config, result in cases:
            value = function(config, result)
            assert isinstance(value, (int, float)) and not isinstance(value, bool), \
                f"gave a {type(value).__name__} ({value!r}), not a float"
            assert math.isfinite(value), f"gave {value} for a trace of {len(result.trace)} spans"

    def test_same_inputs_same_value(self, function: Any, cases: list) -> None:
        """Called twice on one case it gives one value (the map must not move a configuration by chance)."""
        for config, result in cases:
            assert function(config, result) == function(config, result)

    def test_leaves_its_inputs_untouched(self, function: Any, cases: list) -> None:
        """The configuration, the trace and the result's measures are as they were after the call."""
        for config, result in cases:
            before = copy.deepcopy((config, result.trace, result.measures, result.objective))
            function(config, result)
            assert (config, result.trace, result.measures, result.objective) == before

    def test_does_not_depend_on_the_order_of_the_spans(self, function: Any, cases: list) -> None:
        """The trace's spans reversed (another interleaving of examples and threads) give the same value."""
        if not self.order_free:
            pytest.skip("order_free = False")
        for config, result in cases:
            flipped = EvalResult(objective=result.objective, measures=dict(result.measures), trace=result.trace[::-1],
                                 feedback=result.feedback, scores=result.scores)
            assert function(config, flipped) == pytest.approx(function(config, result), rel=1e-12, abs=1e-12)
