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
``input``, ``output``
    An LLM call's prompt and answer text where the recorder saw them, clipped to the tracer's
    ``text_chars`` (:func:`qd.result.clip_text`; ``[run] trace_text_chars``); absent with 0.

Inferred data flow
------------------
An LLM call recorded without ``deps`` (``deps=None``: every call :mod:`qd.analysis.autotrace`
observes, and :func:`record_llm_call` without ``deps``) gets them inferred from the *flow* it runs
in. A flow is one thread of control: the evaluation's own thread, a thread or asyncio task it
starts, a function it submits to a thread pool. The rule:

* a call depends on the previous call of its own flow (three calls in a row: a chain of 3);
  a failed call is not followed (it gave no output): a retry depends on what it depended on;
* a flow started by another inherits, for its first call, the starter's previous call, and the
  last calls of the starter's earlier flows it has waited for (a thread pool future's result, a
  thread join, a pool shutdown, a finished asyncio task);
* a flow's next call after it started others depends on the last call of each of those
  instead (a join: five concurrent calls and then one that reads them give a critical path of 2
  and a fan-out of 5; a call that follows a call of a started flow does not also depend on
  what that flow followed, so a chain through threads keeps a fan-out of 1).

Examples
--------
An evaluation that runs several examples (instances: questions, test cases) runs each inside
:func:`example_scope` (``FunctionDomain``, ``DSPyDomain`` and the retrieval demo do). Every span
recorded in that context, in the threads and tasks it starts too, carries the example's index as
``example``, and the example starts a flow of its own with nothing before it: inferred deps never
link two examples, however many run at once and in whatever order. Descriptors compute structure
per example (:mod:`qd.analysis.descriptors`).

