"""``qd report``: one self-contained HTML file to explore a run, from the map to an elite, its lineage and trace.

:func:`qd.report.data.collect` reads the run (the one module that touches the store);
:func:`qd.report.html.render` turns that data into the page, whose style and script are the
package's ``templates/``. See the README, section Report.
"""
from __future__ import annotations

from pathlib import Path

from qd.report.data import Limits, collect
from qd.report.html import CSP, render, write_report

__all__ = ["CSP", "Limits", "collect", "render", "write_report", "report"]


def report(run_dir: str | Path, output: str | Path | None = None, limits: Limits | None = None) -> Path:
    """Write the report of the run in ``run_dir`` to ``output`` (default ``RUN_DIR/report.html``); returns its path."""
    data = collect(run_dir, limits or Limits())
    return write_report(data, output if output is not None else Path(run_dir) / "report.html")
