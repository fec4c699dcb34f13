"""Command line: ``qd run | status | plot | elites | validate | report | domains | llm serve``."""
from __future__ import annotations

import argparse
import csv
import ipaddress
import json
import os
import sqlite3
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from qd.evaluators.registry import backends_help
from qd.rundir import RunLockedError, read_run
from qd.totals import TOTALS_META, describe, failure_lines

# A read command imports what it reads with, and nothing of the search (docs/architecture.md, Run
# directory): the selection, the LLM client and the runner are imported by the commands that use them.

__all__ = ["main", "run_status", "status_of"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``qd`` console script; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args) or 0
    except BrokenPipeError:  # `qd status RUN | head`: the reader left; say nothing more (before ConnectionError)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (FileNotFoundError, FileExistsError, ValueError, RunLockedError, ConnectionError,
            sqlite3.OperationalError) as exc:  # ValueError: ConfigError too; OperationalError: a store being made
        print(f"qd: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nqd: interrupted; finished evaluations are saved (resume with --resume RUN_DIR)", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qd", description="Quality-diversity search over compound AI systems.")
    sub = parser.add_subparsers(metavar="COMMAND")

    run = sub.add_parser("run", help="run a search (the demo when no CONFIG is given)")
    run.add_argument("config", nargs="?", help="run config (TOML); omitted: the built-in demo")
    run.add_argument("--out", help="run directory (default: runs/NAME-TIMESTAMP)")
    run.add_argument("--resume", metavar="RUN_DIR", help="continue the run stored in RUN_DIR")
    run.add_argument("--evals", type=int, help="evaluation budget (run.evaluations)")
    run.add_argument("--seed", type=int, help="random seed (run.seed)")
    run.add_argument("--backend", help=f"evaluator.backend ({backends_help()}), or "
                                       "package.module:attribute of an evaluator factory")
    run.add_argument("--workers", type=int, help="evaluator.workers (Ray: evaluations at once; 0 = every CPU)")
    run.add_argument("--ray-address", help="evaluator.ray_address: 'auto' or HOST:PORT to join a cluster")
    run.add_argument("--llm-base-url", help="llm.base_url (OpenAI-compatible endpoint)")
    run.add_argument("--llm-model", help="llm.model")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.set_defaults(func=_cmd_run)

    status = sub.add_parser("status", help="summary of a run directory (reads the store only)")
    status.add_argument("run_dir")
    status.add_argument("--json", action="store_true", help="one JSON object")
    status.set_defaults(func=_cmd_status)

    plot = sub.add_parser("plot", help="heatmap of a run's archive")
    plot.add_argument("run_dir")
    plot.add_argument("-o", "--output", help="image file (default: RUN_DIR/heatmap.png)")
    plot.add_argument("--measures", help="two or more stored measures to plot, comma-separated: a,b")
    plot.add_argument("--curve", help="also write the QD-score curve to this file")
    plot.add_argument("--validated", action="store_true",
                      help="colour by validated scores (after `qd validate`), cells by validated measures")
    plot.set_defaults(func=_cmd_plot)

    elites = sub.add_parser("elites", help="export elite configurations")
    elites.add_argument("run_dir")
    which = elites.add_mutually_exclusive_group()
    which.add_argument("--top", type=_positive_int, metavar="K", help="the K best elites")
    which.add_argument("--diverse", type=_positive_int, metavar="K", help="K elites spread over measure space")
    elites.add_argument("--where", metavar="EXPR",
                        help="filter, e.g. 'llm_calls <= 4 and objective > 0.5' (names: objective, id, measures)")
    elites.add_argument("--format", choices=["json", "csv"], default="json")
    elites.add_argument("--traces", metavar="DIR",
                        help="also write each selected elite's full trace, as the run stored it, as "
                             "DIR/elite-ID.json; elites without a stored trace (a store written before qd kept "
                             "traces) are re-run under the tracer, which imports and runs the domain named in the "
                             "run's config: qd says so first")
    elites.add_argument("--export-traces", metavar="FILE",
                        help="also write the selected elites' traces as OpenTelemetry spans with OpenInference "
                             "attributes, in OTLP JSON (for Phoenix, an OpenTelemetry Collector, ...)")
    elites.add_argument("--rerun", action="store_true",
                        help="get --traces/--export-traces by re-running the elites even when the store keeps "
                             "their traces (LLM calls replay from the request cache when it is on; imports the "
                             "domain)")
    elites.add_argument("--export", metavar="DIR",
                        help="also write each selected elite in its domain's own format as DIR/elite-ID/ (a DSPy "
                             "domain: program.json for program.load, program/ for dspy.load); imports the domain")
    elites.set_defaults(func=_cmd_elites)

    validate = sub.add_parser("validate", help="re-score elites on held-out instances; the corrected QD score")
    validate.add_argument("run_dir")
    pick = validate.add_mutually_exclusive_group()
    pick.add_argument("--top", type=_positive_int, metavar="K", help="only the K best elites (no corrected QD score)")
    pick.add_argument("--diverse", type=_positive_int, metavar="K", help="only K elites spread over measure space")
    validate.add_argument("--samples", type=_positive_int, default=10, metavar="N",
                          help="held-out re-evaluations per elite (default 10)")
    validate.add_argument("--split", default="validation", help="the domain's held-out split (default validation)")
    validate.add_argument("--backend", help=f"evaluator ({backends_help()}) or package.module:attribute "
                                            "(default: the run's)")
    validate.add_argument("--json", action="store_true", help="one JSON object with a row per elite")
    validate.set_defaults(func=_cmd_validate)

    report = sub.add_parser("report", help="one self-contained HTML file to explore a run (reads the store only)")
    report.add_argument("run_dir")
    report.add_argument("-o", "--output", help="HTML file (default: RUN_DIR/report.html)")
    report.set_defaults(func=_cmd_report)

    domains = sub.add_parser("domains", help="list the built-in domains")
    domains.set_defaults(func=_cmd_domains)

    llm = sub.add_parser("llm", help="LLM utilities")
    llm_sub = llm.add_subparsers(metavar="ACTION")
    serve = llm_sub.add_parser("serve", help="serve the embedded model as an OpenAI-compatible endpoint")
    serve.add_argument("--port", type=int, default=None)
    serve.add_argument("--host", default="127.0.0.1",
                       help="bind address (default loopback; another address serves other nodes, without auth)")
    serve.set_defaults(func=_cmd_llm_serve)
    return parser


# -- run ---------------------------------------------------------------------------------------
def _cmd_run(args: argparse.Namespace) -> int:
    from qd.config import demo_operators_note
    from qd.llm.client import LLMError
    from qd.runner import resolve_run_config, run_search

    overrides: dict[str, dict[str, Any]] = {}

    def put(section: str, key: str, value: Any) -> None:
        if value is not None:
            overrides.setdefault(section, {})[key] = value

    put("run", "evaluations", args.evals)
    put("run", "seed", args.seed)
    put("evaluator", "backend", args.backend)
    put("evaluator", "workers", args.workers)
    put("evaluator", "ray_address", args.ray_address)
    put("llm", "base_url", args.llm_base_url)
    put("llm", "model", args.llm_model)
    if args.resume and args.out and Path(args.out) != Path(args.resume):
        raise ValueError("--resume names the run directory; do not also pass a different --out")
    run_dir = Path(args.resume or args.out or f"runs/{_default_name(args.config)}-{time.strftime('%Y%m%d-%H%M%S')}")
    config = resolve_run_config(args.config, run_dir, bool(args.resume), overrides)
    print(f"qd: {'resuming' if args.resume else 'running'} {config['run']['name']!r} "
          f"({config['domain']['name']}, {config['run']['evaluations']} evaluations) in {run_dir}", file=sys.stderr)
    if args.config is None and not args.resume:
        print(demo_operators_note(config), file=sys.stderr)
    try:
        run = run_search(config, run_dir, resume=bool(args.resume), progress=not args.no_progress)
    except LLMError as exc:  # the LLM client's fail-fast: its first calls all failed for one persistent cause
        stopped = read_run(run_dir)
        try:
            _print_summary(stopped)
        finally:
            stopped.store.close()
        print(f"qd: stopped early: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        if (run_dir / "run.sqlite").exists():
            print(f"\nqd: interrupted; finished evaluations are saved (continue: qd run --resume {run_dir})",
                  file=sys.stderr)
            return 130
        raise
    try:
        _print_summary(run)
        stopped = run.store.get_meta("stopped")
    finally:
        run.store.close()
    if stopped:  # the space ran out before the budget: a clean end, said once more where it is seen
        print(f"qd: {_stopped_line(stopped)}", file=sys.stderr)
    return 0


def _stopped_line(stopped: dict[str, Any]) -> str:
    """``stopped early at 8 of 20 evaluations: REASON`` from the store's ``stopped`` meta."""
    return f"stopped early at {stopped['evaluations']} of {stopped['budget']} evaluations: {stopped['reason']}"


def _positive_int(text: str) -> int:
    """An argparse type: an integer >= 1 (``--top``, ``--diverse``, ``--samples``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def _default_name(config_path: str | None) -> str:
    return Path(config_path).stem if config_path else "demo"


def _print_summary(run: Any) -> None:
    from qd.analysis.selection import spanning_elites

    s = run.archive.stats
    best = f"{s.obj_max:.4g}" if s.num_elites else "-"
    print(f"\nevaluations: {run.store.count()}  elites: {s.num_elites}  coverage: {s.coverage:.1%}  "
          f"qd_score: {s.qd_score:.4g}  best: {best}")
    names = run.archive.measure_names
    obj = run.archive.objective_name
    picks = spanning_elites(run.archive, obj)
    if picks:
        print(f"elites spanning the map ({obj} over {', '.join(names)}):")
        for label, elite in picks:
            measures = "  ".join(f"{n}={v:.3g}" for n, v in zip(names, elite["measures"]))
            print(f"  {label}\n      {obj}={elite['objective']:.4g}  {measures}  (id {elite['id']})")
            print(f"      {_config_line(elite['solution'])}")
    llm_counters = run.store.counters("llm")
    for line in _llm_failure_lines(llm_counters.get("total", {}), run.store.get_meta("llm_last_errors", {})):
        print(line)
    unusable = _unusable_answers(run.store.counters("operators"), llm_counters)
    if unusable:
        print("LLM answers with no usable configuration: " + ", ".join(f"{op} {n}" for op, n in unusable.items()))
    totals = getattr(run, "totals", None) or run.store.get_meta(TOTALS_META)
    for line in failure_lines(totals["failures"]):
        print(line)
    lows, highs = run.archive.lower_bounds, run.archive.upper_bounds
    for i, (name, c) in enumerate(totals["out_of_range"].items()):
        if c["below"] + c["above"]:
            print(f"out of range: {describe(name, i, float(lows[i]), float(highs[i]), c)}")
    if (run.path / "heatmap.png").exists():
        print(f"heatmap: {run.path / 'heatmap.png'}")
    print(f"inspect: qd status {run.path}   qd elites {run.path} --diverse 5")


def _unusable_answers(operators: dict[str, dict], llm_tags: Any) -> dict[str, int]:
    """LLM operators' answers no configuration could be read from: offspring minus valid, per operator."""
    return {name: int(o.get("offspring", 0) - o.get("valid", 0)) for name, o in operators.items()
            if name in llm_tags and o.get("offspring", 0) > o.get("valid", 0)}


def _llm_failure_lines(total: dict, last_errors: dict) -> list[str]:
    """``LLM calls failed: authentication 5 (HTTP 401: ...)``: the run's LLM failures by cause."""
    from qd.llm.client import CAUSES

    failed = {c: int(total.get(f"failed_{c}", 0)) for c in CAUSES if total.get(f"failed_{c}")}
    if not failed:
        return []
    lines = [f"LLM calls failed: {sum(failed.values())} of {int(total.get('calls', 0)) + sum(failed.values())}"]
    for cause, n in failed.items():
        message = last_errors.get(cause, "")
        lines.append(f"  {cause.replace('_', ' ')} {n}" + (f": {_cut(message, 200)}" if message else ""))
    return lines


def _config_line(config: Any, limit: int = 160) -> str:
    """A configuration on one line: ``key=value`` pairs, long strings cut (for the run summary)."""
    if not isinstance(config, dict):
        return _cut(json.dumps(config, default=str), limit)
    parts = []
    for key, value in config.items():
        if isinstance(value, float):
            shown = f"{value:.3g}"
        elif isinstance(value, str):
            shown = json.dumps(_cut(value, 40))
        else:
            shown = _cut(json.dumps(value, default=str), 40)
        parts.append(f"{key}={shown}")
    return _cut(" ".join(parts), limit)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- status ------------------------------------------------------------------------------------
def run_status(run_dir: str | Path) -> dict[str, Any]:
    """The ``qd status --json`` object of a run directory."""
    run = read_run(run_dir, solutions=False)
    try:
        return status_of(run)
    finally:
        run.store.close()


def status_of(run: Any) -> dict[str, Any]:
    """The ``qd status --json`` object of a run opened with :func:`qd.rundir.read_run` (``qd report`` shows it too).

    Reads the stored archive, running totals and counters only, never every evaluation.
    """
    from qd.llm.client import CAUSES
    from qd.result import STATUSES

    s = run.archive.stats
    statuses = {k: 0 for k in STATUSES}
    statuses.update(run.totals["statuses"])
    counters = run.store.counters("operators")
    operators = {}
    for name, c in counters.items():
        offspring = int(c.get("offspring", 0))
        gains, tokens = int(c.get("gains", 0)), int(c.get("tokens", 0))
        operators[name] = {
            "offspring": offspring, "valid": int(c.get("valid", 0)), "duplicates": int(c.get("duplicates", 0)),
            "filtered": int(c.get("filtered", 0)),  # proposals the pre-evaluation filter did not choose
            "evaluated": int(c.get("evaluated", 0)), "gains": gains, "spent": int(c.get("spent", 0)),
            "llm_failures": int(c.get("llm_failures", 0)), "tokens": tokens,
            "time_s": round(c.get("time_s", 0.0), 3), "share": round(c["share"], 4) if "share" in c else None,
            # rates over the operator's offspring: valid after repair / repeated a seen config
            "validity_rate": round(c.get("valid", 0) / offspring, 4) if offspring else None,
            "duplicate_rate": round(c.get("duplicates", 0) / offspring, 4) if offspring else None,
            "gain_rate": round(gains / c["evaluated"], 4) if c.get("evaluated") else None,
            "tokens_per_gain": round(tokens / gains, 1) if tokens and gains else None,
            # adaptive weights (qd.bandit): False when the operator does not pay and is held at the floor
            "pays": bool(c["pays"]) if "pays" in c else None, "value": c.get("value"),
        }
    llm_counters = run.store.counters("llm")
    fields = ("calls", "tokens_in", "tokens_out", "cache_hits", "failures", "errors", "cost_usd", "latency_s")

    def usage(u: dict) -> dict:  # counts as ints; cost and latency stay floats
        return {k: (round(u.get(k, 0.0), 6) if k in ("cost_usd", "latency_s") else int(u.get(k, 0))) for k in fields}

    llm = usage(llm_counters.get("total", {}))
    llm["by_operator"] = {tag: usage(u) for tag, u in llm_counters.items() if tag != "total"}
    total = llm_counters.get("total", {})
    llm["failed_by_cause"] = {c: int(total[f"failed_{c}"]) for c in CAUSES if total.get(f"failed_{c}")}
    # LLM answers no configuration could be read from (operators' invalid offspring), by operator
    llm["unusable_answers"] = _unusable_answers(operators, llm["by_operator"])
    llm["last_errors"] = run.store.get_meta("llm_last_errors", {})
    spend = _spend(run.totals["pipeline"], run.config["llm"], llm)
    from qd.validate import noise_status
    return {
        "run_dir": str(run.path), "name": run.config["run"]["name"], "domain": run.config["domain"]["name"],
        "evaluations": run.totals["evaluations"], "budget": run.config["run"]["evaluations"],
        "num_elites": s.num_elites, "coverage": s.coverage, "qd_score": s.qd_score,
        "obj_max": s.obj_max if s.num_elites else None,
        "invalid": statuses["invalid"], "errors": statuses["error"] + statuses["crash"] + statuses["timeout"],
        "statuses": statuses, "failures": run.totals["failures"], "operators": operators, "llm": llm, "spend": spend,
        "out_of_range": run.totals["out_of_range"],
        "stopped": run.store.get_meta("stopped"),  # why the last session ended before its budget, or None
        # noise handling and held-out validation (stale once the archive changed), if any
        **noise_status(run.store, run.archive, run.totals["evaluations"]),
    }


def _spend(pipeline_totals: dict[str, Any], llm_cfg: dict, operators_llm: dict) -> dict[str, Any]:
    """LLM calls, tokens and cost of the pipeline, of the operators, and in total.

    The pipeline's are the run's running totals of its evaluations' traces (``qd.totals``), the
    operators' come from ``operators_llm``, priced by ``llm_cfg`` (the run's ``[llm]``). Models
    missing from the price table are listed as ``unpriced`` (their calls cost 0 here);
    ``untraced_calls`` are pipeline calls no evaluation could own (``qd.analysis.autotrace``).
    """
    from qd.llm.prices import normalize_prices, price_of

    keys = ("calls", "tokens_in", "tokens_out", "cost_usd")
    pipeline: dict[str, Any] = {k: pipeline_totals.get(k, 0) for k in keys}
    pipeline.update({k: pipeline_totals.get(k, 0) for k in ("estimated_calls", "untraced_calls", "untraced_tokens")})
    pipeline["cost_usd"] = round(pipeline["cost_usd"], 6)
    pipeline["unpriced_models"] = sorted(pipeline_totals.get("unpriced_models", ()))
    operators = {k: operators_llm.get(k, 0) for k in keys}
    table = normalize_prices(llm_cfg.get("prices") or None)
    priced = price_of(table, llm_cfg["model"]) is not None
    operators["unpriced_models"] = [] if priced or not operators["calls"] else [llm_cfg["model"]]
    total = {k: (round(pipeline[k] + operators[k], 6) if k == "cost_usd" else pipeline[k] + operators[k]) for k in keys}
    total["unpriced_models"] = sorted(set(pipeline["unpriced_models"]) | set(operators["unpriced_models"]))
    return {"pipeline": pipeline, "operators": operators, "total": total}


def _cmd_status(args: argparse.Namespace) -> int:
    status = run_status(args.run_dir)
    if args.json:
        print(json.dumps(status, default=_json_default))
        return 0
    print(f"{status['name']} ({status['domain']}): {status['evaluations']}/{status['budget']} evaluations")
    print(f"elites {status['num_elites']}  coverage {status['coverage']:.1%}  qd_score {status['qd_score']:.4g}  "
          f"best {'-' if status['obj_max'] is None else format(status['obj_max'], '.4g')}")
    if status["stopped"]:
        print(_stopped_line(status["stopped"]))
    print("statuses: " + ", ".join(f"{k} {v}" for k, v in status["statuses"].items()))
    for line in failure_lines(status["failures"]):
        print(line)
    if "noise" in status:
        n = status["noise"]
        print(f"noise: {n['policy']} ({'on' if n['active'] else 'off'}), {n['resamples']} re-evaluations "
              f"({n['resample_share']:.1%} of evaluations), up to {n['samples']} per configuration")
    if "validation" in status:
        v = status["validation"]
        corrected = (f"corrected qd_score {v['corrected_qd_score']:.4g}, coverage {v['corrected_coverage']:.1%}"
                     if v.get("corrected_qd_score") is not None else "no corrected score (not every elite)")
        stale = (f"  STALE: the archive changed since this validation (at {v.get('evaluations', '?')} evaluations, "
                 f"now {status['evaluations']}): run qd validate again" if v.get("stale") else "")
        print(f"validation ({v['split']}, {v['samples']} per elite, {v['elites']} elites): {corrected}; "
              f"mean gap {v['mean_gap'] if v['mean_gap'] is None else format(v['mean_gap'], '.4g')}{stale}")
    width = max([14, *(len(name) for name in status["operators"])])
    filtering = any(o["filtered"] for o in status["operators"].values())
    print(f"  {'operator':<{width}} {'offspring':>9} {'valid':>6} {'dup':>6} "
          + (f"{'filtered':>8} " if filtering else "")
          + f"{'evaluated':>9} {'gains':>6} {'gain/eval':>9} {'tokens':>8} {'tok/gain':>8} {'time_s':>8} "
          f"{'llm_fail':>8} {'share':>6}")
    for name, o in status["operators"].items():
        print(f"  {name:<{width}} {o['offspring']:>9} {_pct(o['validity_rate']):>6} {_pct(o['duplicate_rate']):>6} "
              + (f"{o['filtered']:>8} " if filtering else "")
              + f"{o['evaluated']:>9} {o['gains']:>6} {_pct(o['gain_rate']):>9} {o['tokens']:>8} "
              f"{o['tokens_per_gain'] if o['tokens_per_gain'] is not None else '-':>8} {o['time_s']:>8.1f} "
              f"{o['llm_failures']:>8} {_pct(o['share']):>6}")
    for line in _floor_lines(status["operators"]):
        print(line)
    llm = status["llm"]
    if llm["calls"] or llm["failures"] or llm["errors"]:
        print("llm: " + ", ".join(f"{k} {v}" for k, v in llm.items() if not isinstance(v, dict)))
    total = {"calls": llm["calls"], **{f"failed_{c}": n for c, n in llm["failed_by_cause"].items()}}
    for line in _llm_failure_lines(total, llm["last_errors"]):
        print(line)
    if llm["unusable_answers"]:
        print("LLM answers with no usable configuration: "
              + ", ".join(f"{op} {n}" for op, n in llm["unusable_answers"].items()))
    for name, c in status["out_of_range"].items():
        if c["below"] + c["above"]:
            print(f"out of range: {name}: {c['below']} below, {c['above']} above, of {c['of']} values")
    for part, row in status["spend"].items():
        if row["calls"] or row.get("untraced_calls"):
            extra = f", untraced calls {row['untraced_calls']}" if row.get("untraced_calls") else ""
            extra += f", estimated {row['estimated_calls']}" if row.get("estimated_calls") else ""
            extra += f", UNPRICED models {', '.join(row['unpriced_models'])}" if row["unpriced_models"] else ""
            print(f"spend {part}: calls {row['calls']}, tokens {row['tokens_in']} in / {row['tokens_out']} out, "
                  f"cost ${row['cost_usd']:.4f}{extra}")
    return 0


def _floor_lines(operators: dict[str, dict]) -> list[str]:
    """What the adaptive weights concluded: the operators that do not pay, against the best one."""
    judged = {name: o for name, o in operators.items() if o.get("pays") is not None}
    if not judged:
        return []
    best = max(judged, key=lambda name: judged[name]["value"] or 0.0)
    lines = []
    for name, o in judged.items():
        if not o["pays"]:
            tokens = o["tokens"] / o["spent"] if o["spent"] else 0.0
            lines.append(f"adaptive weights: {name} does not pay ({o['gains']} gains in {o['spent']} evaluations, "
                         f"{tokens:.0f} tokens each; value {o['value']:.3g} against {judged[best]['value']:.3g} for "
                         f"{best}): held at the floor, {_pct(o['share'])} of draws")
    return lines


def _pct(rate: float | None) -> str:
    return "-" if rate is None else f"{100 * rate:.0f}%"


# -- plot --------------------------------------------------------------------------------------
def _cmd_plot(args: argparse.Namespace) -> int:
    from qd.runner import save_heatmap

    run = read_run(args.run_dir, solutions=bool(args.measures))
    archive = run.archive
    if args.measures:
        from qd.analysis.selection import archive_over

        archive = archive_over(run.store, [m.strip() for m in args.measures.split(",") if m.strip()], like=run.archive)
    if args.validated:
        from qd.rundir import ARCHIVE_META, archive_from_spec
        from qd.validate import validated_archive

        archive = validated_archive(run.store, run.archive, archive_from_spec(run.store.get_meta(ARCHIVE_META)))
        if len(archive) == 0:
            raise ValueError(f"no validated elites in {args.run_dir}: run `qd validate {args.run_dir}` first")
    out = Path(args.output or run.path / ("heatmap-validated.png" if args.validated else "heatmap.png"))
    save_heatmap(archive, out, title=run.config["run"]["name"])
    print(out)
    if args.curve:
        _save_curve(run, Path(args.curve))
        print(args.curve)
    return 0


def _save_curve(run: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    from qd.archives.plot import qd_curve

    history = run.store.history()
    ax = qd_curve([h["evaluations"] for h in history], [h["qd_score"] for h in history],
                  label=run.config["run"]["name"])
    ax.figure.tight_layout()
    ax.figure.savefig(path, dpi=110)
    plt.close(ax.figure)


# -- elites ------------------------------------------------------------------------------------
def _cmd_elites(args: argparse.Namespace) -> int:
    from qd.analysis.selection import select_elites

    run = read_run(args.run_dir, solutions=args.where is not None)  # a filter may read any field
    records = select_elites(run.archive, top=args.top, diverse=args.diverse, where=args.where)
    if args.where is None:  # the configurations and feedback of the selected elites only
        stored = run.store.configs_of(r["id"] for r in records)
        for r in records:
            r["config"], r["feedback"] = stored[r["id"]][0], stored[r["id"]][1] or ""
    from qd.validate import elite_columns

    # samples per elite; validated score and gap once validated
    columns = elite_columns(run.store, run.archive, ids=[r["id"] for r in records])
    for r in records:
        r.update(columns.get(r["id"], {}))
    if args.traces or args.export_traces:
        traces = _elite_traces(run, records, rerun=args.rerun)
        if args.traces:
            from qd.analysis.elites import write_trace_files

            paths = write_trace_files(traces, args.traces)
            print(f"wrote {len(paths)} trace(s) to {args.traces}", file=sys.stderr)
        if args.export_traces:
            from qd.analysis.otlp import to_otlp

            described = [({"id": meta["elite_id"], "objective": meta["objective"], "config": meta["config"],
                           "trace_source": meta["source"]}, spans) for meta, spans in traces]
            out = Path(args.export_traces)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(to_otlp(described, run=str(run.path)), separators=(",", ":")) + "\n")
            print(f"wrote {len(traces)} trace(s) as OTLP JSON to {out}", file=sys.stderr)
    if args.export:
        from qd.runner import build_domain

        domain = build_domain(run.config)
        if not callable(getattr(domain, "export", None)):
            print(f"qd: domain {run.config['domain']['name']!r} has no export(config, directory) method; "
                  f"--export works for domains that define one (e.g. qd.domains.dspy_program.DSPyDomain)",
                  file=sys.stderr)
            return 2
        for r in records:
            domain.export(r["config"], Path(args.export) / f"elite-{r['id']}")
        print(f"wrote {len(records)} elite(s) to {args.export}", file=sys.stderr)
    if args.format == "json":
        print(json.dumps(records, indent=1, default=_json_default))
        return 0
    extra = [k for k in ("n", "mean", "sem", "validated", "validated_n", "gap") if any(k in r for r in records)]
    fields = ["id", "objective", *extra, *run.archive.measure_names, "config", "feedback"]
    writer = csv.DictWriter(sys.stdout, fieldnames=fields)
    writer.writeheader()
    for r in records:
        writer.writerow({**r, "config": json.dumps(r["config"], sort_keys=True, separators=(",", ":"))})
    return 0


def _elite_traces(run: Any, records: list[dict], rerun: bool) -> list[tuple[dict[str, Any], list]]:
    """``(meta, spans)`` per selected elite: the trace its evaluation stored, else (or with ``rerun``) a re-run's."""
    stored = {} if rerun else run.store.traces(r["id"] for r in records)
    missing = [r for r in records if r["id"] not in stored]
    rerun_of: dict[int, tuple[dict[str, Any], list]] = {}
    if missing:
        from qd.analysis.elites import rerun_traces
        from qd.runner import build_domain

        domain = run.config["domain"]
        why = ("--rerun" if rerun else f"{len(missing)} of {len(records)} selected elites have no stored trace "
               f"(the store was written before qd kept traces), so")
        print(f"qd: {why} re-running them imports and runs the domain named in {run.path / 'run.sqlite'}: "
              f"{domain['name']!r} with options {json.dumps(domain['options'], default=str)} (its code runs with "
              f"your permissions)", file=sys.stderr)
        elites = [{"id": r["id"], "objective": r["objective"], "solution": r["config"]} for r in missing]
        rerun_of = {meta["elite_id"]: (meta, spans) for meta, spans in rerun_traces(build_domain(run.config), elites)}
    return [rerun_of[r["id"]] if r["id"] in rerun_of else
            ({"elite_id": r["id"], "objective": r["objective"], "config": r["config"], "source": "stored"},
             stored[r["id"]]) for r in records]


# -- report --------------------------------------------------------------------------------------
def _cmd_report(args: argparse.Namespace) -> int:
    from qd.report import report

    started = time.perf_counter()
    path = report(args.run_dir, args.output)
    print(f"{path} ({path.stat().st_size / 1e6:.2f} MB, {time.perf_counter() - started:.1f} s)", file=sys.stderr)
    print(path)
    return 0


# -- validate ----------------------------------------------------------------------------------
def _cmd_validate(args: argparse.Namespace) -> int:
    from qd.validate import validate_run

    report = validate_run(args.run_dir, top=args.top, diverse=args.diverse, samples=args.samples,
                          split=args.split, backend=args.backend)
    if args.json:
        print(json.dumps(report.as_dict(), default=_json_default))
        return 0
    s = report.summary()
    print(f"validated {len(report.elites)} elites on {report.samples} {report.split} draw"
          f"{'s' if report.samples != 1 else ''} each ({report.evaluations} new evaluations, {report.failures} failed)")
    if report.samples < args.samples:
        print(f"(the domain has {report.samples} distinct {report.split} draw{'s' if report.samples != 1 else ''}: "
              "a fixed held-out set and a deterministic score; more would repeat it)")
    if report.corrected_qd_score is not None:
        print(f"qd_score {report.qd_score:.4g} -> corrected {report.corrected_qd_score:.4g}; "
              f"coverage {report.coverage:.1%} -> corrected {report.corrected_coverage:.1%}")
    if s["mean_gap"] is not None:
        print(f"mean gap (search score - validated score): {s['mean_gap']:.4g}")
    print(f"  {'id':>6} {'search':>9} {'validated':>9} {'sem':>7} {'gap':>8}")
    for e in sorted(report.elites, key=lambda e: -e.search_objective)[:20]:
        print(f"  {e.id:>6} {e.search_objective:>9.4g} {e.mean:>9.4g} {e.sem:>7.3g} {e.gap:>8.3g}")
    return 0


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


# -- domains, llm --------------------------------------------------------------------------------
def _cmd_domains(args: argparse.Namespace) -> int:
    from qd.domains import available_domains

    for name, doc in available_domains().items():
        print(f"{name:<16} {doc}")
    return 0


def _cmd_llm_serve(args: argparse.Namespace) -> int:
    from qd.llm.local import serve

    warning = serve_warning(args.host)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    serve(port=args.port, host=args.host)
    return 0


def serve_warning(host: str) -> str | None:
    """The warning ``qd llm serve`` prints when it binds a non-loopback address (the server has no auth)."""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name other than localhost: it may resolve to anything
        loopback = False
    if loopback:
        return None
    return (f"qd: warning: the embedded model server has no authentication: anyone who can reach {host} on its "
            "port can send it requests (and use this machine's CPU); bind a private address that only your nodes "
            "reach (docs/cluster.md, section 6)")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
