"""Search that earns its evaluations: qd against random search, Optuna and pyribs, at equal evaluations.

Every arm of :mod:`qd.bench.arms` (qd's default and classic operator sets, random search, Optuna's
TPE and NSGA-II, pyribs's emitters on numeric spaces) searches each domain for the same number
of evaluations (re-evaluations included), from the same seed, the same initial configurations
and the same instances (asserted: :func:`qd.bench.arms.check_paired`). Each run's archive is
scored alike: corrected QD score and coverage (held-out re-evaluation of every elite), the
held-out score of the configuration the arm would hand out as its best, and the hypervolume of
its (objective, cost measures) front. Arms are compared seed by seed (Wilcoxon signed-rank,
Holm-adjusted per domain; Vargha-Delaney A12; bootstrap CI of the median difference).

Domains (``--domains``, any built-in or ``package.module:attribute`` name; the known ones are
:data:`qd.bench.arms.BENCH_DOMAINS`): ``retrieval-sim`` (SIMULATED LLM calls), ``arm`` (the
noisy 10-joint arm) and ``topics`` (REAL calls to the embedded model).

Runs go seed by seed (every arm on seed 0, then on seed 1, ...), so what has finished is paired;
each is appended to ``--results`` (JSON lines) at once, and a rerun skips the runs already there,
so the bench resumes after an interruption and grows by seeds. Then it prints, per
domain, a table per arm, the paired comparisons and the issue's targets, and writes one plot per
domain (every seed shown) to ``--out``. Usage::

    python scripts/bench_search.py [--domains retrieval-sim,arm] [--arms ARM,...] [--seeds 20]
        [--first-seed 0] [--llm-seeds 5] [--budget DOMAIN=N] [--init DOMAIN=N] [--results docs/bench_search.jsonl]
        [--out docs/img] [--report-only]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from anywhere without installing

from qd.bench.arms import ARMS, LLM_ARMS, arms_for, bench_domain, bench_run, check_paired, parse_arm  # noqa: E402
from qd.bench.report import METRICS, arm_table, comparison_table, plot_domain, seed_table, targets_table  # noqa: E402


def _pairs(items: list[str], what: str) -> dict[str, int]:
    out = {}
    for item in items:
        name, _, value = item.partition("=")
        if not value.isdigit():
            raise SystemExit(f"--{what} takes DOMAIN=N, got {item!r}")
        out[name] = int(value)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--domains", default="retrieval-sim,arm", help="comma-separated domain names")
    parser.add_argument("--arms", default=",".join(ARMS),
                        help=f"comma-separated subset of {','.join(ARMS)}; a qd arm may take ':noise=POLICY' "
                             "(then separate arms with ';')")
    parser.add_argument("--seeds", type=int, default=20, help="paired seeds per arm, from --first-seed (default 20)")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="the first seed (several processes can share one --results file by seed ranges)")
    parser.add_argument("--llm-seeds", type=int, default=None,
                        help=f"seeds of the arms whose operators call the embedded model ({', '.join(LLM_ARMS)}; "
                             "default: --seeds)")
    parser.add_argument("--budget", action="append", default=[], help="DOMAIN=N evaluations per run")
    parser.add_argument("--init", action="append", default=[], help="DOMAIN=N shared initial configurations")
    parser.add_argument("--results", default=str(ROOT / "docs" / "bench_search.jsonl"))
    parser.add_argument("--out", default=str(ROOT / "docs" / "img"))
    parser.add_argument("--report-only", action="store_true", help="tables and plots from --results, no runs")
    args = parser.parse_args(argv)
    wanted = [a.strip() for a in args.arms.split(";" if ":" in args.arms else ",") if a.strip()]
    for arm in wanted:
        try:
            parse_arm(arm)
        except ValueError as exc:
            parser.error(str(exc))
    budgets, inits = _pairs(args.budget, "budget"), _pairs(args.init, "init")
    results = Path(args.results)
    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()] if results.exists() else []
    done = {(r["domain"], r["arm"], r["seed"], r["budget"]) for r in rows}
    specs = {}
    for name in [d.strip() for d in args.domains.split(",") if d.strip()]:
        overrides = {k: v for k, v in (("budget", budgets.get(name)), ("init", inits.get(name))) if v is not None}
        specs[name] = spec = bench_domain(name, **overrides)
        if args.report_only:
            continue
        arms = arms_for(spec.build(), wanted)
        seeds_of = {arm: args.llm_seeds if (parse_arm(arm)[0] in LLM_ARMS and args.llm_seeds is not None)
                    else args.seeds for arm in arms}
        last = args.first_seed + max(seeds_of.values(), default=0)
        for seed in range(args.first_seed, last):  # seed by seed: what ran is paired
            for arm in arms:
                if seed >= args.first_seed + seeds_of[arm] or (name, arm, seed, spec.budget) in done:
                    continue
                start = time.perf_counter()
                row = bench_run(spec, arm, seed)
                rows.append(row)
                check_paired([r for r in rows if r["budget"] == spec.budget])
                results.parent.mkdir(parents=True, exist_ok=True)
                with results.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                print(f"{name} {arm} seed {seed}: corrected QD {row['corrected_qd']:.4g}, coverage "
                      f"{row['corrected_coverage']:.3f}, best validated {row['best_validated']:.3g}, hypervolume "
                      f"{row['hypervolume'] if row['hypervolume'] is None else round(row['hypervolume'], 4)}, "
                      f"{time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    for name, spec in specs.items():
        mine = [r for r in rows if r["domain"] == name and r["budget"] == spec.budget]
        if not mine:
            continue
        check_paired(mine)
        print(f"\n### {name}: {spec.budget} evaluations per run ({spec.init} shared initial configurations), "
              f"map {' x '.join(map(str, spec.bins))} over {', '.join(spec.measures)}\n")
        print(arm_table(mine, name), "\n")
        print(targets_table(mine, name, spec.objective_range), "\n")
        print(comparison_table(mine, name), "\n")
        print(f"Every seed's {METRICS['corrected_qd']}:\n")
        print(seed_table(mine, name))
        path = plot_domain(mine, name, Path(args.out) / f"bench_search_{name.replace(':', '_')}.png",
                           f"{name}: {spec.budget} evaluations per run; every seed (dots), paired seeds joined, "
                           f"medians (bars)")
        print(f"\nplot: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
