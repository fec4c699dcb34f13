"""Descriptors: numbers that place an evaluated configuration in the map.

Every descriptor is a function ``f(config, result) -> float``.

Examples and evaluations
------------------------
An evaluation usually runs its configuration on several examples (questions, test cases); each
runs inside :func:`qd.analysis.tracer.example_scope`, which marks its spans with ``example``.
A trace without marks is one example.

* **Structure** (``critical_path``, ``max_fanout``, ``max_prompt_tokens``) is computed **per
  example, and the evaluation gets the largest** (max over examples; spans outside every example
  form one more group). So how many examples run at once, and in which order, never changes them,
  and they are the pipeline's own: a chain of 2 calls gives a critical path of 2 whether 1 or 3
  examples ran, one after another or 8 at once.
* **Volume** is either **per evaluation** (the sum over all its examples: ``llm_calls``,
  ``tool_calls``, ``tokens_in``, ``tokens_out``, ``tokens_total``, ``cost_usd``; ``latency_s``,
  the evaluation's wall time, which also depends on how many examples run at once) or **per
  example**, with ``_per_example`` in the name: ``llm_calls_per_example``,
  ``tokens_total_per_example``, ``cost_usd_per_example`` (the evaluation's total over its number
  of examples) and ``latency_s_per_example`` (the mean of each example's own wall time). Per
  example is what to map when evaluations score different numbers of examples (``sample=``, a
  validation set of another size).

Failed calls
------------
One rule for every descriptor: a failed LLM call (an HTTP error, a retried attempt, a call
cancelled or cut off; ``ok=False``) is a call, counted with the tokens it is known to have used
(``llm_calls``, tokens, cost, prompt size, latency), but it produced no output: it is not a node
of the data-flow graph, so it adds no length to ``critical_path`` and no width to ``max_fanout``
(a retry stands in its place).

Dynamic descriptors read ``result.trace`` (dynamic program analysis):

``llm_calls``
    Logical LLM calls of the evaluation (cache hits count: the configuration asked for them).
``tool_calls``
    Spans of kind ``"tool"`` of the evaluation.
``tokens_in``, ``tokens_out``, ``tokens_total``
    Tokens of all the evaluation's LLM calls (cache hits carry their original tokens).
``critical_path``
    Longest chain of dependent LLM calls through the ``deps`` data-flow DAG, per example (max).
    Non-LLM spans pass dependencies through without adding length, and a tool/step span's output
    is taken to depend on the LLM calls made inside it (its children) as well as on its ``deps``:
    an LLM call that consumes a tool whose result came from an LLM call is a chain of 2.
``max_fanout``
    The widest single fan-out of LLM calls, per example (max): the larger of (a) the most LLM
    calls that list one span in their ``deps`` and (b) the most LLM calls launched under the same
    parent span with the same ``deps`` (siblings that could run in parallel, e.g. the map step of
    map/reduce or ``k`` votes). A sequential chain has fan-out 1; no LLM calls gives 0.
``latency_s``
    Wall time covered by the evaluation's trace: latest span end minus earliest span start.
``max_prompt_tokens``
    Largest single prompt (the long-context error regime).
``cost_usd``
    Sum of the evaluation's LLM calls' nominal cost.
``llm_calls_per_example``, ``tokens_total_per_example``, ``cost_usd_per_example``
    The evaluation's ``llm_calls``, ``tokens_total`` and ``cost_usd`` over its number of examples.
``latency_s_per_example``
    Mean over the examples of each one's wall time.

Static descriptors read the configuration alone (static program analysis); when the domain's
:class:`~qd.space.Space` is known (always, through :func:`resolve_measures`) they use it:

``n_components``
    Items in ``Seq`` parameters (list items when no space is known); 1 when there are none.
``prompt_chars``
    Total characters of ``Text`` leaves (all string leaves when no space is known).
``max_depth``
    Nesting depth of the configuration: a flat dict is 1, each nested dict or list adds 1.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from qd.references import resolve_reference
from qd.result import EvalResult, Span
from qd.space import Seq, Text

__all__ = [
    "DYNAMIC", "STATIC", "BUILTINS", "SUMMARY_DESCRIPTORS", "Descriptor", "resolve_measures", "available_measures",
    "summarize",
    "llm_calls", "tool_calls", "tokens_in", "tokens_out", "tokens_total", "critical_path", "max_fanout",
    "latency_s", "max_prompt_tokens", "cost_usd", "n_components", "prompt_chars", "max_depth",
    "llm_calls_per_example", "tokens_total_per_example", "cost_usd_per_example", "latency_s_per_example",
    "trace_critical_path", "trace_max_fanout", "critical_path_spans", "trace_examples", "split_examples",
]

Descriptor = Callable[[dict, EvalResult], float]


# -- trace analysis ------------------------------------------------------------------------------
def _llm(trace: Iterable[Span]) -> list[Span]:
    return [s for s in trace if s.get("kind") == "llm"]


def split_examples(trace: Sequence[Span]) -> list[list[Span]]:
    """The trace split by example (``span["example"]``); spans outside every example form one more group.

    A trace without examples is one group; an empty trace gives no group.
    """
    groups: dict[Any, list[Span]] = {}
    for s in trace:
        groups.setdefault(s.get("example"), []).append(s)
    return list(groups.values())


def trace_examples(trace: Sequence[Span]) -> int:
    """Examples the trace ran: distinct ``example`` marks, and 1 when there are none."""
    return max(1, len({s["example"] for s in trace if s.get("example") is not None}))


def _critical_chain(trace: Sequence[Span]) -> list[int]:
    """Span ids of one longest chain of dependent successful LLM calls in one example's spans, first to last.

    The chain runs through ``deps`` and, for tool/step spans, the calls made inside them (module
    docstring), so it may hold tool or step spans (and failed calls, which pass their inputs
    through) between LLM calls; of several longest chains the one ending at the call with the
    lowest span id is taken, and at each step the input with the lowest id.
    """
    by_id = {s["id"]: s for s in trace if "id" in s}
    children: dict[int, list[int]] = defaultdict(list)
    for s in trace:
        parent = s.get("parent_id")
        if parent is not None and parent in by_id and s.get("id") is not None:
            children[parent].append(s["id"])
    depth: dict[int, int] = {}
    best_input: dict[int, int | None] = {}
    on_stack: set[int] = set()

    def inputs(sid: int) -> list[int]:
        s = by_id[sid]
        ins = [d for d in s.get("deps") or () if d in by_id]
        if s.get("kind") != "llm":  # a tool/step result may derive from the calls made inside it
            ins += children.get(sid, [])
        return ins

    # Iterative DFS: traces of big fan-in systems can be deeper than Python's recursion limit.
    for root in by_id:
        if root in depth:
            continue
        stack = [(root, iter(inputs(root)))]
        on_stack.add(root)
        while stack:
            sid, it = stack[-1]
            nxt = next((d for d in it if d not in depth and d not in on_stack), None)
            if nxt is not None:
                on_stack.add(nxt)
                stack.append((nxt, iter(inputs(nxt))))
                continue
            stack.pop()
            on_stack.discard(sid)
            done = sorted(d for d in set(inputs(sid)) if d in depth)  # an input still on the stack closes a cycle
            best = max(done, key=lambda d: depth[d], default=None)  # max keeps the first (lowest id) of ties
            best_input[sid] = best
            depth[sid] = (depth[best] if best is not None else 0) + _length(by_id[sid])
    if not depth or max(depth.values()) == 0:
        return []
    top = max(depth.values())
    end: int | None = min(sid for sid, d in depth.items() if d == top and _length(by_id[sid]))
    chain = []
    while end is not None:
        chain.append(end)
        end = best_input[end]
    chain.reverse()
    # a chain starts at its first counted call: what it read before that adds no length
    first = next(i for i, sid in enumerate(chain) if _length(by_id[sid]))
    return chain[first:]


def _length(s: Span) -> int:
    """What a span adds to a chain: 1 for a successful LLM call; a failed one gave no output (module docstring)."""
    return 1 if s.get("kind") == "llm" and s.get("ok", True) else 0


def critical_path_spans(trace: Sequence[Span]) -> list[int]:
    """Span ids of the chain ``critical_path`` counts: the longest of the examples' chains (the first of ties).

    Each example's chain is one longest chain of dependent successful LLM calls in its spans, first to
    last (module docstring); ``critical_path`` is the number of successful LLM calls on it.
    """
    by_id = {s["id"]: s for s in trace if "id" in s}
    chains = [_critical_chain(group) for group in split_examples(trace)]
    return max(chains, key=lambda c: sum(_length(by_id[sid]) for sid in c), default=[])




def _max_fanout(trace: Sequence[Span]) -> int:
    """Widest fan-out of successful LLM calls in one example's spans."""
    calls = [s for s in _llm(trace) if s.get("ok", True)]
    if not calls:
        return 0
    consumers: Counter = Counter()
    siblings: Counter = Counter()
    for s in calls:
        deps = sorted(set(s.get("deps") or ()))
        consumers.update(deps)
        siblings[(s.get("parent_id"), tuple(deps))] += 1
    return max(max(consumers.values(), default=0), max(siblings.values()))


