"""Running totals of a run's evaluations: what ``qd status`` prints without reading every row.

:class:`RunTotals` counts evaluations by status, failed evaluations and examples (with the last
error of each), the pipeline's LLM calls, tokens and cost from each evaluation's trace summary,
and measure values outside the archive's ranges. The run store keeps its :meth:`RunTotals.as_dict`
up to date in the transaction of every group of evaluations (``qd.listeners.StoreRecorder``), so
a reader gets the figures of exactly the committed evaluations; a version 1 store, which kept
none, is counted row by row (:meth:`RunTotals.add_rows`).
"""
from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from qd.result import STATUSES

__all__ = ["RunTotals", "TOTALS_META", "example_failures", "count_out_of_range", "count_out_of_range_many",
           "failure_lines", "describe"]

TOTALS_META = "totals"  # the run store's meta key

_SUMMED = ("llm_calls", "tokens_in", "tokens_out", "cost_usd", "estimated_calls", "unpriced_models")  # of a summary
_PIPELINE = ("calls", "tokens_in", "tokens_out", "cost_usd", "estimated_calls", "untraced_calls", "untraced_tokens")


def example_failures(metrics: dict) -> tuple[int, int, str]:
    """``(failed, scored, last error)`` of one evaluation's examples (``qd.FunctionDomain`` metrics)."""
    errors = metrics.get("example_errors") or [{}]
    return int(metrics.get("failed_examples", 0)), int(metrics.get("examples", 0)), str(errors[-1].get("error", ""))


def count_out_of_range(counts: dict[str, dict[str, int]], measures: dict[str, float], names: Sequence[str],
                       lows: Sequence[float], highs: Sequence[float]) -> None:
    """Add one measure dict to ``counts`` (``{name: {"below", "above", "of"}}``; finite values only)."""
    for name, low, high in zip(names, lows, highs):
        value = measures.get(name)
        if value is None or not math.isfinite(value):
            continue
        c = counts[name]
        c["of"] += 1
        c["below"] += int(value < low)
        c["above"] += int(value > high)


def count_out_of_range_many(counts: dict[str, dict[str, int]], points: Sequence[Sequence[float]],
                            names: Sequence[str], lows: Sequence[float], highs: Sequence[float]) -> None:
    """:func:`count_out_of_range` of many measure vectors at once (a row each, values in ``names`` order; NaN: none)."""
    if not len(points) or not names:
        return
    values = np.array(points, dtype=float).reshape(len(points), len(names))
    finite = np.isfinite(values)
    below = (finite & (values < np.array(lows, dtype=float))).sum(axis=0).tolist()
    above = (finite & (values > np.array(highs, dtype=float))).sum(axis=0).tolist()
    for name, of, b, a in zip(names, finite.sum(axis=0).tolist(), below, above):
        c = counts[name]
        c["of"] += of
        c["below"] += b
        c["above"] += a


def failure_lines(summary: dict[str, Any]) -> list[str]:
    """What the run summary and ``qd status`` print of the failure totals (nothing when nothing failed).

    ``summary`` is :attr:`RunTotals.failures`.
    """
    lines = []
    if summary["evaluations"]:
        statuses = ", ".join(f"{k} {v}" for k, v in sorted(summary["by_status"].items()))
        lines.append(f"failed evaluations: {summary['evaluations']} of {summary['of']} ({statuses}); "
                     f"last: {summary['last_error'][:600]}")
    if summary["examples"]:
        lines.append(f"examples the score function failed on (scored 0): {summary['examples']} of "
                     f"{summary['examples_of']}; last: {summary['last_example_error'][:600]}")
    return lines


def describe(name: str, index: int, low: float, high: float, c: dict[str, int]) -> str:
    """One line: how many values of ``name`` fell outside ``[low, high]`` and the key to widen."""
    out = c["below"] + c["above"]
    return (f"{out / c['of']:.0%} of {name} values ({out} of {c['of']}: {c['below']} below, {c['above']} above) "
            f"fall outside its archive range [{low:g}, {high:g}] and are clipped into the edge cells; "
            f"widen archive.ranges[{index}]")


def _count_failure(f: dict[str, Any], id: int, status: str, error: str) -> None:
    f["evaluations"] += 1
    f["by_status"][status] = f["by_status"].get(status, 0) + 1
    f["last_error"] = f"evaluation {id} ({status}): {error}"


def _count_examples(f: dict[str, Any], id: int, metrics: dict) -> None:
    failed, scored, last = example_failures(metrics)
    f["examples"] += failed
    f["examples_of"] += scored
    if failed:
        f["last_example_error"] = f"evaluation {id}: {last}"


