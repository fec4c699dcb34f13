"""Traces as OpenTelemetry spans with OpenInference attributes, in OTLP JSON (``qd elites --export-traces``).

The file is one ``ExportTraceServiceRequest`` in the OTLP/JSON encoding (``resourceSpans`` ->
``scopeSpans`` -> ``spans``; trace and span ids in hex, times in Unix nanoseconds as strings,
attributes as ``{"key", "value": {"stringValue" | "intValue" | "doubleValue" | "boolValue"}}``),
on one line, so OTLP tools read it as a file or as JSON lines (an OpenTelemetry Collector's
``otlpjsonfile`` receiver, Phoenix behind a collector, Jaeger, ...).

Each traced evaluation is one trace: a root ``CHAIN`` span (the evaluation: its configuration as
``input.value``, its objective as ``output.value``) holding its spans. An ``llm`` span is an
OpenInference ``LLM`` span (``llm.model_name``, ``llm.token_count.*``, ``llm.cost.total``, the
prompt and answer as ``input.value``/``output.value``), ``tool`` a ``TOOL`` span, ``step`` a
``CHAIN`` span. A span's data-flow ``deps`` become links to the spans it consumed; qd's own fields
keep their names under ``qd.``.
"""
from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["to_otlp", "SPAN_KINDS"]

# qd span kind -> OpenInference span kind
SPAN_KINDS = {"llm": "LLM", "tool": "TOOL", "step": "CHAIN"}
_INTERNAL = 1  # OTLP SpanKind SPAN_KIND_INTERNAL
_OK, _ERROR = 1, 2  # OTLP StatusCode


def _value(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value if math.isfinite(value) else str(value)}
    if isinstance(value, str):
        return {"stringValue": value}
    return {"stringValue": json.dumps(value, default=str, separators=(",", ":"))}


def _attributes(pairs: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [{"key": k, "value": _value(v)} for k, v in pairs.items() if v is not None]


def _hex_id(*parts: Any, size: int) -> str:
    """A stable id of ``size`` bytes (hex) from ``parts``; never all zeros (an invalid id in OTLP)."""
    digest = hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:2 * size]
    return digest if int(digest, 16) else "1".rjust(2 * size, "0")


def _nanos(seconds: float) -> str:
    return str(int(round(seconds * 1e9)))


def _span_attributes(span: Mapping[str, Any]) -> dict[str, Any]:
    kind = str(span.get("kind", "step"))
    out: dict[str, Any] = {"openinference.span.kind": SPAN_KINDS.get(kind, "CHAIN")}
    if kind == "llm":
        t_in, t_out = int(span.get("tokens_in", 0)), int(span.get("tokens_out", 0))
        out.update({"llm.model_name": str(span.get("model", "")), "llm.token_count.prompt": t_in,
                    "llm.token_count.completion": t_out, "llm.token_count.total": t_in + t_out,
                    "llm.cost.total": float(span.get("cost_usd", 0.0))})
    if "input" in span:
        out.update({"input.value": str(span["input"]), "input.mime_type": "text/plain"})
    if "output" in span:
        out.update({"output.value": str(span["output"]), "output.mime_type": "text/plain"})
    for key, value in span.items():  # qd's own fields, under their names
        if key not in ("input", "output", "parent_id", "name", "start_s", "latency_s", "ok", "error"):
            out[f"qd.{key}"] = value
    return out


def to_otlp(traces: Iterable[tuple[Mapping[str, Any], list[Mapping[str, Any]]]], *,
            service: str = "qd", run: str = "") -> dict[str, Any]:
    """One OTLP/JSON ``ExportTraceServiceRequest`` of evaluations' traces.

    Parameters
    ----------
    traces : iterable of (dict, list of Span)
        Per evaluation: what describes it (``id``, ``objective``, ``config``; other keys become
        ``qd.``-attributes of its root span) and its spans.
    service : str
        The resource's ``service.name``.
    run : str
        The run's directory or name (attribute ``qd.run``, and part of every trace id, so the
        traces of two runs never share ids).
    """
    spans_out: list[dict[str, Any]] = []
    for evaluation, spans in traces:
        ident = evaluation.get("id")
        trace_id = _hex_id(run, ident, size=16)
        root_id = _hex_id(run, ident, "root", size=8)
        starts = [float(s.get("start_s", 0.0)) for s in spans]
        ends = [float(s.get("start_s", 0.0)) + float(s.get("latency_s", 0.0)) for s in spans]
        t0, t1 = (min(starts), max(ends)) if spans else (0.0, 0.0)
        root_attrs = {"openinference.span.kind": "CHAIN", "qd.evaluation.id": ident,
                      "input.value": json.dumps(evaluation.get("config"), sort_keys=True, separators=(",", ":")),
                      "input.mime_type": "application/json",
                      "output.value": json.dumps(evaluation.get("objective")), "output.mime_type": "application/json"}
        root_attrs.update({f"qd.{k}": v for k, v in evaluation.items() if k not in ("id", "config")})
        spans_out.append({"traceId": trace_id, "spanId": root_id, "name": f"qd.evaluation {ident}", "kind": _INTERNAL,
                          "startTimeUnixNano": _nanos(t0), "endTimeUnixNano": _nanos(t1),
                          "attributes": _attributes(root_attrs), "status": {"code": _OK}})
        ids = {s.get("id"): _hex_id(run, ident, s.get("id"), size=8) for s in spans}
        for s in spans:
            start = float(s.get("start_s", 0.0))
            end = start + float(s.get("latency_s", 0.0))
            parent = s.get("parent_id")
            ok = bool(s.get("ok", True))
            out = {"traceId": trace_id, "spanId": ids[s.get("id")],
                   "parentSpanId": ids.get(parent, root_id) if parent is not None else root_id,
                   "name": str(s.get("name") or s.get("kind") or "span"), "kind": _INTERNAL,
                   "startTimeUnixNano": _nanos(start), "endTimeUnixNano": _nanos(end),
                   "attributes": _attributes(_span_attributes(s)),
                   "status": {"code": _OK} if ok else {"code": _ERROR, "message": str(s.get("error", ""))}}
            links = [{"traceId": trace_id, "spanId": ids[d], "attributes": _attributes({"qd.link": "dep"})}
                     for d in s.get("deps") or () if d in ids]
            if links:
                out["links"] = links
            spans_out.append(out)
    return {"resourceSpans": [{
        "resource": {"attributes": _attributes({"service.name": service, "qd.run": run or None})},
        "scopeSpans": [{"scope": {"name": "qd"}, "spans": spans_out}],
    }]}