def trace_critical_path(trace: Sequence[Span]) -> int:
    """Longest chain of dependent LLM calls in ``trace``, per example, the largest (module docstring).

    Dependencies on ids absent from the example's spans are ignored; a cycle (which well-formed
    traces cannot have) is cut where it closes. Failed calls add no length. The chain itself is
    :func:`critical_path_spans`.
    """
    by_id = {s["id"]: s for s in trace if "id" in s}
    return sum(_length(by_id[sid]) for sid in critical_path_spans(trace))


def trace_max_fanout(trace: Sequence[Span]) -> int:
    """Widest fan-out of LLM calls in ``trace``, per example, the largest (module docstring)."""
    return max((_max_fanout(group) for group in split_examples(trace)), default=0)


def _latency(trace: Sequence[Span]) -> float:
    if not trace:
        return 0.0
    start = min(float(s.get("start_s", 0.0)) for s in trace)
    end = max(float(s.get("start_s", 0.0)) + float(s.get("latency_s", 0.0)) for s in trace)
    return max(0.0, end - start)


def _example_latency(trace: Sequence[Span]) -> float:
    """Mean wall time of the examples (of the whole trace when it has none)."""
    marked = [g for g in split_examples(trace) if g[0].get("example") is not None]
    if not marked:
        return _latency(trace)
    return sum(_latency(g) for g in marked) / len(marked)


