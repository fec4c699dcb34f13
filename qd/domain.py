"""The interface every domain (built-in or a user's) implements."""
from __future__ import annotations

from collections.abc import Callable, Sequence

from qd.result import EvalResult
from qd.space import Space


class Domain:
    """A search problem: a configuration space and a way to evaluate configurations.

    Subclasses set :attr:`space` and implement :meth:`evaluate`. They may also
    declare default measures (descriptor names, ranges and bins) and their own
    descriptor functions.

    Attributes
    ----------
    name : str
        Registry name (``qd domains`` lists the built-ins).
    space : Space
        The configurations this domain accepts.
    default_measures : sequence of str
        Descriptor names used when the run config names none.
    default_ranges : sequence of (float, float)
        Range of each default measure.
    default_bins : sequence of int
        Grid bins of each default measure.
    objective_name : str
        Label for the fitness on plots and reports.
    qd_score_offset : float
        Default QD-score offset: a lower bound of the fitness, so every elite counts positively.
    """

    name: str = "domain"
    space: Space
    default_measures: Sequence[str] = ()
    default_ranges: Sequence[tuple[float, float]] = ()
    default_bins: Sequence[int] = ()
    objective_name: str = "fitness"
    qd_score_offset: float = 0.0

    def evaluate(self, config: dict) -> EvalResult:
        """Run ``config`` and score it. Must be safe to call from worker processes."""
        raise NotImplementedError

    def descriptors(self) -> dict[str, Callable[[dict, EvalResult], float]]:
        """Domain-defined descriptors: name -> f(config, result) -> float."""
        return {}
