"""The contract every search listener keeps, as a pytest base class."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from qd.analysis.descriptors import resolve_measures
from qd.archives import GridArchive
from qd.domain import Domain
from qd.evaluators.serial import SerialEvaluator
from qd.listeners import Evaluated, SearchListener, build_listeners
from qd.operators import Mutation
from qd.result import EvalResult
from qd.search import Search
from qd.space import Float, Space

__all__ = ["ListenerContract"]


class _Plane(Domain):
    """A fast deterministic domain for the listener contract's searches."""

    name = "plane"
    space = Space({"x": Float(0.0, 1.0), "y": Float(0.0, 1.0)})
    default_measures = ("x", "y")
    default_ranges = ((0.0, 1.0), (0.0, 1.0))

    def evaluate(self, config: dict) -> EvalResult:
        x, y = config["x"], config["y"]
        if x > 0.9:  # some failures, so a listener sees every status
            raise ValueError("x above 0.9")
        return EvalResult(objective=-(x - 0.4) ** 2 - (y - 0.6) ** 2, measures={"x": x, "y": y}, feedback=f"{x:.2f}")


class _Spy(SearchListener):
    """Writes down what a listener after the one under test sees."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.events: list[tuple] = []

    def on_start(self, search: Any) -> None:
        self.calls.append("start")

    def on_results(self, search: Any, events: Sequence[Evaluated]) -> None:
        self.events += [(e.id, e.candidate.operator, e.result.status, repr(e.result.objective),
                         sorted(e.measures.items()), int(e.status)) for e in events]

    def on_end(self, search: Any) -> None:
        self.calls.append("end")


class ListenerContract:
    """Contract tests for a :class:`~qd.listeners.SearchListener` (subclass in a ``Test*`` class).

    Provide the listener as the ``listener`` fixture (a fresh one each time it is asked for). The
    tests run small searches (serial, seeded) with it: it takes every hook, including a search that
    ends before its first result, and changes nothing the search or the listeners after it see
    (same results and archive as the same search without it).

    Attributes
    ----------
    budget : int
        Evaluations of each search.
    reference : str or None
        ``"package.module:attribute"`` under which a run config names it (``[run] listeners``);
        when set, the contract checks that it resolves to a listener.
    """

    budget: int = 40
    reference: str | None = None

    @pytest.fixture
    def listener(self) -> SearchListener:
        """The listener under test; a subclass must override this fixture."""
        raise NotImplementedError(f"{type(self).__name__} must define a `listener` fixture returning a new listener")

    def search(self, listeners: Sequence[SearchListener], budget: int | None = None) -> Search:
        """Run a seeded serial search over a plane with ``listeners`` and return it."""
        domain = _Plane()
        archive = GridArchive(dims=[8, 8], ranges=[(0.0, 1.0), (0.0, 1.0)], measure_names=["x", "y"])
        with Search(domain, archive, SerialEvaluator(domain), operators={"mutation": (Mutation(domain.space), 1.0)},
                    measures=resolve_measures(["x", "y"], domain), budget=self.budget if budget is None else budget,
                    seed=0, init_random=10, progress=False, listeners=listeners) as search:
            search.run()
        return search

    def test_is_a_search_listener(self, listener: Any) -> None:
        """It subclasses SearchListener, so every hook the driver calls exists."""
        assert isinstance(listener, SearchListener), f"{type(listener).__name__} does not subclass SearchListener"

    def test_a_search_with_it_ends_as_one_without_it(self, listener: Any) -> None:
        """It reads and never changes: the results, statuses and archive are those of the search without it."""
        alone, spy = _Spy(), _Spy()
        without = self.search([alone])
        with_it = self.search([listener, spy])
        assert spy.calls == ["start", "end"]
        assert spy.events == alone.events and len(spy.events) == self.budget
        for field in ("index", "objective", "measures"):
            assert np.array_equal(with_it.archive.data(field), without.archive.data(field)), field

    def test_takes_a_search_that_ends_before_its_first_result(self, listener: Any) -> None:
        """``on_start`` then ``on_end`` with nothing between (a budget already spent) does not fail."""
        spy = _Spy()
        self.search([listener, spy], budget=0)
        assert spy.calls == ["start", "end"] and spy.events == []

    def test_can_be_named_in_a_run_config(self) -> None:
        """:attr:`reference` resolves, as ``[run] listeners`` resolves it, to a listener."""
        if self.reference is None:
            pytest.skip("no `reference` set: the listener is not named in run configs")
        built = build_listeners([self.reference])
        assert len(built) == 1 and isinstance(built[0], SearchListener)