Limits: the rule sees control flow, not values, so a call that ignores an earlier call's output
still depends on it, and work handed between flows through a queue or shared variable is not
seen. Threads and tasks are recognised when started through ``ThreadPoolExecutor.submit``,
``threading.Thread.start`` or an asyncio event loop's ``create_task`` (with
:mod:`qd.analysis.autotrace` installed, as in every evaluation). Explicit ``deps`` (``[]``
included) always win; a call with explicit deps still becomes its flow's previous call.
"""
from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import functools
import inspect
import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from qd.analysis.descriptors import summarize
from qd.llm.prices import DEFAULT_PRICES, Price, cost_of
from qd.result import DEFAULT_TRACE_TEXT_CHARS, Span, clip_text

__all__ = ["Tracer", "active_tracer", "as_text", "span", "traced", "record_llm_call", "export_trace_json", "KINDS",
           "example_scope", "PendingCall", "begin_llm_call", "finish_llm_call", "take_untraced", "fork_context",
           "run_forked", "flow_joined"]

KINDS: tuple[str, ...] = ("llm", "tool", "step")

_TRACER: contextvars.ContextVar[Tracer | None] = contextvars.ContextVar("qd_tracer", default=None)
# Innermost open span id, per context: asyncio tasks and copied contexts each get their own stack.
_PARENT: contextvars.ContextVar[int | None] = contextvars.ContextVar("qd_span_parent", default=None)
# The flow (thread of control) of the current context, for inferred deps (see the module docstring).
_FLOW: contextvars.ContextVar[_Flow | None] = contextvars.ContextVar("qd_flow", default=None)

# The example (instance) of the evaluation the current context runs, if any (see example_scope).
_EXAMPLE: contextvars.ContextVar[int | None] = contextvars.ContextVar("qd_example", default=None)

# Tracers entered and not yet exited in this process: a call seen outside any tracer's context is
# attributed to the only open one (serial and Ray task mode run one evaluation per process).
_OPEN: list[Tracer] = []
_OPEN_LOCK = threading.Lock()

F = TypeVar("F", bound=Callable[..., Any])


def _clean_deps(deps: Iterable[int | None] | None) -> list[int]:
    # Callers pass response.span_id straight through; it is None when no tracer was active.
    if deps is None:
        return []
    if isinstance(deps, (int, str)):
        raise ValueError(f"deps must be a sequence of span ids, got {deps!r}")
    return [int(d) for d in deps if d is not None]


def _inferred_deps(tracer: Tracer, flow: _Flow) -> list[int]:
    """Deps of a call recorded without any (module docstring); the flow's started flows are joined by it.

    The caller holds the tracer's lock.
    """
    frontier = flow.frontier()
    flow.forks = []
    return _latest(tracer, frontier)


def _owner() -> tuple[int, int]:
    """Identity of the running thread of control: (thread, asyncio task or 0)."""
    loop = asyncio._get_running_loop()
    task = asyncio.current_task(loop) if loop is not None else None
    return threading.get_ident(), id(task) if task is not None else 0


class _Flow:
    """One thread of control inside a tracer: its previous call(s) and the flows it started."""

    __slots__ = ("owner", "last", "forks", "joined")

    def __init__(self, owner: tuple[int, int] | None, last: list[int]) -> None:
        self.owner = owner  # None until the thread or task made for it first records
        self.last = last  # the flow's previous call, or what it inherited when it started
        self.forks: list[_Flow] = []
        self.joined = False  # its starter waited for it to finish (see flow_joined)

    def frontier(self) -> list[int]:
        out = list(self.last)
        for fork in self.forks:
            out += fork.frontier()
        return out


def _latest(tracer: Tracer, ids: list[int]) -> list[int]:
    """``ids`` without those another of them already follows (through recorded deps).

    A call after a join depends on the joined flows' last calls, not also on the calls those
    followed: an extra edge would count once more in a call's fan-out (``max_fanout``). Deps
    point to earlier span ids, so the walk stops below the smallest of ``ids``. The caller holds
    the tracer's lock.
    """
    ids = list(dict.fromkeys(ids))
    if len(ids) < 2:
        return ids
    floor, spans, followed = min(ids), tracer._spans, set()
    stack = [d for i in ids if i < len(spans) for d in spans[i]["deps"]]
    while stack:
        d = stack.pop()
        if d >= floor and d not in followed:
            followed.add(d)
            if d < len(spans):
                stack.extend(spans[d]["deps"])
    return [i for i in ids if i not in followed]


def _current_flow(tracer: Tracer) -> _Flow:
    """The flow of the calling context (a thread or task not started through fork_context gets a new one)."""
    flow = _FLOW.get()
    me = _owner()
    if flow is not None:
        if flow.owner == me:
            return flow
        if flow.owner is None:  # made by fork_context for the thread or task now running
            flow.owner = me
            return flow
        forked = getattr(_FORKED, "flow", None)
        if forked is not None and forked.owner in (None, me):  # run_forked's flow, under a context
            forked.owner = me                                  # the function switched to itself
            _FLOW.set(forked)
            return forked
    child = _Flow(me, list(flow.last) if flow is not None else [])
    if flow is not None:
        with tracer._lock:
            flow.forks.append(child)
    _FLOW.set(child)  # this context is a copy made for the thread or task: the parent keeps its flow
    return child


def fork_context() -> tuple[contextvars.Context, _Flow] | None:
    """A copy of the calling context for a thread or task about to start, with a flow of its own.

    Returns ``None`` when no tracer is active. The new flow starts from the caller's previous
    call and from the last calls of the caller's earlier threads and tasks it has waited for
    (so work started after a join depends on them; see :func:`flow_joined`).
    """
    tracer = _TRACER.get()
    if tracer is None:
        return None
    parent = _current_flow(tracer)
    with tracer._lock:
        joined = [fork for fork in parent.forks if fork.joined]
        if joined:  # the starter has waited for them: it continues after their calls
            parent.last = _latest(tracer, parent.last + [i for fork in joined for i in fork.frontier()])
            parent.forks = [fork for fork in parent.forks if not fork.joined]
        child = _Flow(None, list(parent.last))
        parent.forks.append(child)
    ctx = contextvars.copy_context()
    ctx.run(_FLOW.set, child)
    return ctx, child


_FORKED = threading.local()  # the flow run_forked runs its function in, on this thread


def run_forked(ctx: contextvars.Context, flow: _Flow, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
    """Run ``fn`` in ``ctx`` and ``flow`` (from :func:`fork_context`) on this thread.

    A function that runs its work in a context of its own (``asyncio.to_thread`` wraps it in a
    copy of its caller's context) still records in ``flow``, so calls made through it keep their
    chain and are joined when the future's result is read.
    """
    def inner() -> Any:
        previous, _FORKED.flow = getattr(_FORKED, "flow", None), flow
        try:
            return fn(*args, **kwargs)
        finally:
            _FORKED.flow = previous

    return ctx.run(inner)


def flow_joined(flow: _Flow) -> None:
    """Mark a flow made by :func:`fork_context` as waited for by its starter.

    Called when the starter gets a thread pool future's result, joins a thread or shuts a pool
    down waiting, and when an asyncio task finishes (its creator can only have resumed by
    awaiting, since the loop runs one task at a time).
    """
    flow.joined = True


@dataclasses.dataclass(eq=False)
class PendingCall:
    """An LLM call in progress (see :func:`begin_llm_call`).

    ``tracer`` is ``None`` for a call no evaluation can own: it is counted as untraced.
    ``flush`` (set by the caller) finishes the call if the tracer exits first (a stream
    never read to its end).
    """

    tracer: Tracer | None
    flow: _Flow | None
    deps: list[int]
    parent_id: int | None
    start_s: float
    t0: float
    in_context: bool
    flush: Callable[[], None] | None = None
    example: int | None = None


_UNTRACED = {"calls": 0, "tokens_in": 0, "tokens_out": 0}
_UNTRACED_LOCK = threading.Lock()


def take_untraced() -> dict[str, int]:
    """Untraced LLM calls (and their tokens) seen in this process since the last take; resets them.

    A call is untraced when it runs outside every tracer's context while zero or several
    tracers are open in the process, so no evaluation can be said to own it.
    """
    with _UNTRACED_LOCK:
        out = dict(_UNTRACED)
        for key in _UNTRACED:
            _UNTRACED[key] = 0
    return out


def begin_llm_call(deps: Sequence[int | None] | None = None) -> PendingCall:
    """Start recording one LLM call; finish it with :func:`finish_llm_call`.

    The call belongs to the tracer of the calling context, else to the only tracer open in
    the process, else to none (untraced). ``deps=None`` infers them (module docstring).
    """
    tracer = _TRACER.get()
    if tracer is not None and not tracer._entered:
        # A thread that outlived the evaluation that started it (a library's lazily started worker
        # serving later evaluations through a queue): that trace is closed; the fallback below
        # gives the call to the only open evaluation, marked ``attributed``.
        tracer = None
    if tracer is not None:
        flow = _current_flow(tracer)
        call = PendingCall(tracer, flow, [], _PARENT.get(), time.time(), time.perf_counter(), True,
                           example=_EXAMPLE.get())
        with tracer._lock:
            call.deps = _inferred_deps(tracer, flow) if deps is None else _clean_deps(deps)
            tracer._pending.add(call)
        return call
    with _OPEN_LOCK:
        only = _OPEN[0] if len(_OPEN) == 1 else None
    call = PendingCall(only, None, _clean_deps(deps), None, time.time(), time.perf_counter(), False)
    if only is not None:
        with only._lock:
            only._pending.add(call)
    return call


def finish_llm_call(call: PendingCall, *, name: str, model: str, tokens_in: int, tokens_out: int,
                    cached: bool = False, ok: bool = True, error: str = "", estimated: bool = False,
                    via: str = "", cancelled: bool = False, input: Any = None, output: Any = None) -> int | None:
    """Record a call begun by :func:`begin_llm_call` as an ``llm`` span; its id, or ``None`` if untraced.

    The cost comes from the tracer's price table (:func:`qd.llm.prices.cost_of`); a model missing
    from it is marked ``unpriced`` (and costs 0). ``estimated`` marks token counts the endpoint did
    not report; ``cancelled`` a call the client gave up on (cancelled, timed out, or still without
    an answer when its evaluation ended) after sending it. ``input`` and ``output`` (prompt and
    answer text) are kept clipped to the tracer's ``text_chars``.
    """
    latency = time.perf_counter() - call.t0
    tracer = call.tracer
    if tracer is None:
        with _UNTRACED_LOCK:
            _UNTRACED["calls"] += 1
            _UNTRACED["tokens_in"] += int(tokens_in)
            _UNTRACED["tokens_out"] += int(tokens_out)
        return None
    cost = cost_of(tracer.prices, model, tokens_in, tokens_out)
    extra: dict[str, Any] = {}
    if estimated:
        extra["tokens_estimated"] = True
    if cost is None:
        extra["unpriced"] = True
    if via:
        extra["via"] = via
    if cancelled:
        extra["cancelled"] = True
    if not call.in_context:
        extra["attributed"] = "process"
    extra.update(tracer.text(input, output))
    if call.example is not None:
        extra["example"] = call.example
    with tracer._lock:
        if call not in tracer._pending:
            return None  # already flushed when the tracer exited
        tracer._pending.discard(call)
        sid = len(tracer._spans)
        tracer._spans.append({  # type: ignore[typeddict-unknown-key]
            "id": sid, "parent_id": call.parent_id, "deps": call.deps, "kind": "llm", "name": str(name),
            "model": str(model), "tokens_in": int(tokens_in), "tokens_out": int(tokens_out), "cached": bool(cached),
            "latency_s": latency, "start_s": call.start_s, "ok": bool(ok), "error": str(error)[:500],
            "cost_usd": cost or 0.0, **extra})
        if call.flow is not None:  # a failed attempt gave nothing to follow: its retry takes its place
            call.flow.last = [sid] if ok else list(call.deps)
    return sid


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

    def __init__(self, prices: Mapping[str, Price] | None = None, text_chars: int = DEFAULT_TRACE_TEXT_CHARS) -> None:
        self._spans: list[Span] = []
        self._lock = threading.Lock()
        self._tokens: list[tuple[contextvars.Token, ...]] = []
        self._pending: set[PendingCall] = set()
        self._entered = 0  # open `with` blocks: a closed tracer takes no more calls from stray threads
        self.prices: Mapping[str, Price] = DEFAULT_PRICES if prices is None else prices
        self.text_chars = int(text_chars)  # characters of prompt and answer text kept per span (0: none)
        self.start_wall: float = time.time()

    # -- context manager ------------------------------------------------------------------------
    def __enter__(self) -> Tracer:
        self.start_wall = time.time()
        # Reset the parent, the flow and the example: they belong to an outer tracer's spans.
        self._tokens.append((_TRACER.set(self), _PARENT.set(None), _FLOW.set(_Flow(_owner(), [])),
                             _EXAMPLE.set(None)))
        with _OPEN_LOCK:
            _OPEN.append(self)
            self._entered += 1
        return self

    def __exit__(self, *exc: Any) -> None:
        with _OPEN_LOCK:
            _OPEN.remove(self)
            self._entered -= 1
        with self._lock:
            unfinished = list(self._pending)
        for call in unfinished:  # streams never read to the end: record what was seen
            if call.flush is not None:
                call.flush()
        tracer_token, parent_token, flow_token, example_token = self._tokens.pop()
        _EXAMPLE.reset(example_token)
        _FLOW.reset(flow_token)
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

    def text(self, input: Any, output: Any) -> dict[str, str]:
        """A span's ``input``/``output`` fields: the texts given (:func:`as_text`) clipped to :attr:`text_chars`."""
        if self.text_chars <= 0:
            return {}
        return {k: clip_text(as_text(v), self.text_chars) for k, v in (("input", input), ("output", output))
                if v is not None}

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
                 cost_usd: float = 0.0, example: int | None = None, input: Any = None, output: Any = None) -> int:
        """Append a finished span directly (no context needed) and return its id.

        Useful for domains that simulate calls, or to replay a trace. ``example`` defaults to the
        example the calling context runs (:func:`example_scope`), if any. ``input`` and ``output``
        (prompt and answer text) are kept clipped to :attr:`text_chars`.
        """
        if kind not in KINDS:
            raise ValueError(f"span kind {kind!r} not in {list(KINDS)}")
        example = _EXAMPLE.get() if example is None else example
        extra = {} if example is None else {"example": int(example)}
        return self._add(
            parent_id=parent_id, deps=_clean_deps(deps), kind=kind, name=str(name), model=str(model),
            tokens_in=int(tokens_in), tokens_out=int(tokens_out), cached=bool(cached), latency_s=float(latency_s),
            start_s=float(time.time() if start_s is None else start_s), ok=bool(ok), error=str(error),
            cost_usd=float(cost_usd), **extra, **self.text(input, output),
        )


