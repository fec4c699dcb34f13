"""Record the execution trace of a running configuration: LLM calls, tool calls and steps.

A :class:`Tracer` collects :class:`~qd.result.Span` dicts while it is active. The active tracer
and the innermost open span live in :mod:`contextvars`, so

* work in another thread is *not* recorded unless that thread runs in a copy of the context
  (``contextvars.copy_context().run(...)``; ``asyncio`` tasks and ``loop.run_in_executor``
  with a copied context do this), so concurrent evaluations in one process never mix traces;
* asyncio tasks created inside the ``with Tracer()`` block record into it, each with its own
  innermost-span stack.

Span conventions
----------------
``id``
    0, 1, 2, ... in the order spans were opened (an open span is already in ``spans``).
``parent_id``
    The innermost span open in the recording context (nesting, not data flow).
``deps``
    Ids whose outputs this operation consumed (data flow; defines the critical path).
``start_s``
    Wall-clock epoch seconds (``time.time()``), like :class:`qd.llm.LLMClient` records.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from qd.result import Span

__all__ = ["Tracer", "active_tracer", "span", "traced", "record_llm_call", "export_trace_json", "KINDS"]

KINDS: tuple[str, ...] = ("llm", "tool", "step")

_TRACER: contextvars.ContextVar[Tracer | None] = contextvars.ContextVar("qd_tracer", default=None)
# Innermost open span id, per context: asyncio tasks and copied contexts each get their own stack.
_PARENT: contextvars.ContextVar[int | None] = contextvars.ContextVar("qd_span_parent", default=None)

F = TypeVar("F", bound=Callable[..., Any])


def _clean_deps(deps: Iterable[int | None] | None) -> list[int]:
    # Callers pass response.span_id straight through; it is None when no tracer was active.
    if deps is None:
        return []
    if isinstance(deps, (int, str)):
        raise ValueError(f"deps must be a sequence of span ids, got {deps!r}")
    return [int(d) for d in deps if d is not None]


class Tracer:
    """Collect the spans of everything run inside ``with Tracer() as t:``.

    Tracers nest: an inner tracer replaces the outer one until it exits (spans go to the
    innermost tracer only). A tracer is re-entrant only sequentially; it is thread-safe for
    recording from several threads that share its context.

    Examples
    --------
    >>> with Tracer() as t:
    ...     with span("tool", "search") as sid:
    ...         record_llm_call(name="answer", model="m", tokens_in=10, tokens_out=2,
    ...                         cached=False, latency_s=0.1, start_s=0.0, deps=[sid])
    1
    >>> [s["kind"] for s in t.spans]
    ['tool', 'llm']
    """

    def __init__(self) -> None:
        self._spans: list[Span] = []
        self._lock = threading.Lock()
        self._tokens: list[tuple[contextvars.Token, contextvars.Token]] = []
        self.start_wall: float = time.time()

    # -- context manager ------------------------------------------------------------------------
    def __enter__(self) -> Tracer:
        self.start_wall = time.time()
        # Reset the parent: spans of an outer tracer are not valid ids in this one.
        self._tokens.append((_TRACER.set(self), _PARENT.set(None)))
        return self

    def __exit__(self, *exc: Any) -> None:
        tracer_token, parent_token = self._tokens.pop()
        _PARENT.reset(parent_token)
        _TRACER.reset(tracer_token)

    # -- recording ------------------------------------------------------------------------------
    @property
    def spans(self) -> list[Span]:
        """Snapshot of the recorded spans, ordered by id (open spans included)."""
        with self._lock:
            return [dict(s) for s in self._spans]  # type: ignore[misc]

    def __len__(self) -> int:
        return len(self._spans)

    def _add(self, **fields: Any) -> int:
        with self._lock:
            sid = len(self._spans)
            record: Span = {"id": sid, **fields}  # type: ignore[typeddict-item]
            self._spans.append(record)
            return sid

    def _update(self, sid: int, **fields: Any) -> None:
        with self._lock:
            self._spans[sid].update(fields)  # type: ignore[typeddict-item]

    def add_span(self, *, kind: str, name: str, parent_id: int | None = None, deps: Sequence[int | None] | None = None,
                 model: str = "", tokens_in: int = 0, tokens_out: int = 0, cached: bool = False,
                 latency_s: float = 0.0, start_s: float | None = None, ok: bool = True, error: str = "",
                 cost_usd: float = 0.0) -> int:
        """Append a finished span directly (no context needed) and return its id.

        Useful for domains that simulate calls, or to replay a trace.
        """
        if kind not in KINDS:
            raise ValueError(f"span kind {kind!r} not in {list(KINDS)}")
        return self._add(
            parent_id=parent_id, deps=_clean_deps(deps), kind=kind, name=str(name), model=str(model),
            tokens_in=int(tokens_in), tokens_out=int(tokens_out), cached=bool(cached), latency_s=float(latency_s),
            start_s=float(time.time() if start_s is None else start_s), ok=bool(ok), error=str(error),
            cost_usd=float(cost_usd),
        )


def active_tracer() -> Tracer | None:
    """The tracer recording in the current context, or ``None``."""
    return _TRACER.get()


def current_span_id() -> int | None:
    """Id of the innermost open span in the current context, or ``None``."""
    return _PARENT.get() if _TRACER.get() is not None else None


@contextlib.contextmanager
def span(kind: str, name: str, deps: Sequence[int | None] | None = None) -> Iterator[int | None]:
    """Record a tool call or step around a block; yields its span id (``None`` without a tracer).

    Spans and LLM calls recorded inside the block get this span as ``parent_id``. An exception
    marks the span ``ok=False`` with the error text and propagates.

    Parameters
    ----------
    kind : {"llm", "tool", "step"}
        Span kind (LLM calls are normally recorded by :func:`record_llm_call`).
    name : str
        Operation name (``"retrieve"``, ``"chunk"``, ...).
    deps : sequence of int, optional
        Span ids whose outputs this operation consumes.
    """
    if kind not in KINDS:
        raise ValueError(f"span kind {kind!r} not in {list(KINDS)}")
    tracer = _TRACER.get()
    if tracer is None:
        yield None
        return
    start_wall, start = time.time(), time.perf_counter()
    sid = tracer.add_span(kind=kind, name=name, parent_id=_PARENT.get(), deps=deps, start_s=start_wall)
    token = _PARENT.set(sid)
    try:
        yield sid
    except BaseException as exc:
        tracer._update(sid, ok=False, error=f"{type(exc).__name__}: {exc}"[:500])
        raise
    finally:
        _PARENT.reset(token)
        tracer._update(sid, latency_s=time.perf_counter() - start)


def traced(kind: str = "tool", name: str | None = None) -> Callable[[F], F]:
    """Decorator recording each call of a sync or async function as a span.

    Parameters
    ----------
    kind : {"llm", "tool", "step"}
        Span kind.
    name : str, optional
        Span name; defaults to the function's ``__qualname__``.
    """
    if kind not in KINDS:
        raise ValueError(f"span kind {kind!r} not in {list(KINDS)}")

    def decorate(fn: F) -> F:
        label = name or fn.__qualname__
        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with span(kind, label):
                    return await fn(*args, **kwargs)
            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with span(kind, label):
                return fn(*args, **kwargs)
        return wrapper  # type: ignore[return-value]

    return decorate


def record_llm_call(*, name: str, model: str, tokens_in: int, tokens_out: int, cached: bool, latency_s: float,
                    start_s: float, ok: bool = True, error: str = "", cost_usd: float = 0.0,
                    deps: Sequence[int | None] | None = None) -> int | None:
    """Record one logical LLM call (cache hits too) with the active tracer.

    Returns the span id, or ``None`` (doing nothing) when no tracer is active. The parent is
    the innermost open span of the calling context.
    """
    tracer = _TRACER.get()
    if tracer is None:
        return None
    return tracer.add_span(kind="llm", name=name, parent_id=_PARENT.get(), deps=deps, model=model,
                           tokens_in=tokens_in, tokens_out=tokens_out, cached=cached, latency_s=latency_s,
                           start_s=start_s, ok=ok, error=error, cost_usd=cost_usd)


def export_trace_json(trace: Sequence[Span] | Tracer, path: str | Path, meta: dict[str, Any] | None = None) -> Path:
    """Write a trace (or a tracer's spans) as JSON: ``{"spans": [...], "summary": {...}}``.

    ``start_s`` is also given relative to the earliest span as ``rel_start_s`` to make
    timelines readable. ``meta`` (e.g. the configuration and its score) is stored under
    ``"meta"`` when given.
    """
    spans = trace.spans if isinstance(trace, Tracer) else [dict(s) for s in trace]
    t0 = min((s.get("start_s", 0.0) for s in spans), default=0.0)
    for s in spans:
        s["rel_start_s"] = round(float(s.get("start_s", 0.0)) - t0, 6)
    from qd.analysis.descriptors import summarize  # late import: descriptors imports nothing from here

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {"spans": spans, "summary": summarize(spans)}
    if meta is not None:
        data["meta"] = meta
    path.write_text(json.dumps(data, indent=1, default=str))
    return path
