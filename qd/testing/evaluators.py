"""The contract every evaluator keeps, as a pytest base class."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from qd.domain import Domain
from qd.evaluation import evaluate_config
from qd.evaluators import Evaluator
from qd.evaluators.outcomes import timed_out
from qd.result import EvalResult
from qd.space import Categorical, Float, Space

__all__ = ["EvaluatorContract", "ProbeDomain", "drain"]


class ProbeDomain(Domain):
    """The domain the evaluator contract runs: ``action`` makes an evaluation score, raise, exit or sleep.

    It lives in an importable module so that Ray workers (or any other process an evaluator
    ships it to) can unpickle it.
    """

    name = "probe"
    space = Space({"x": Float(0.0, 1.0), "action": Categorical(["ok", "raise", "sys_exit", "sleep"]),
                   "sleep_s": Float(0.0, 60.0)})
    default_measures = ("x",)
    default_ranges = ((0.0, 1.0),)

    def evaluate(self, config: dict) -> EvalResult:
        """Score ``x``, after doing what ``action`` says."""
        action, x = config["action"], config["x"]
        if action == "raise":
            raise RuntimeError(f"probe raised at x={x:.3f}")
        if action == "sys_exit":
            raise SystemExit(3)
        if action == "sleep":
            time.sleep(config["sleep_s"])
        return EvalResult(objective=-(x - 0.3) ** 2, measures={"x": x}, feedback=f"x={x:.4f}")


def probe(x: float, action: str = "ok", sleep_s: float = 0.0) -> dict:
    """A configuration of :class:`ProbeDomain`."""
    return {"x": x, "action": action, "sleep_s": sleep_s}


def drain(evaluator: Any, limit_s: float = 120.0) -> dict[int, EvalResult]:
    """Collect until nothing is pending: each key once, each result an :class:`EvalResult`.

    Fails (rather than hangs) when evaluations are still pending after ``limit_s`` seconds.
    """
    results: dict[int, EvalResult] = {}
    end = time.monotonic() + limit_s
    while evaluator.pending():
        assert time.monotonic() < end, f"evaluations still pending after {limit_s} s"
        for key, result in evaluator.collect(0.5):
            assert key not in results, f"key {key} was collected twice"
            assert isinstance(result, EvalResult), f"collect gave a {type(result).__name__}, not EvalResult"
            results[key] = result
    return results


class EvaluatorContract:
    """Contract tests for an evaluator (subclass in a ``Test*`` class).

    Provide the ``make_evaluator`` fixture: a function ``make(domain, timeout_s) -> Evaluator``
    (for a registered backend: ``lambda domain, timeout_s: qd.make_evaluator("mine", domain,
    timeout_s=timeout_s)``). The tests run :class:`ProbeDomain` on it: every key submitted comes
    back once with its own result, the same result :func:`qd.evaluation.evaluate_config` gives in
    this process; an exception (``SystemExit`` too) becomes an ``"error"`` result and a deadline
    a ``"timeout"`` one (:mod:`qd.evaluators.outcomes`), never an exception out of ``collect``;
    and ``close`` returns with work still in flight.

    Attributes
    ----------
    timeout_s : float
        The deadline of the timeout test (an evaluation there sleeps ``sleep_s``, longer).
    sleep_s : float
        How long the evaluation that times out sleeps.
    collect_limit_s : float
        How long a test collects before it fails instead of hanging.
    """

    timeout_s: float = 1.0
    sleep_s: float = 8.0
    collect_limit_s: float = 120.0

    @pytest.fixture
    def make_evaluator(self) -> Callable[[Domain, float | None], Evaluator]:
        """``make(domain, timeout_s)`` builds the evaluator under test; a subclass must override this fixture."""
        raise NotImplementedError(f"{type(self).__name__} must define a `make_evaluator` fixture: "
                                  "make(domain, timeout_s) -> evaluator")

    def drain(self, evaluator: Any) -> dict[int, EvalResult]:
        """:func:`drain` with :attr:`collect_limit_s`."""
        return drain(evaluator, self.collect_limit_s)

    def test_follows_the_evaluator_protocol(self, make_evaluator: Any) -> None:
        """``slots`` is a positive int, and ``submit``/``collect``/``pending``/``close`` exist."""
        evaluator = make_evaluator(ProbeDomain(), None)
        try:
            assert isinstance(evaluator, Evaluator), "missing one of slots, submit, collect, pending, close"
            assert isinstance(evaluator.slots, int) and evaluator.slots >= 1, f"slots = {evaluator.slots!r}"
            assert evaluator.pending() == 0
        finally:
            evaluator.close()

    def test_every_key_comes_back_once_with_its_own_result(self, make_evaluator: Any) -> None:
        """Each submitted key is collected once, with the result the domain gives that configuration here."""
        domain = ProbeDomain()
        configs = {key: probe(x) for key, x in zip(range(100, 112), [i / 11 for i in range(12)])}
        evaluator = make_evaluator(domain, None)
        try:
            for key, config in configs.items():
                evaluator.submit(key, config)
            assert evaluator.pending() == len(configs)
            results = self.drain(evaluator)
        finally:
            evaluator.close()
        assert sorted(results) == sorted(configs)
        for key, config in configs.items():
            want, got = evaluate_config(domain, config), results[key]
            assert (got.status, got.objective, got.measures, got.feedback) == \
                   (want.status, want.objective, want.measures, want.feedback), f"key {key}: {got} != {want}"

    def test_an_exception_becomes_an_error_result(self, make_evaluator: Any) -> None:
        """A domain that raises (``SystemExit`` too) gives an ``"error"`` result naming it; the others are unharmed."""
        evaluator = make_evaluator(ProbeDomain(), None)
        try:
            evaluator.submit(1, probe(0.1, "raise"))
            evaluator.submit(2, probe(0.2, "sys_exit"))
            evaluator.submit(3, probe(0.3))
            results = self.drain(evaluator)
        finally:
            evaluator.close()
        assert results[1].status == "error" and "RuntimeError: probe raised at x=0.100" in results[1].error
        assert results[2].status == "error" and "SystemExit" in results[2].error
        assert results[3].status == "ok" and results[3].objective == 0.0

    def test_a_deadline_becomes_a_timeout_result(self, make_evaluator: Any) -> None:
        """An evaluation past ``timeout_s`` comes back as ``"timeout"``, worded as qd.evaluators.outcomes words it."""
        evaluator = make_evaluator(ProbeDomain(), self.timeout_s)
        try:
            evaluator.submit(1, probe(0.1, "sleep", self.sleep_s))
            evaluator.submit(2, probe(0.2))
            started = time.monotonic()
            results = self.drain(evaluator)
            took = time.monotonic() - started
        finally:
            evaluator.close()
        assert results[1].status == "timeout", results[1]
        assert results[1].error.startswith(timed_out(self.timeout_s).error), results[1].error
        assert results[2].status == "ok"
        assert took < self.sleep_s  # the deadline fired: nothing waited for the sleep to end

    def test_close_returns_with_work_in_flight(self, make_evaluator: Any) -> None:
        """``close`` with evaluations still running returns (it cancels them, or leaves them to finish)."""
        evaluator = make_evaluator(ProbeDomain(), self.timeout_s)
        for key in range(3):
            evaluator.submit(key, probe(0.5, "sleep", self.sleep_s))
        started = time.monotonic()
        evaluator.close()
        assert time.monotonic() - started < self.sleep_s, "close() waited for the evaluations in flight"
