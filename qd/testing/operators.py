"""The contract every variation operator keeps, as a pytest base class."""
from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from qd.operators.base import Parent
from qd.space import Space

__all__ = ["OperatorContract"]


def _containers(value: Any) -> Iterator[Any]:
    """Every dict and list inside a JSON-like value, the value itself included."""
    if isinstance(value, (dict, list)):
        yield value
        for v in value.values() if isinstance(value, dict) else value:
            yield from _containers(v)


class OperatorContract:
    """Contract tests for a variation operator (subclass in a ``Test*`` class).

    Provide the operator as the ``operator`` fixture. The space defaults to ``operator.space``
    and the parents to ``max(num_parents, 2)`` configurations sampled from it (override the
    ``space`` or ``parents`` fixtures to choose them).

    Attributes
    ----------
    seeds : tuple of int
        Seeds of the rngs the operator is called with, one call each.

    Examples
    --------
    >>> import pytest
    >>> from qd.space import Float, Space
    >>> from qd.testing import OperatorContract
    >>> class TestMyOperator(OperatorContract):
    ...     @pytest.fixture
    ...     def operator(self):
    ...         return MyOperator(Space({"x": Float(0, 1)}))
    """

    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)

    @pytest.fixture
    def operator(self) -> Any:
        """The operator under test; a subclass must override this fixture."""
        raise NotImplementedError(f"{type(self).__name__} must define an `operator` fixture returning the operator "
                                  "under test")

    @pytest.fixture
    def space(self, operator: Any) -> Space:
        """The space the operator's children must validate against (``operator.space``)."""
        space = getattr(operator, "space", None)
        if not isinstance(space, Space):
            raise NotImplementedError(f"{type(operator).__name__} has no `space` attribute: define a `space` fixture "
                                      f"in {type(self).__name__}")
        return space

    @pytest.fixture
    def parents(self, operator: Any, space: Space) -> list[Parent]:
        """``max(num_parents, 2)`` distinct sampled elites with objectives 0, 1, ..."""
        n = max(int(operator.num_parents), 2)
        rng = np.random.default_rng(12345)
        return [Parent(config=space.sample(rng), objective=float(i), measures={"m": 0.5 * i},
                       feedback=f"parent {i}", id=i) for i in range(n)]

    def _vary(self, operator: Any, parents: list[Parent], seed: int) -> list[dict]:
        children = operator.vary(parents[: max(int(operator.num_parents), 1)], np.random.default_rng(seed))
        assert isinstance(children, list), f"vary() returned {type(children).__name__}, not a list"
        return children

    def test_declares_name_and_num_parents(self, operator: Any) -> None:
        """``name`` is a non-empty string and ``num_parents`` a positive int (what the scheduler reads)."""
        assert isinstance(operator.name, str) and operator.name
        assert isinstance(operator.num_parents, int) and not isinstance(operator.num_parents, bool)
        assert operator.num_parents >= 1

    def test_children_validate_against_the_space(self, operator: Any, space: Space, parents: list[Parent]) -> None:
        """Every child is a valid configuration of the space, and the calls give at least one child."""
        total = 0
        for seed in self.seeds:
            for child in self._vary(operator, parents, seed):
                assert space.validate(child) == [], f"seed {seed}: invalid child {child!r}"
                total += 1
        assert total > 0, f"{len(self.seeds)} calls of vary() gave no child at all"

    def test_deterministic_given_the_rng(self, operator: Any, space: Space, parents: list[Parent]) -> None:
        """Two calls with equal rng states give equal children (canonical JSON compared)."""
        for seed in self.seeds:
            first = [space.canonical(c) for c in self._vary(operator, parents, seed)]
            second = [space.canonical(c) for c in self._vary(operator, parents, seed)]
            assert first == second, f"seed {seed}: the same rng state gave different children"

    def test_parents_left_untouched(self, operator: Any, parents: list[Parent]) -> None:
        """``vary`` changes no parent, and no child shares a dict or list with a parent."""
        before = copy.deepcopy([(p.config, p.objective, p.measures, p.feedback) for p in parents])
        parent_containers = {id(c) for p in parents for c in _containers(p.config)}
        for seed in self.seeds:
            children = self._vary(operator, parents, seed)
            after = [(p.config, p.objective, p.measures, p.feedback) for p in parents]
            assert json.dumps(after, sort_keys=True) == json.dumps(before, sort_keys=True), \
                f"seed {seed}: vary() modified its parents"
            for child in children:
                shared = [c for c in _containers(child) if id(c) in parent_containers]
                assert not shared, f"seed {seed}: a child shares {shared[0]!r} with a parent (copy it)"

    def test_generate_gives_valid_configs(self, operator: Any, space: Space, parents: list[Parent]) -> None:
        """``generate`` (what the scheduler calls) returns a Generation whose configs validate."""
        generation = operator.generate(parents[: operator.num_parents], np.random.default_rng(self.seeds[0]))
        assert isinstance(generation.configs, list)
        for child in generation.configs:
            assert space.validate(child) == []
        if getattr(operator, "accepts_target", False):
            generation = operator.generate(parents[: operator.num_parents], np.random.default_rng(self.seeds[0]),
                                           target={"m": 0.25})
            assert all(space.validate(child) == [] for child in generation.configs)
