"""Everything ``qd report`` shows, read from a run directory in one place (read-only, one snapshot).

:func:`collect` opens the run with :func:`qd.rundir.read_run` (the store alone, never the domain;
one read transaction, so a run in progress is seen as it was at one moment) and returns one
JSON-able dict: the ``qd status`` figures (:func:`qd.cli.status_of`, from the stored archive and
running totals), one column per field of the evaluations, the archive's elites and cell shapes,
configurations, traces with their critical paths, the archive's history, and the problems found
(what is missing from the run and why).

Large runs are cut to :class:`Limits`: the table keeps every elite, their ancestors and every
archive insertion, then an even sample of the other evaluations, and only those rows are read
whole (the others' small columns only: :meth:`qd.store.RunStore.outline`); configurations and
traces are embedded for all kept evaluations while they fit, else for the elites and their
ancestors.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qd.analysis.descriptors import critical_path_spans
from qd.cli import status_of
from qd.report.cells import layout
from qd.result import MalformedResult, check_span
from qd.rundir import is_running, read_run
from qd.totals import failure_lines
from qd.validate import elite_columns

__all__ = ["Limits", "collect"]

# Top-level configuration parameters shown as map axes and table columns: numbers, and text or
# flags with at most this many values (categorical).
MAX_CATEGORIES = 16
MAX_PARAMS = 16


@dataclass(frozen=True)
class Limits:
    """How much of a large run a report embeds (see the module docstring).

    Attributes
    ----------
    rows : int
        Evaluations in the table, map projections and filters.
    config_chars : int
        Characters of configuration JSON embedded for all kept evaluations; above it, only the
        elites' and their ancestors'.
    trace_spans : int
        Spans embedded; the elites' traces and their ancestors' come first.
    """

    rows: int = 50_000
    config_chars: int = 2_500_000
    trace_spans: int = 60_000


def _num(value: Any) -> float | None:
    """A finite float, or None (JSON has no NaN)."""
    value = float(value)
    return value if math.isfinite(value) else None


def collect(run_dir: str | Path, limits: Limits | None = None) -> dict[str, Any]:
    """The report's data of the run in ``run_dir`` (see the module docstring).

    Raises
    ------
    FileNotFoundError
        When ``run_dir`` is not a run directory.
    ValueError
        When its store cannot describe its archive (the message names the run).
    """
    run = read_run(run_dir, solutions=False)  # configurations come with the kept rows (rows_of)
    try:
        return _collect(run, limits or Limits())
    finally:
        run.store.close()


def _collect(run: Any, limits: Limits) -> dict[str, Any]:
    store, archive = run.store, run.archive
    status = status_of(run)
    problems: list[str] = []
    pipeline = run.totals["pipeline"]
    outline = store.outline(spend=bool(pipeline["cost_usd"] or pipeline["tokens_in"] or pipeline["tokens_out"]))
    total = len(outline["id"])
    elites = _elites(store, archive)
    ancestors = _ancestors(store, [e["id"] for e in elites])
    rows = store.rows_of(_keep(outline, elites, ancestors, limits.rows))
    if len(rows) < total:
        problems.append(f"the table holds {len(rows)} of {total} evaluations (every elite, their ancestors and "
                        f"every archive insertion, then an even sample): filters and map projections see these")
    evals = _columns(rows, archive)
    configs = _configs(rows, elites, ancestors, limits.config_chars, problems)
    traces = _traces(store, rows, elites, ancestors, limits.trace_spans, problems)
    meta = {
        "name": run.config["run"]["name"], "domain": run.config["domain"]["name"], "run_dir": str(run.path),
        "generated": time.strftime("%Y-%m-%d %H:%M:%S"), "running": is_running(run.path),
        "evaluations": total, "budget": run.config["run"]["evaluations"],
        "objective_name": archive.objective_name, "measure_names": list(archive.measure_names),
        "qd_score_offset": float(archive.qd_score_offset), "traces_kept": store.has_traces,
        "trace_text_chars": run.config["run"].get("trace_text_chars"),
    }
    status["failure_lines"] = failure_lines(status["failures"])
    return {"meta": meta, "status": status, "archive": layout(archive), "elites": elites, "evals": evals,
            "configs": configs, "traces": traces, "history": _history(store, outline), "problems": problems}


def _elites(store: Any, archive: Any) -> list[dict[str, Any]]:
    """The archive's elites (its objective: the mean under noise) with ``qd elites``'s extra columns."""
    columns = elite_columns(store, archive)
    out = []
    for e in archive:
        extra = columns.get(int(e["id"]), {})
        out.append({"id": int(e["id"]), "cell": int(e["index"]), "objective": _num(e["objective"]),
                    "measures": [_num(v) for v in e["measures"]], "n": extra.get("n", 1), "sem": extra.get("sem"),
                    **{k: _num(extra[k]) for k in ("validated", "gap") if k in extra},
                    **({"validated_n": extra["validated_n"]} if "validated_n" in extra else {})})
    return sorted(out, key=lambda e: e["cell"])


def _ancestors(store: Any, ids: list[int]) -> set[int]:
    """Every evaluation the given ones descend from (through all parents), themselves excluded.

    Read a generation at a time (the parents of those found last), so a report reads the elites'
    lineage, not every evaluation's.
    """
    seen: set[int] = set()
    pending = {p for parents in store.parents_of(ids).values() for p in parents}
    while pending:
        found = store.parents_of(pending)  # the ones that exist
        seen.update(found)
        pending = {p for parents in found.values() for p in parents} - seen
    return seen


def _keep(outline: dict[str, np.ndarray], elites: list[dict], ancestors: set[int], limit: int) -> list[int]:
    """The ids the report embeds: all of them up to ``limit``, else the ones it needs and an even sample."""
    ids = outline["id"]
    if len(ids) <= limit:
        return ids.tolist()
    must = {e["id"] for e in elites} | ancestors | set(ids[outline["archive_status"] > 0].tolist())
    rest = [i for i in ids.tolist() if i not in must]
    room = max(0, limit - len(must))
    picked = {rest[int(i)] for i in np.linspace(0, len(rest) - 1, room)} if room and rest else set()
    return sorted((must & set(ids.tolist())) | picked)


def _columns(rows: list[Any], archive: Any) -> dict[str, Any]:
    """One list per field of the evaluations (codes for status and operator)."""
    statuses = sorted({r.status for r in rows})
    operators = sorted({r.operator for r in rows})
    s_code, o_code = {s: i for i, s in enumerate(statuses)}, {o: i for i, o in enumerate(operators)}
    names = list(archive.measure_names)
    others = sorted({k for r in rows for k in r.measures} - set(names))
    groups: dict[str, int] = {}
    t0 = min((r.submitted_at for r in rows), default=0.0)
    cells = np.full(len(rows), -1, dtype=np.int64)
    usable = [i for i, r in enumerate(rows) if r.status == "ok" and math.isfinite(r.fitness)
              and all(math.isfinite(r.measures.get(n, math.nan)) for n in names)]
    if usable:
        cells[usable] = archive.index_of(np.array([[rows[i].measures[n] for n in names] for i in usable]))
    return {
        "statuses": statuses, "operators": operators,
        "id": [r.id for r in rows],
        "status": [s_code[r.status] for r in rows],
        "objective": [_num(r.fitness) for r in rows],
        "operator": [o_code[r.operator] for r in rows],
        "parents": [r.parent_ids for r in rows],
        "config": [groups.setdefault(r.hash, len(groups)) for r in rows],  # same configuration, same number
        "time": [round(r.finished_at - t0, 3) for r in rows],
        "added": [r.archive_status for r in rows],
        "cell": cells.tolist(),
        "cost": [float(f"{float(r.trace_summary.get('cost_usd', 0.0)):.6g}") for r in rows],
        "tokens": [int(r.trace_summary.get("tokens_total", 0)) for r in rows],
        "spans": [int(r.trace_summary.get("spans", 0)) for r in rows],  # as summarized when it was stored
        "critical_path": [int(r.trace_summary.get("critical_path", 0)) for r in rows],
        "error": [r.error[:200] for r in rows],
        "measures": {n: [_num(r.measures[n]) if n in r.measures else None for r in rows] for n in names + others},
        "params": _params(rows),
    }


def _params(rows: list[Any]) -> dict[str, list[Any]]:
    """Top-level configuration parameters every configuration has as a number, or as one of a few texts or flags."""
    configs = [r.config for r in rows if isinstance(r.config, dict)]
    if not configs or len(configs) < len(rows):
        return {}
    out: dict[str, list[Any]] = {}
    for key in sorted(set.intersection(*(set(c) for c in configs))):
        values = [c[key] for c in configs]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        few = all(isinstance(v, (str, bool)) for v in values) and len(set(values)) <= MAX_CATEGORIES
        if numeric:
            out[key] = [_num(v) for v in values]
        elif few:
            out[key] = [str(v).lower() if isinstance(v, bool) else v for v in values]
        if len(out) == MAX_PARAMS:
            break
    return out


def _configs(rows: list[Any], elites: list[dict], ancestors: set[int], limit: int,
             problems: list[str]) -> dict[str, Any]:
    """Configurations by evaluation id, up to ``limit`` characters: the elites', their ancestors', then the others'."""
    by_id = {r.id: r for r in rows}
    order = list(dict.fromkeys([e["id"] for e in elites] + sorted(ancestors) + list(by_id)))
    out, total = {}, 0
    for i in order:
        if i not in by_id:
            continue
        text = json.dumps(by_id[i].config, separators=(",", ":"))
        if total + len(text) > limit:
            break
        out[str(i)] = by_id[i].config
        total += len(text)
    if len(out) < len(rows):
        problems.append(f"configurations are embedded for {len(out)} of {len(rows)} evaluations (at most {limit} "
                        f"characters; elites first, then their ancestors)")
    return out


