"""Failed evaluations, and examples a score function failed on: counted, and a warning during the run.

Nothing stops a search when evaluations fail or a score function raises on every example (a
failing example scores 0), so a broken pipeline would otherwise finish a whole budget in
silence. :class:`FailureWatch` (a search listener) warns the first time each happens, quoting
the error; :func:`failures` counts them from the run store for the run summary and ``qd status``.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from qd.listeners import Evaluated, WarningListener

if TYPE_CHECKING:
    from qd.search import Search

__all__ = ["FailureWatch", "failures", "failure_lines"]


def _example_failures(metrics: dict) -> tuple[int, int, str]:
    """``(failed, scored, last error)`` of one evaluation's examples (``qd.FunctionDomain`` metrics)."""
    errors = metrics.get("example_errors") or [{}]
    return int(metrics.get("failed_examples", 0)), int(metrics.get("examples", 0)), str(errors[-1].get("error", ""))


def failures(rows: Iterable[Any]) -> dict[str, Any]:
    """Failed evaluations and failed examples over stored evaluations (``RunStore.evaluations()``).

    Returns
    -------
    dict
        ``evaluations`` failed of ``of``, ``by_status``, ``last_error``; ``examples`` failed of
        ``examples_of`` (evaluations that report examples) and ``last_example_error``.
    """
    out: dict[str, Any] = {"evaluations": 0, "of": 0, "by_status": {}, "last_error": "",
                           "examples": 0, "examples_of": 0, "last_example_error": ""}
    for row in rows:
        out["of"] += 1
        if row.status != "ok":
            out["evaluations"] += 1
            out["by_status"][row.status] = out["by_status"].get(row.status, 0) + 1
            out["last_error"] = f"evaluation {row.id} ({row.status}): {row.error}"
            continue
        failed, scored, error = _example_failures(row.metrics)
        out["examples"] += failed
        out["examples_of"] += scored
        if failed:
            out["last_example_error"] = f"evaluation {row.id}: {error}"
    return out


def failure_lines(summary: dict[str, Any]) -> list[str]:
    """What the run summary and ``qd status`` print of :func:`failures` (nothing when nothing failed)."""
    lines = []
    if summary["evaluations"]:
        statuses = ", ".join(f"{k} {v}" for k, v in sorted(summary["by_status"].items()))
        lines.append(f"failed evaluations: {summary['evaluations']} of {summary['of']} ({statuses}); "
                     f"last: {summary['last_error'][:600]}")
    if summary["examples"]:
        lines.append(f"examples the score function failed on (scored 0): {summary['examples']} of "
                     f"{summary['examples_of']}; last: {summary['last_example_error'][:600]}")
    return lines


class FailureWatch(WarningListener):
    """Warns once (stderr) at the first failed evaluation and at the first one whose every example failed."""

    def on_result(self, search: Search, event: Evaluated) -> None:
        """Warn the first time an evaluation fails, or scores 0 because every example failed."""
        result = event.result
        if result.status != "ok":
            self.warn_once("evaluation", f"evaluation {event.id} failed ({result.status}): {result.error[:600]}; "
                                         "the search goes on (qd status counts the failures)")
            return
        failed, scored, error = _example_failures(result.metrics or {})
        if scored and failed == scored:
            self.warn_once("examples", f"the score function failed on every example of evaluation {event.id}, "
                                       f"which scores 0: {error[:600]}")
