"""Result of evaluating one configuration, and the span type of its trace."""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

Status = Literal["ok", "invalid", "error", "timeout", "crash"]
STATUSES: tuple[str, ...] = ("ok", "invalid", "error", "timeout", "crash")


class Span(TypedDict, total=False):
    """One recorded operation of a running configuration (see docs/architecture.md, Core data)."""

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
    input: str  # prompt text, clipped to [run] trace_text_chars (clip_text)
    output: str  # answer text, clipped likewise
    example: int  # the example (instance) of the evaluation it ran for; absent outside examples


Trace = list[Span]

# [run] trace_text_chars: characters of a span's prompt and answer text kept (0 keeps none).
DEFAULT_TRACE_TEXT_CHARS = 300
TEXT_FIELDS: tuple[str, ...] = ("input", "output")


def clip_text(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters: its start, "…", and its last third.

    Prompts put their constant part first and what varies (the question) last, so both ends
    are kept.
    """
    if len(text) <= limit:
        return text
    if limit <= 0:
        return ""
    tail = limit // 3
    return text[:limit - 1 - tail] + "…" + text[len(text) - tail:]


def clip_trace_text(trace: list[Span], limit: int) -> list[Span]:
    """``trace`` with every span's ``input``/``output`` clipped by :func:`clip_text` (dropped when ``limit`` is 0).

    Spans without text are returned as they are; the others are copied.
    """
    out = []
    for span in trace:
        if any(f in span for f in TEXT_FIELDS):
            span = dict(span)  # type: ignore[assignment]
            for f in TEXT_FIELDS:
                if f in span:
                    if limit > 0 and isinstance(span[f], str):
                        span[f] = clip_text(span[f], limit)  # type: ignore[literal-required]
                    else:
                        del span[f]  # type: ignore[misc]
        out.append(span)
    return out


_UNSET: Any = object()  # EvalResult's `fitness` keyword when not given (None is a value: a malformed one)


@dataclass(init=False)
class EvalResult:
    """What a domain returns for one configuration.

    Parameters
    ----------
    objective : float
        Objective, higher is better (pyribs's word). NaN never enters the archive. ``fitness`` is
        an alias, as a keyword and as an attribute: ``EvalResult(fitness=0.5).objective == 0.5``.
    measures : dict of str to float
        Descriptor values the domain computed itself (others come from ``qd.analysis``).
    trace : list of Span
        Spans recorded while the configuration ran.
    metrics : dict
        Free-form numbers for reports (accuracy per instance, ...).
    feedback : str
        Short text for LLM operators: what went wrong, what the score means.
    status : {"ok", "invalid", "error", "timeout", "crash"}
        Only ``"ok"`` results with a finite objective enter the archive.
    error : str
        Error message when ``status`` is not ``"ok"``.
    scores : list of float, optional
        One score per instance (example, question, seed) when the objective is an average over
        instances; stored with the evaluation so means, standard errors and per-instance
        comparisons are available (see ``qd.noise``).
    """

    objective: float = float("nan")
    measures: dict[str, float] = field(default_factory=dict)
    trace: Trace = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    feedback: str = ""
    status: Status = "ok"
    error: str = ""
    scores: list[float] | None = None

    def __init__(self, objective: float = float("nan"), measures: dict[str, float] | None = None,
                 trace: Trace | None = None, metrics: dict[str, Any] | None = None, feedback: str = "",
                 status: Status = "ok", error: str = "", scores: list[float] | None = None, *,
                 fitness: Any = _UNSET) -> None:
        if fitness is not _UNSET:
            if not (isinstance(objective, float) and math.isnan(objective)):
                raise TypeError("EvalResult takes objective or its alias fitness, not both")
            objective = fitness
        self.objective = objective
        self.measures = {} if measures is None else measures
        self.trace = [] if trace is None else trace
        self.metrics = {} if metrics is None else metrics
        self.feedback = feedback
        self.status = status
        self.error = error
        self.scores = scores

    @property
    def fitness(self) -> float:
        """Alias of :attr:`objective` (the name qd used before; still accepted)."""
        return self.objective

    @fitness.setter
    def fitness(self, value: float) -> None:
        self.objective = value

    @property
    def usable(self) -> bool:
        """True when the result may enter an archive (status ok, finite objective)."""
        return self.status == "ok" and math.isfinite(self.objective)

    @classmethod
    def failure(cls, status: Status, error: str) -> EvalResult:
        """A result for an evaluation that did not finish normally."""
        return cls(status=status, error=error, feedback=f"{status}: {error}"[:500])


class MalformedResult(ValueError):
    """A result or span returned by user code has a field of the wrong type; the message names it."""


# Span fields with a declared type: name -> (check, what is allowed). Other keys pass through.
def _is_int(v: Any) -> bool:
    return type(v) is int or (isinstance(v, numbers.Integral) and not isinstance(v, bool))


def _is_real(v: Any) -> bool:
    # plain floats and ints first: the ABC check costs more than the rest of a cheap evaluation's checks
    return type(v) is float or type(v) is int or (isinstance(v, numbers.Real) and not isinstance(v, bool))


_SPAN_FIELDS: dict[str, tuple[Any, str]] = {
    "id": (_is_int, "an integer"),
    "parent_id": (lambda v: v is None or _is_int(v), "an integer or None"),
    "deps": (lambda v: isinstance(v, (list, tuple)) and all(_is_int(d) for d in v), "a list of span ids"),
    "kind": (lambda v: isinstance(v, str), "a string"),
    "name": (lambda v: isinstance(v, str), "a string"),
    "model": (lambda v: isinstance(v, str), "a string"),
    "tokens_in": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "tokens_out": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "cached": (lambda v: isinstance(v, bool), "true or false"),
    "latency_s": (lambda v: _is_real(v) and math.isfinite(v) and v >= 0, "a finite number >= 0"),
    "start_s": (lambda v: _is_real(v) and math.isfinite(v), "a finite number"),
    "ok": (lambda v: isinstance(v, bool), "true or false"),
    "error": (lambda v: isinstance(v, str), "a string"),
    "cost_usd": (lambda v: _is_real(v) and math.isfinite(v) and v >= 0, "a finite number >= 0"),
    "input": (lambda v: isinstance(v, str), "a string (the prompt text)"),
    "output": (lambda v: isinstance(v, str), "a string (the answer text)"),
    "example": (_is_int, "an integer (the example's index)"),
}


def _bad(field_name: str, allowed: str, value: Any) -> MalformedResult:
    text = repr(value)
    text = text if len(text) <= 60 else text[:57] + "..."
    return MalformedResult(f"{field_name} must be {allowed}, got {text} ({type(value).__name__})")


def check_span(span: Any, index: int = 0) -> Span:
    """A span from user code with its typed fields checked and numbers made plain Python numbers.

    Raises
    ------
    MalformedResult
        Naming the span (``trace[i]``) and the field.
    """
    where = f"trace[{index}]"
    if not isinstance(span, dict):
        raise _bad(where, "a dict (a Span)", span)
    out: dict[str, Any] = dict(span)
    for name, (ok, allowed) in _SPAN_FIELDS.items():
        if name in out and not ok(out[name]):
            raise _bad(f"{where}.{name}", allowed, out[name])
    for name in ("id", "tokens_in", "tokens_out", "example"):
        if name in out:
            out[name] = int(out[name])
    for name in ("latency_s", "start_s", "cost_usd"):
        if name in out:
            out[name] = float(out[name])
    if "deps" in out:
        out["deps"] = [int(d) for d in out["deps"]]
    return out  # type: ignore[return-value]


def check_result(result: Any) -> EvalResult:
    """A result from user code, checked field by field where it comes back from the domain.

    Numbers (numpy scalars included) become plain floats; the result is otherwise unchanged (and
    returned itself when nothing needed converting).

    Raises
    ------
    MalformedResult
        Naming the first field that is not of its declared type (``objective``, ``measures['x']``,
        ``trace[3].tokens_in``, ...).
    """
    if not isinstance(result, EvalResult):
        raise _bad("the result", "an EvalResult", result)
    if result.status not in STATUSES:
        raise _bad("status", f"one of {', '.join(STATUSES)}", result.status)
    if not _is_real(result.objective):
        raise _bad("objective", "a number (NaN when there is none)", result.objective)
    if not isinstance(result.measures, dict):
        raise _bad("measures", "a dict of name -> number", result.measures)
    for name, value in result.measures.items():
        if not isinstance(name, str):
            raise _bad(f"measures key {name!r}", "a string", name)
        if not _is_real(value):
            raise _bad(f"measures[{name!r}]", "a number", value)
    for name in ("feedback", "error"):
        if not isinstance(getattr(result, name), str):
            raise _bad(name, "a string", getattr(result, name))
    if not isinstance(result.metrics, dict):
        raise _bad("metrics", "a dict", result.metrics)
    if result.scores is not None:
        if not isinstance(result.scores, (list, tuple)):
            raise _bad("scores", "a list of numbers or None", result.scores)
        for i, value in enumerate(result.scores):
            if not _is_real(value):
                raise _bad(f"scores[{i}]", "a number", value)
    if not isinstance(result.trace, (list, tuple)):
        raise _bad("trace", "a list of spans", result.trace)
    if (not result.trace and type(result.trace) is list and type(result.fitness) is float and result.scores is None
            and all(type(v) is float for v in result.measures.values())):
        return result  # already plain (a domain that computes: no spans, float numbers): nothing to convert
    trace = [check_span(s, i) for i, s in enumerate(result.trace)]
    return EvalResult(objective=float(result.objective), measures={k: float(v) for k, v in result.measures.items()},
                      trace=trace, metrics=result.metrics, feedback=result.feedback, status=result.status,
                      error=result.error, scores=None if result.scores is None else [float(v) for v in result.scores])