def _traces(store: Any, rows: list[Any], elites: list[dict], ancestors: set[int], limit: int,
            problems: list[str]) -> dict[str, Any]:
    """Stored traces by evaluation id, each with its well-formed spans, its critical path and its problems."""
    if not store.has_traces:
        problems.append("no traces: this store was written by a qd that did not keep them (before run store v2); "
                        "`qd elites RUN --traces DIR` re-runs elites to record theirs")
        return {}
    first = [e["id"] for e in elites] + sorted(ancestors)
    order = list(dict.fromkeys(first + [r.id for r in rows]))
    # an evaluation whose summary counts no span recorded none: the page says so without its trace
    sizes = {r.id: int(r.trace_summary.get("spans", 0)) for r in rows if r.trace_summary.get("spans", 0)}
    wanted, total = [], 0
    for i in order:
        if i in sizes and total + sizes[i] <= limit:
            wanted.append(i)
            total += sizes[i]
    if len(wanted) < len(sizes):
        problems.append(f"traces are embedded for {len(wanted)} of the {len(sizes)} evaluations that recorded spans "
                        f"(at most {limit} spans; elites and their ancestors first)")
    stored = store.traces(wanted, unreadable=problems)  # an unreadable trace is a problem, not an error
    missing = [i for i in wanted if i not in stored]
    if missing:
        problems.append(f"{len(missing)} evaluation(s) have no stored trace (run before qd kept traces, e.g. a "
                        f"resumed older run): {_ids(missing)}")
    out = {}
    for i, spans in stored.items():
        good, bad = [], []
        for k, span in enumerate(spans):
            try:
                good.append(check_span(span, k))
            except MalformedResult as exc:
                bad.append(str(exc))
        if bad:
            problems.append(f"evaluation {i}: {len(bad)} malformed span(s) left out of its trace: {bad[0]}")
        out[str(i)] = {"spans": good, "critical": critical_path_spans(good), "malformed": bad}
    return out


