"""Program analysis of compound AI configurations: execution tracing (dynamic) and descriptors."""
from qd.analysis.descriptors import (
    BUILTINS,
    DYNAMIC,
    STATIC,
    available_measures,
    resolve_measures,
    summarize,
    trace_critical_path,
    trace_max_fanout,
)
from qd.analysis.elites import export_elite_traces, trace_config
from qd.analysis.tracer import (
    Tracer,
    active_tracer,
    current_span_id,
    export_trace_json,
    record_llm_call,
    span,
    traced,
)

__all__ = [
    "Tracer", "active_tracer", "current_span_id", "export_trace_json", "record_llm_call", "span", "traced",
    "BUILTINS", "DYNAMIC", "STATIC", "available_measures", "resolve_measures", "summarize",
    "trace_critical_path", "trace_max_fanout", "export_elite_traces", "trace_config",
]