def summarize(trace: Sequence[Span]) -> dict[str, Any]:
    """Per-evaluation trace summary (stored in the run store): counts, tokens, depth, latency.

    Counts, tokens, cost and latencies are the evaluation's (summed over its examples);
    ``critical_path`` and ``max_fanout`` are per example, the largest (module docstring). Every
    field named like a descriptor (:data:`SUMMARY_DESCRIPTORS`) is that descriptor's value, computed
    by the descriptor function itself; the others (``spans``, ``cached_calls``, ...) are counts no
    descriptor gives.

    Returns
    -------
    dict
        ``spans, examples, llm_calls, tool_calls, steps, cached_calls, failed_calls, cancelled_calls,
        tokens_in, tokens_out, tokens_total, max_prompt_tokens, critical_path, max_fanout, latency_s,
        llm_latency_s, cost_usd, models, unpriced_models, estimated_calls`` (JSON-ready).
    """
    trace = list(trace or ())
    calls = _llm(trace)
    whole = EvalResult(trace=trace)
    value = {name: fn({}, whole) for name, fn in SUMMARY_DESCRIPTORS.items()}
    return {
        "spans": len(trace),
        "examples": trace_examples(trace),
        "llm_calls": int(value["llm_calls"]),
        "tool_calls": int(value["tool_calls"]),
        "steps": sum(s.get("kind") == "step" for s in trace),
        "cached_calls": sum(bool(s.get("cached")) for s in calls),
        "failed_calls": sum(not s.get("ok", True) for s in calls),
        "cancelled_calls": sum(bool(s.get("cancelled")) for s in calls),
        "tokens_in": int(value["tokens_in"]),
        "tokens_out": int(value["tokens_out"]),
        "tokens_total": int(value["tokens_total"]),
        "max_prompt_tokens": int(value["max_prompt_tokens"]),
        "critical_path": int(value["critical_path"]),
        "max_fanout": int(value["max_fanout"]),
        "latency_s": round(value["latency_s"], 6),
        "llm_latency_s": round(sum(float(s.get("latency_s", 0.0)) for s in calls), 6),
        "cost_usd": value["cost_usd"],
        "models": sorted({str(s.get("model", "")) for s in calls}),
        # calls whose model the price table lacks (cost 0 there), and calls with estimated tokens
        "unpriced_models": sorted({str(s.get("model", "")) for s in calls if s.get("unpriced")}),
        "estimated_calls": sum(bool(s.get("tokens_estimated")) for s in calls),
    }