def as_text(value: Any) -> str:
    """A prompt or answer as one text: a string as it is, chat messages as ``role: content`` lines.

    Message content given as parts (``[{"type": "text", "text": ...}, ...]``) keeps its text parts;
    anything else is shown as compact JSON.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "content" in value:
        content = value["content"]
        role = value.get("role")
        return f"{role}: {as_text(content)}" if role else as_text(content)
    if isinstance(value, dict) and isinstance(value.get("text"), str):
        return value["text"]
    if isinstance(value, (list, tuple)):
        return "\n".join(as_text(v) for v in value)
    return json.dumps(value, default=str, separators=(",", ":"))


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


@contextlib.contextmanager
def example_scope(index: int, name: str = "example") -> Iterator[int | None]:
    """Run one example (instance) of an evaluation: yields the id of its ``step`` span (``None`` without a tracer).

    Every span recorded inside, in threads and tasks started inside too, carries ``example=index``,
    and the example's calls infer their deps from a flow of their own that starts empty, so no call
    depends on another example's (module docstring, Examples). Descriptors compute structure
    (``critical_path``, ``max_fanout``) per example and give the largest.

    Parameters
    ----------
    index : int
        The example's index in the evaluation (its position among the scored examples).
    name : str
        Name of the example's step span.
    """
    if isinstance(index, bool) or not isinstance(index, int):
        raise TypeError(f"example index must be an int, got {index!r}")
    if _TRACER.get() is None:
        yield None
        return
    example_token = _EXAMPLE.set(index)
    flow_token = _FLOW.set(_Flow(_owner(), []))
    try:
        with span("step", name) as sid:
            yield sid
    finally:
        _FLOW.reset(flow_token)
        _EXAMPLE.reset(example_token)


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
                    start_s: float, ok: bool = True, error: str = "", cost_usd: float | None = None,
                    deps: Sequence[int | None] | None = None, input: Any = None, output: Any = None) -> int | None:
    """Record one logical LLM call (cache hits too) with the active tracer.

    Returns the span id, or ``None`` (doing nothing) when no tracer is active. The parent is
    the innermost open span of the calling context; ``deps=None`` infers the deps from the
    calling flow (module docstring). ``cost_usd`` is the caller's price of the call; ``None``
    (no price from the caller) prices it from the tracer's table (:func:`qd.llm.prices.cost_of`),
    and a model missing there too costs 0 and is marked ``unpriced``. ``input`` and ``output`` are
    the prompt (a string or chat messages) and the answer, kept as text (:func:`as_text`) clipped
    to the tracer's ``text_chars``.
    """
    tracer = _TRACER.get()
    if tracer is None:
        return None
    flow = _current_flow(tracer)
    if deps is None:
        with tracer._lock:
            deps = _inferred_deps(tracer, flow)
    if cost_usd is None:
        cost_usd = cost_of(tracer.prices, model, tokens_in, tokens_out)
    sid = tracer.add_span(kind="llm", name=name, parent_id=_PARENT.get(), deps=deps, model=model,
                          tokens_in=tokens_in, tokens_out=tokens_out, cached=cached, latency_s=latency_s,
                          start_s=start_s, ok=ok, error=error, cost_usd=cost_usd or 0.0, input=input, output=output)
    with tracer._lock:
        flow.last = [sid] if ok else list(deps)
        if cost_usd is None:
            tracer._spans[sid]["unpriced"] = True  # type: ignore[typeddict-unknown-key]
    return sid


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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {"spans": spans, "summary": summarize(spans)}
    if meta is not None:
        data["meta"] = meta
    path.write_text(json.dumps(data, indent=1, default=str))
    return path
