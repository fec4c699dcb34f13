"""What every variation operator is: parents in, candidate configurations out.

:class:`Operator` is a small base class (after pyribs's ``OperatorBase``): a subclass sets
``name`` and ``num_parents``, implements :meth:`Operator.vary`, and declares what the scheduler
needs to know about it as class attributes (``uses_llm``, ``accepts_target``). The scheduler
only ever calls :meth:`Operator.generate`, whose default wraps ``vary``.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from qd.operators.params import Parameter, check_parameters

__all__ = ["Parent", "Operator", "Generation"]


@dataclass(init=False)
class Parent:
    """An elite handed to an operator.

    Attributes
    ----------
    config : dict
        The elite's configuration (the solution; valid for the search space).
    objective : float
        Its objective value (higher is better). ``fitness`` is an alias.
    measures : dict of str to float
        Its measure (descriptor) values.
    feedback : str
        The evaluation's short text feedback (read by LLM operators).
    id : int or None
        Evaluation id in the run store (lineage), when known.
    """

    config: dict
    objective: float
    measures: dict[str, float]
    feedback: str
    id: int | None

    def __init__(self, config: dict, objective: float = math.nan, measures: dict[str, float] | None = None,
                 feedback: str = "", id: int | None = None, *, fitness: float | None = None):
        self.config = config
        self.objective = float(objective if fitness is None else fitness)
        self.measures = dict(measures or {})
        self.feedback = feedback
        self.id = id

    @property
    def fitness(self) -> float:
        """Alias of :attr:`objective` (the name used before the pyribs vocabulary)."""
        return self.objective


@dataclass(frozen=True)
class Generation:
    """What one :meth:`Operator.generate` call produced.

    Attributes
    ----------
    configs : list of dict
        Candidate children (the scheduler validates and dedups them).
    failed : bool
        The call failed (an LLM that gave up after retries, or an operator that raised): no offspring.
    invalid : bool
        The model answered but no valid configuration could be recovered from its text.
    tokens : int
        Prompt plus completion tokens the call reported (cache hits report the original counts).
    error : str
        What an operator that raised said (``Type: message``); empty otherwise.
    """

    configs: list = field(default_factory=list)
    failed: bool = False
    invalid: bool = False
    tokens: int = 0
    error: str = ""


class Operator:
    """Base class of variation operators.

    Subclasses set :attr:`name` and :attr:`num_parents` and implement :meth:`vary` (or, for
    operators that report more than their children, :meth:`generate`).

    Attributes
    ----------
    name : str
        Name under which the operator's statistics are kept (and its key in a run config).
    num_parents : int
        Elites the scheduler selects for one call.
    uses_llm : bool
        Generation waits on a language model: the search driver runs it in its LLM thread pool
        instead of inline.
    accepts_target : bool
        :meth:`generate` takes a ``target`` (measure values of an empty archive region to reach).
    parents_near_target : bool
        The parents are the elites nearest the target (or the first parent's neighbourhood),
        not a uniform draw: the context of in-context QD operators such as targeted LMX.
    uses_predictor : bool
        The scheduler sets :attr:`predict_measures` (config -> predicted measures by name, or
        None) on the operator: the domain's cost model, or what the run has learned.
    parameters : mapping of str to Parameter
        The constructor's keyword parameters a run config may set (``[operators.NAME]``), each
        with what it accepts (:mod:`qd.operators.params`): the one declaration that both the run
        config's check at load and the constructor (:meth:`check_parameters`) use.
    """

    name: str = "operator"
    num_parents: int = 1
    uses_llm: bool = False
    accepts_target: bool = False
    parents_near_target: bool = False
    uses_predictor: bool = False
    predict_measures: Callable[[dict], dict[str, float] | None] | None = None
    parameters: ClassVar[Mapping[str, Parameter]] = {}

    @classmethod
    def check_parameters(cls, values: Mapping[str, Any], where: str = "") -> None:
        """Check parameter values against :attr:`parameters` (and any rule that relates them).

        Constructors call it on their arguments; the run config calls it on an
        ``[operators.NAME]`` table with ``where="operators.NAME"``. Keys not declared are not checked.

        Raises
        ------
        ValueError
            Naming the parameter (``operators.NAME.sigma must be a number > 0, got 0``).
        """
        check_parameters(cls.parameters, values, where)

    def vary(self, parents: Sequence[Parent], rng: np.random.Generator) -> list[dict]:
        """Offspring of ``parents``; deterministic given ``rng``; parents are left untouched."""
        raise NotImplementedError(f"{type(self).__name__} implements neither vary() nor generate()")

    def generate(self, parents: Sequence[Parent], rng: np.random.Generator,
                 target: dict[str, float] | str | None = None) -> Generation:
        """Offspring of ``parents`` with what happened on the way.

        The default returns :meth:`vary`'s children; ``target`` is ignored unless the operator
        declares ``accepts_target``.
        """
        return Generation(list(self.vary(parents, rng)))

    def generate_many(self, parent_groups: Sequence[Sequence[Parent]], rng: np.random.Generator) -> list[list[dict]]:
        """The children of each group of parents, one list per group (the scheduler's batches).

        The default calls :meth:`generate` once per group; an operator whose children are numpy
        arithmetic makes them all at once. Not for operators that use an LLM (their calls report
        tokens and failures: the scheduler calls :meth:`generate` for them).
        """
        return [list(self.generate(parents, rng).configs) for parents in parent_groups]
    def propose(self, parents: Sequence[Parent], rng: np.random.Generator, n: int,
                target: dict[str, float] | str | None = None) -> Generation:
        """``n`` calls' worth of candidate children, for the scheduler's pre-evaluation filter.

        The default calls :meth:`generate` ``n`` times and pools what they produced (children,
        tokens; failed or invalid only when every call was); operators that can write several
        children more cheaply at once (one LLM prompt, several samples) override it.
        """
        calls = [self.generate(parents, rng, target) if self.accepts_target and target is not None
                 else self.generate(parents, rng) for _ in range(int(n))]
        return Generation([c for g in calls for c in g.configs], failed=all(g.failed for g in calls),
                          invalid=all(g.invalid for g in calls), tokens=sum(g.tokens for g in calls),
                          error=next((g.error for g in calls if g.error), ""))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