# -- dynamic descriptors -------------------------------------------------------------------------
def llm_calls(config: dict, result: EvalResult) -> float:
    """Logical LLM calls of the evaluation (all its examples), cache hits and failed attempts included."""
    return float(len(_llm(result.trace)))


def tool_calls(config: dict, result: EvalResult) -> float:
    """Tool spans of the evaluation."""
    return float(sum(s.get("kind") == "tool" for s in result.trace))


def tokens_in(config: dict, result: EvalResult) -> float:
    """Prompt tokens over all LLM calls of the evaluation."""
    return float(sum(int(s.get("tokens_in", 0)) for s in _llm(result.trace)))


def tokens_out(config: dict, result: EvalResult) -> float:
    """Completion tokens over all LLM calls of the evaluation."""
    return float(sum(int(s.get("tokens_out", 0)) for s in _llm(result.trace)))


def tokens_total(config: dict, result: EvalResult) -> float:
    """Prompt plus completion tokens over all LLM calls of the evaluation."""
    return tokens_in(config, result) + tokens_out(config, result)


def critical_path(config: dict, result: EvalResult) -> float:
    """Longest chain of dependent LLM calls (sequential LLM depth), per example, the largest."""
    return float(trace_critical_path(result.trace))


def max_fanout(config: dict, result: EvalResult) -> float:
    """Widest fan-out of LLM calls, per example, the largest."""
    return float(trace_max_fanout(result.trace))


def latency_s(config: dict, result: EvalResult) -> float:
    """Wall time covered by the evaluation's trace (depends on how many examples run at once)."""
    return _latency(result.trace)


def max_prompt_tokens(config: dict, result: EvalResult) -> float:
    """Largest single prompt in tokens (of any call, so of any example: the largest)."""
    return float(max((int(s.get("tokens_in", 0)) for s in _llm(result.trace)), default=0))


def cost_usd(config: dict, result: EvalResult) -> float:
    """Nominal cost of all LLM calls of the evaluation."""
    return float(sum(float(s.get("cost_usd", 0.0)) for s in _llm(result.trace)))


def llm_calls_per_example(config: dict, result: EvalResult) -> float:
    """LLM calls of the evaluation over its number of examples."""
    return llm_calls(config, result) / trace_examples(result.trace)


def tokens_total_per_example(config: dict, result: EvalResult) -> float:
    """Tokens of the evaluation over its number of examples."""
    return tokens_total(config, result) / trace_examples(result.trace)


def cost_usd_per_example(config: dict, result: EvalResult) -> float:
    """Nominal cost of the evaluation over its number of examples."""
    return cost_usd(config, result) / trace_examples(result.trace)


def latency_s_per_example(config: dict, result: EvalResult) -> float:
    """Mean wall time of one example (of the whole trace when it marks no examples)."""
    return _example_latency(result.trace)


# -- static descriptors --------------------------------------------------------------------------
def _values(value: Any) -> Iterable[Any]:
    yield value
    if isinstance(value, Mapping):
        for v in value.values():
            yield from _values(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _values(v)


def n_components(config: dict, result: EvalResult | None = None, *, space: Any = None) -> float:
    """Items in ``Seq`` parameters (list items without a space); 1 when there are none."""
    if space is None:
        count = sum(len(v) for v in _values(config) if isinstance(v, (list, tuple)))
    else:
        count = sum(len(v) for _, p, v in space.walk(config) if isinstance(p, Seq) and isinstance(v, list))
    return float(max(1, count))


def prompt_chars(config: dict, result: EvalResult | None = None, *, space: Any = None) -> float:
    """Total characters of ``Text`` leaves (of all string leaves without a space)."""
    if space is None:
        return float(sum(len(v) for v in _values(config) if isinstance(v, str)))
    return float(sum(len(v) for _, p, v in space.walk(config) if isinstance(p, Text) and isinstance(v, str)))


def _depth(value: Any) -> int:
    if isinstance(value, Mapping):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, (list, tuple)):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def max_depth(config: dict, result: EvalResult | None = None, *, space: Any = None) -> float:
    """Nesting depth of the configuration (flat dict: 1)."""
    return float(_depth(config))


