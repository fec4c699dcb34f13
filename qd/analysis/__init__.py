"""Program analysis of compound AI configurations: execution tracing (dynamic) and descriptors.

The package re-exports the tracer and the descriptors, which evaluation and the LLM client use.
What works on finished runs imports more of qd and is imported from its own module:
:mod:`qd.analysis.elites` (traces of elites), :mod:`qd.analysis.selection` (elites that span
the map), :mod:`qd.analysis.validation`.
"""
from qd.analysis.descriptors import (
    BUILTINS,
    DYNAMIC,
    STATIC,
    available_measures,
    critical_path_spans,
    resolve_measures,
    summarize,
    trace_critical_path,
    trace_max_fanout,
)
from qd.analysis.tracer import (
    Tracer,
    active_tracer,
    current_span_id,
    example_scope,
    export_trace_json,
    record_llm_call,
    span,
    traced,
)

__all__ = [
    "Tracer", "active_tracer", "current_span_id", "example_scope", "export_trace_json", "record_llm_call", "span",
    "traced",
    "BUILTINS", "DYNAMIC", "STATIC", "available_measures", "resolve_measures", "summarize",
    "trace_critical_path", "trace_max_fanout", "critical_path_spans",
]
