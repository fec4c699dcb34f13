"""What every variation operator is: parents in, candidate configurations out."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["Parent", "Operator"]


@dataclass
class Parent:
    """An elite handed to an operator.

    Attributes
    ----------
    config : dict
        The elite's configuration (valid for the search space).
    fitness : float
        Its objective value (higher is better).
    measures : dict of str to float
        Its descriptor values.
    feedback : str
        The evaluation's short text feedback (read by LLM operators).
    id : int or None
        Evaluation id in the run store (lineage), when known.
    """

    config: dict
    fitness: float = float("nan")
    measures: dict[str, float] = field(default_factory=dict)
    feedback: str = ""
    id: int | None = None


@runtime_checkable
class Operator(Protocol):
    """A variation operator.

    ``vary`` returns candidate configurations; the search validates them, counts invalid ones
    and replaces them by a classic offspring. Operators may also offer ``stats() -> dict``
    (e.g. token usage) and set ``uses_llm = True`` to run in the search's thread pool.
    """

    name: str
    num_parents: int

    def vary(self, parents: Sequence[Parent], rng: np.random.Generator) -> list[dict]:
        """Offspring of ``parents``; deterministic given ``rng``."""
        ...
