"""Full traces of chosen configurations (elites): the run store keeps only trace summaries.

A trace is recorded while a configuration runs, so the full trace of an elite is obtained by running
it again under a tracer. Domains whose LLM calls go through a request cache (or are deterministic,
like the simulated retrieval backend) replay the same calls at no cost: the spans are the same
logical calls, marked ``cached=True`` where the cache answered.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from qd.analysis.tracer import export_trace_json
from qd.evaluation import evaluate_config
from qd.result import Span

__all__ = ["trace_config", "export_elite_traces"]


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
        ``meta`` (elite id, archived objective, re-run fitness and status, configuration).
    """
    directory = Path(directory)
    paths = []
    for i, elite in enumerate(elites):
        spans, result = trace_config(domain, elite["solution"])
        ident = elite.get("id", i)
        name = re.sub(r"[^0-9A-Za-z_-]", "_", str(ident))
        meta = {"elite_id": ident, "objective": float(elite["objective"]),
                "rerun_fitness": float(result.fitness), "rerun_status": result.status,
                "config": elite["solution"]}
        paths.append(export_trace_json(spans, directory / f"elite-{name}.json", meta=meta))
    return paths
