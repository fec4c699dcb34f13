"""Full traces of chosen configurations (elites), as files.

The run store keeps every evaluation's trace (``RunStore.trace``); :func:`write_trace_files`
writes stored ones. A store written before qd kept traces has none, and :func:`export_elite_traces`
records an elite's trace by running it again under a tracer. Domains whose LLM calls go through
a request cache (or are deterministic, like the simulated retrieval backend) replay the same
calls at no cost: the spans are the same logical calls, marked ``cached=True`` where the cache
answered.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from qd.analysis.tracer import export_trace_json
from qd.evaluation import evaluate_config
from qd.result import Span

__all__ = ["trace_config", "export_elite_traces", "rerun_traces", "write_trace_files"]


def trace_config(domain: Any, config: dict) -> tuple[list[Span], Any]:
    """Run ``config`` on ``domain`` under a tracer; returns ``(spans, result)``.

    Parameters
    ----------
    domain : qd.Domain
        The domain the configuration belongs to.
    config : dict
        A configuration of ``domain.space``.
    """
    result = evaluate_config(domain, config)
    return list(result.trace), result


def export_elite_traces(domain: Any, elites: Iterable[dict], directory: str | Path) -> list[Path]:
    """Re-run each elite under a tracer and write its full trace as ``elite-<id>.json``.

    Parameters
    ----------
    domain : qd.Domain
        The run's domain.
    elites : iterable of dict
        Elites as archives return them (``id``, ``objective``, ``measures``, ``solution``).
    directory : str or Path
        Created if needed.

    Returns
    -------
    list of Path
        The files written, in the order of ``elites``. Each holds ``spans``, ``summary`` and
        ``meta`` (elite id, archived objective, re-run objective (also as ``rerun_fitness``) and status,
        configuration, and
        ``source: "rerun"``).
    """
    return write_trace_files(rerun_traces(domain, elites), directory)


def rerun_traces(domain: Any, elites: Iterable[dict]) -> Iterator[tuple[dict[str, Any], list[Span]]]:
    """``(meta, spans)`` of each elite, run again under a tracer (meta as :func:`export_elite_traces` writes it)."""
    for i, elite in enumerate(elites):
        spans, result = trace_config(domain, elite["solution"])
        yield ({"elite_id": elite.get("id", i), "objective": float(elite["objective"]),
                "rerun_objective": float(result.objective), "rerun_fitness": float(result.objective),
                "rerun_status": result.status,
                "config": elite["solution"], "source": "rerun"}, spans)


def write_trace_files(items: Iterable[tuple[dict[str, Any], list[Span]]], directory: str | Path) -> list[Path]:
    """Write each ``(meta, spans)`` as ``DIRECTORY/elite-<meta["elite_id"]>.json`` (:func:`export_trace_json`).

    Returns the files written, in order.
    """
    directory = Path(directory)
    paths = []
    for meta, spans in items:
        name = re.sub(r"[^0-9A-Za-z_-]", "_", str(meta["elite_id"]))
        paths.append(export_trace_json(spans, directory / f"elite-{name}.json", meta=meta))
    return paths