DYNAMIC: dict[str, Descriptor] = {
    "llm_calls": llm_calls, "tool_calls": tool_calls, "tokens_in": tokens_in, "tokens_out": tokens_out,
    "tokens_total": tokens_total, "critical_path": critical_path, "max_fanout": max_fanout,
    "latency_s": latency_s, "max_prompt_tokens": max_prompt_tokens, "cost_usd": cost_usd,
    "llm_calls_per_example": llm_calls_per_example, "tokens_total_per_example": tokens_total_per_example,
    "cost_usd_per_example": cost_usd_per_example, "latency_s_per_example": latency_s_per_example,
}
STATIC: dict[str, Callable[..., float]] = {
    "n_components": n_components, "prompt_chars": prompt_chars, "max_depth": max_depth,
}
BUILTINS: dict[str, Callable[..., float]] = {**DYNAMIC, **STATIC}
#: The fields of :func:`summarize` that are descriptors' values, and the descriptor that gives each.
SUMMARY_DESCRIPTORS: dict[str, Descriptor] = {
    name: DYNAMIC[name] for name in ("llm_calls", "tool_calls", "tokens_in", "tokens_out", "tokens_total",
                                     "max_prompt_tokens", "critical_path", "max_fanout", "latency_s", "cost_usd")}


# -- resolution ----------------------------------------------------------------------------------
def _named(name: str, fn: Callable[[dict, EvalResult], float]) -> Descriptor:
    def descriptor(config: dict, result: EvalResult) -> float:
        return fn(config, result)

    descriptor.__name__ = descriptor.__qualname__ = name
    descriptor.__doc__ = getattr(fn, "__doc__", None)
    descriptor.measure_name = name  # type: ignore[attr-defined]
    return descriptor


def _passthrough(name: str, domain_name: str) -> Descriptor:
    def descriptor(config: dict, result: EvalResult) -> float:
        try:
            return float(result.measures[name])
        except KeyError:
            raise KeyError(f"domain {domain_name!r} declared measure {name!r} but its result has only "
                           f"{sorted(result.measures)}") from None

    return _named(name, descriptor)


def available_measures(domain: Any = None) -> list[str]:
    """Descriptor names usable with ``domain``: built-ins, domain-defined and domain pass-through."""
    names = list(BUILTINS)
    if domain is not None:
        names += [n for n in domain.descriptors() if n not in names]
        names += [n for n in getattr(domain, "default_measures", ()) if n not in names]
    return names


def _import(path: str) -> Callable[..., float]:
    # From the current directory first, like [domain] references (qd.references).
    obj = resolve_reference(path, "descriptor")
    if not callable(obj):
        raise ValueError(f"descriptor {path!r} is not callable")
    return obj


def resolve_measures(names: Sequence[str], domain: Any = None) -> list[Descriptor]:
    """Turn descriptor names into functions ``f(config, result) -> float``.

    Each name is looked up, in order, among the built-ins (static ones bound to the domain's
    space), ``domain.descriptors()``, as ``"package.module:function"`` (any name with a colon,
    even one the domain lists among its ``default_measures``), and finally among the domain's
    ``default_measures`` (read from ``result.measures``).

    Raises
    ------
    ValueError
        For an unknown name, listing the available names.
    """
    if isinstance(names, str):
        raise ValueError(f"measures must be a list of names, got the string {names!r}")
    space = getattr(domain, "space", None)
    domain_fns = domain.descriptors() if domain is not None else {}
    declared = tuple(getattr(domain, "default_measures", ())) if domain is not None else ()
    domain_name = getattr(domain, "name", type(domain).__name__)
    out: list[Descriptor] = []
    for name in names:
        if not isinstance(name, str) or not name:
            raise ValueError(f"descriptor names must be non-empty strings, got {name!r}")
        if name in DYNAMIC:
            out.append(_named(name, DYNAMIC[name]))
        elif name in STATIC:
            fn = STATIC[name]
            out.append(_named(name, lambda c, r, fn=fn: fn(c, r, space=space)))
        elif name in domain_fns:
            out.append(_named(name, domain_fns[name]))
        elif ":" in name:  # before the pass-through: a domain may list a reference among its measures
            out.append(_named(name, _import(name)))
        elif name in declared:
            out.append(_passthrough(name, domain_name))
        else:
            import difflib

            available = available_measures(domain)
            close = difflib.get_close_matches(name, available, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"unknown descriptor {name!r}{hint}; available: {', '.join(available)}, "
                             f"or 'package.module:function'")
    return out

