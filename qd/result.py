"""Result of evaluating one configuration, and the span type of its trace."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

Status = Literal["ok", "invalid", "error", "timeout", "crash"]
STATUSES: tuple[str, ...] = ("ok", "invalid", "error", "timeout", "crash")


class Span(TypedDict, total=False):
    """One recorded operation of a running configuration (see DESIGN.md, Core data)."""

    id: int
    parent_id: int | None
    deps: list[int]
    kind: str  # "llm" | "tool" | "step"
    name: str
    model: str
    tokens_in: int
    tokens_out: int
    cached: bool
    latency_s: float
    start_s: float
    ok: bool
    error: str
    cost_usd: float


Trace = list[Span]


@dataclass
class EvalResult:
    """What a domain returns for one configuration.

    Parameters
    ----------
    fitness : float
        Objective, higher is better. NaN never enters the archive.
    measures : dict of str to float
        Descriptor values the domain computed itself (others come from ``qd.analysis``).
    trace : list of Span
        Spans recorded while the configuration ran.
    metrics : dict
        Free-form numbers for reports (accuracy per instance, ...).
    feedback : str
        Short text for LLM operators: what went wrong, what the score means.
    status : {"ok", "invalid", "error", "timeout", "crash"}
        Only ``"ok"`` results with a finite fitness enter the archive.
    error : str
        Error message when ``status`` is not ``"ok"``.
    scores : list of float, optional
        One score per instance (example, question, seed) when the objective is an average over
        instances; stored with the evaluation so means, standard errors and per-instance
        comparisons are available (see ``qd.noise``).
    """

    fitness: float = float("nan")
    measures: dict[str, float] = field(default_factory=dict)
    trace: Trace = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    feedback: str = ""
    status: Status = "ok"
    error: str = ""
    scores: list[float] | None = None

    @property
    def usable(self) -> bool:
        """True when the result may enter an archive (status ok, finite fitness)."""
        return self.status == "ok" and math.isfinite(self.fitness)

    @classmethod
    def failure(cls, status: Status, error: str) -> EvalResult:
        """A result for an evaluation that did not finish normally."""
        return cls(status=status, error=error, feedback=f"{status}: {error}"[:500])