def _ids(ids: list[int], shown: int = 8) -> str:
    text = ", ".join(map(str, ids[:shown]))
    return text + (f" and {len(ids) - shown} more" if len(ids) > shown else "")


def _history(store: Any, outline: dict[str, np.ndarray]) -> dict[str, list]:
    """The archive's recorded statistics over the run, with the pipeline's spend when each was recorded.

    Spend is the traced LLM cost and tokens of the evaluations finished by then (in finishing order).
    """
    history = store.history()
    order = np.lexsort((outline["id"], outline["finished_at"]))
    cost = np.cumsum(outline["cost_usd"][order])
    tokens = np.cumsum(outline["tokens_total"][order])

    def upto(values: np.ndarray, n: int) -> float:
        return float(values[min(n, len(values)) - 1]) if n > 0 and len(values) else 0.0

    return {
        "evaluations": [int(h["evaluations"]) for h in history],
        "num_elites": [int(h["num_elites"]) for h in history],
        "coverage": [_num(h["coverage"]) for h in history],
        "qd_score": [_num(h["qd_score"]) for h in history],
        "best": [None if h["obj_max"] is None else _num(h["obj_max"]) for h in history],
        "wall_s": [_num(h["wall_s"]) for h in history],
        "cost": [float(f"{upto(cost, int(h['evaluations'])):.6g}") for h in history],
        "tokens": [int(upto(tokens, int(h["evaluations"]))) for h in history],
    }
