"""Failed evaluations, and examples a score function failed on: a warning during the run.

Nothing stops a search when evaluations fail or a score function raises on every example (a
failing example scores 0), so a broken pipeline would otherwise finish a whole budget in
silence. :class:`FailureWatch` (a search listener) warns the first time each happens, quoting
the error; the run store counts them (``qd.totals.RunTotals``) for the run summary and
``qd status`` (:func:`failure_lines`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from qd.listeners import Evaluated, WarningListener
from qd.totals import example_failures, failure_lines

if TYPE_CHECKING:
    from qd.search import Search

__all__ = ["FailureWatch", "failure_lines"]


class FailureWatch(WarningListener):
    """Warns once (stderr) at the first failed evaluation and at the first one whose every example failed."""

    def on_result(self, search: Search, event: Evaluated) -> None:
        """Warn the first time an evaluation fails, or scores 0 because every example failed."""
        result = event.result
        if result.status != "ok":
            self.warn_once("evaluation", f"evaluation {event.id} failed ({result.status}): {result.error[:600]}; "
                                         "the search goes on (qd status counts the failures)")
            return
        if not result.metrics or "examples" not in result.metrics:
            return  # no examples scored
        failed, scored, error = example_failures(result.metrics)
        if scored and failed == scored:
            self.warn_once("examples", f"the score function failed on every example of evaluation {event.id}, "
                                       f"which scores 0: {error[:600]}")