def _count_pipeline(p: dict[str, Any], t: dict, metrics: dict) -> None:
    """Add one evaluation's LLM calls, tokens and cost (its trace summary ``t``) to the pipeline totals ``p``."""
    p["calls"] += int(t.get("llm_calls", 0))
    p["tokens_in"] += int(t.get("tokens_in", 0))
    p["tokens_out"] += int(t.get("tokens_out", 0))
    p["cost_usd"] += float(t.get("cost_usd", 0.0))
    p["estimated_calls"] += int(t.get("estimated_calls", 0))
    p["untraced_calls"] += int(metrics.get("untraced_llm_calls", 0))
    p["untraced_tokens"] += int(metrics.get("untraced_tokens", 0))
    unpriced = t.get("unpriced_models")
    if unpriced:
        p["unpriced_models"] = sorted(set(p["unpriced_models"]) | set(unpriced))


class RunTotals:
    """Totals over a run's evaluations, updated one evaluation at a time.

    Parameters
    ----------
    measure_names : sequence of str
        The archive's measures (counted outside their ranges).
    lows, highs : sequence of float
        The archive's ranges.
    data : dict, optional
        An earlier :meth:`as_dict` to continue from (a resumed run).
    """

    def __init__(self, measure_names: Sequence[str], lows: Sequence[float], highs: Sequence[float],
                 data: dict[str, Any] | None = None):
        self.names = list(measure_names)
        self.lows, self.highs = [float(v) for v in lows], [float(v) for v in highs]
        if data is not None:
            self.data = copy.deepcopy(data)
            return
        self.data = {
            "evaluations": 0,
            "statuses": dict.fromkeys(STATUSES, 0),
            "failures": {"evaluations": 0, "of": 0, "by_status": {}, "last_error": "", "examples": 0,
                         "examples_of": 0, "last_example_error": ""},
            "pipeline": {**dict.fromkeys(_PIPELINE, 0), "unpriced_models": []},
            "out_of_range": {name: {"below": 0, "above": 0, "of": 0} for name in self.names},
        }

    def add(self, id: int, status: str, error: str, metrics: dict, trace_summary: dict,
            measures: dict[str, float]) -> None:
        """Count one evaluation (its trace summary may hold only its non-zero fields)."""
        d = self.data
        d["evaluations"] += 1
        d["statuses"][status] = d["statuses"].get(status, 0) + 1
        f = d["failures"]
        f["of"] += 1
        if status != "ok":
            _count_failure(f, id, status, error)
        else:
            _count_examples(f, id, metrics)
            count_out_of_range(d["out_of_range"], measures, self.names, self.lows, self.highs)
        if trace_summary or metrics:
            _count_pipeline(d["pipeline"], trace_summary, metrics)

    def add_rows(self, rows: Iterable[Any]) -> RunTotals:
        """Count evaluations, as :meth:`add` one after another would; returns self.

        ``rows`` have the fields :meth:`add` takes as attributes (``RunStore.evaluations()`` rows,
        ``qd.store.EvaluationRecord``). The measure ranges are counted for all of them at once,
        and the pipeline figures only for the evaluations that have any.
        """
        d = self.data
        statuses, f, p = d["statuses"], d["failures"], d["pipeline"]
        points: list[list[float]] = []
        names, nan = self.names, math.nan
        last_summary: Any = None
        zero = True
        counted = 0
        summed = False
        for r in rows:
            counted += 1
            status, metrics, t = r.status, r.metrics, r.trace_summary
            statuses[status] = statuses.get(status, 0) + 1
            if status != "ok":
                _count_failure(f, r.id, status, r.error)
            else:
                if "failed_examples" in metrics or "examples" in metrics:
                    _count_examples(f, r.id, metrics)
                measures = r.measures
                points.append([measures.get(n, nan) for n in names])
            if not (t or metrics):
                continue
            summed = True
            if t is not last_summary:  # evaluations without calls share one summary: looked at once
                last_summary, zero = t, not any(t.get(k) for k in _SUMMED)
            if not zero or "untraced_llm_calls" in metrics or "untraced_tokens" in metrics:  # else it adds nothing
                _count_pipeline(p, t, metrics)
        if summed:
            p["cost_usd"] += 0.0  # a float once any evaluation was summed, as add() leaves it
        d["evaluations"] += counted
        f["of"] += counted
        count_out_of_range_many(d["out_of_range"], points, names, self.lows, self.highs)
        return self

    def as_dict(self) -> dict[str, Any]:
        """The totals as JSON-able values (the run store's ``totals`` meta)."""
        return self.data

    @property
    def failures(self) -> dict[str, Any]:
        """Failed evaluations of ``of`` (``by_status``, ``last_error``) and failed examples of ``examples_of``."""
        return self.data["failures"]

    @property
    def out_of_range(self) -> dict[str, dict[str, int]]:
        """Per archive measure: ``ok`` evaluations' values below and above its range, of how many."""
        return self.data["out_of_range"]
