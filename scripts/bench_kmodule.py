"""Operator sets end to end on the k-module domain: paired seeds, equal evaluations.

Each seed runs every arm with the same run config but the operators (same seed, so the same
random initial configurations: the script asserts their hashes agree across arms), serially,
``noise = "none"`` (the domain is deterministic) and ``wait_for_llm = true`` (every operator gets
exactly its weight's share of evaluations):

``classic``          mutation + uniform crossover
``classic+filter``   the same, each draw proposing ``--proposals`` children to the pre-evaluation filter
``llm+filter``       LMX + LLM mutation + mutation (equal weights) with the same filter
``llm``              the LLM set without the filter (``--arms`` to include it)
``lmx+filter``       LMX + mutation (equal weights) with the filter (``--arms`` to include it)

Per run: the QD score, coverage and best objective at the budget, whether the right combination
was found and after how many evaluations, and the operators' LLM tokens; each run is appended to
``--out`` (JSON lines) as it finishes, and a rerun with the same ``--out`` skips the runs already
there (same feedback, budget, random share and proposals; each row names its commit, so a rerun
after a code change compares arms run at different commits only if told to), so an interrupted
benchmark loses at most one run. Then per arm the mean and median over
seeds, the paired comparison of each arm against ``classic+filter`` (the best non-LLM set:
median difference with its bootstrap interval, wins/losses, two-sided Wilcoxon p, Holm-adjusted
over the arms compared, A12; ``qd.bench.stats``), tokens per archive gain, and every seed's
figures. LLM calls go to the embedded gemma-3-270m through the request cache (a rerun replays them).

    nice -n 10 python scripts/bench_kmodule.py [--seeds 20] [--evals 100] [--init-random 20]
        [--feedback attributable|count] [--arms classic,classic+filter,llm+filter] [--out runs.jsonl]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from anywhere without installing

from qd.bench.stats import compare, holm  # noqa: E402
from qd.cli import run_status  # noqa: E402
from qd.config import resolve_config  # noqa: E402
from qd.runner import run_search  # noqa: E402

ARMS: dict[str, dict[str, Any]] = {
    "classic": {"mutation": 1.0, "uniform_crossover": 1.0, "filter": False},  # the default ("auto") is on here
    "classic+filter": {"mutation": 1.0, "uniform_crossover": 1.0, "filter": True},
    "llm+filter": {"lmx": 1.0, "llm_mutation": 1.0, "mutation": 1.0, "filter": True},
    "llm": {"lmx": 1.0, "llm_mutation": 1.0, "mutation": 1.0, "filter": False},
    "lmx+filter": {"lmx": 1.0, "mutation": 1.0, "filter": True},  # the probes' best LLM variant, with mutation
}
BASELINE = "classic+filter"
COMMIT = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                        text=True).stdout.strip() or "unknown"


def run_arm(arm: str, seed: int, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """One run; its figures at the budget."""
    operators = {**ARMS[arm], "wait_for_llm": True}
    if operators.get("filter"):
        operators["proposals"] = args.proposals
    config = resolve_config({
        "run": {"name": f"{arm}-{seed}", "evaluations": args.evals, "init_random": args.init_random, "seed": seed,
                "progress": False, "plot": False},
        "domain": {"name": "k-module", "options": {"feedback": args.feedback}},
        "archive": {"noise": "none"},
        "operators": operators,
        "llm": {"cache": True, "timeout_s": 300.0},
        "evaluator": {"backend": "serial"},
    })
    start = time.perf_counter()
    run = run_search(config, root / f"{arm.replace('+', '_')}-{seed}", progress=False)
    wall = time.perf_counter() - start
    rows = list(run.store.evaluations())
    solved = next((i + 1 for i, row in enumerate(rows) if row.metrics.get("solved")), None)
    initial = [row.hash for row in rows[: args.init_random]]  # the random initial configurations
    status = run_status(run.path)
    run.store.close()
    return {"arm": arm, "seed": seed, "commit": COMMIT, "feedback": args.feedback, "evals": args.evals,
            "init_random": args.init_random, "proposals": args.proposals, "qd": status["qd_score"],
            "coverage": status["coverage"],
            "best": status["obj_max"], "solved_at": solved, "tokens": status["spend"]["operators"]["tokens_in"]
            + status["spend"]["operators"]["tokens_out"], "gains": sum(1 for row in rows[args.init_random:]
                                                                        if row.archive_status > 0),
            "wall_s": wall, "initial": initial}


def summary(results: dict[str, list[dict]], arms: list[str]) -> str:
    """Markdown: per arm mean/median, the paired comparison against the baseline, then every seed."""
    versus = [arm for arm in arms if arm != BASELINE and BASELINE in results]
    comparisons = {arm: compare([r["qd"] for r in results[arm]], [r["qd"] for r in results[BASELINE]])
                   for arm in versus}
    adjusted = dict(zip(versus, holm([comparisons[arm].p for arm in versus])))
    lines = ["| arm | QD score mean (median) | coverage | best | solved | evaluations to solve, median | "
             "LLM tokens/run | tokens per archive gain | Δ QD vs classic+filter, median [95% CI] "
             "(wins/losses, Wilcoxon p, Holm p, A12) | wall s/run |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for arm in arms:
        rs = results[arm]
        qd = np.array([r["qd"] for r in rs])
        solved = [r["solved_at"] for r in rs if r["solved_at"] is not None]
        tokens, gains = sum(r["tokens"] for r in rs), sum(r["gains"] for r in rs)
        per_gain = f"{tokens / gains:,.0f}" if tokens and gains else "-"
        c = comparisons.get(arm)
        against = "-" if c is None else (f"{c.median_diff:+.2f} [{c.ci_low:+.2f}, {c.ci_high:+.2f}] ({c.wins}/"
                                         f"{c.losses}, p = {c.p:.3f}, Holm {adjusted[arm]:.3f}, A12 {c.a12:.2f})")
        lines.append(f"| {arm} | {qd.mean():.2f} ({np.median(qd):.2f}) | {np.mean([r['coverage'] for r in rs]):.1%} | "
                     f"{np.mean([r['best'] for r in rs]):.3f} | {len(solved)}/{len(rs)} | "
                     f"{np.median(solved) if solved else '-'} | {np.mean([r['tokens'] for r in rs]):,.0f} | "
                     f"{per_gain} | {against} | {np.mean([r['wall_s'] for r in rs]):.0f} |")
    lines += ["", "| seed | " + " | ".join(f"{arm}: QD (solved at)" for arm in arms) + " |",
              "|---|" + "---|" * len(arms)]
    for i, seed in enumerate(r["seed"] for r in results[arms[0]]):
        lines.append(f"| {seed} | " + " | ".join(f"{results[arm][i]['qd']:.2f} ({results[arm][i]['solved_at'] or '-'})"
                                                  for arm in arms) + " |")
    return "\n".join(lines)


def _done(path: Path | None, args: argparse.Namespace) -> dict[tuple[str, int], dict]:
    """The runs ``path`` already holds for this protocol, by (arm, seed)."""
    if path is None or not path.exists():
        return {}
    same = ("feedback", "evals", "init_random", "proposals")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for r in rows:
        r.setdefault("proposals", 4)  # the rows written before it was recorded ran with 4
    return {(r["arm"], r["seed"]): r for r in rows if all(r.get(k) == getattr(args, k) for k in same)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--evals", type=int, default=100)
    parser.add_argument("--init-random", type=int, default=20)
    parser.add_argument("--proposals", type=int, default=4)
    parser.add_argument("--feedback", default="attributable", choices=["attributable", "count", "none"])
    parser.add_argument("--arms", default="classic,classic+filter,llm+filter")
    parser.add_argument("--out", type=Path, help="JSON lines of the runs, appended as each finishes; runs already "
                        "there (same feedback, evaluations and random share) are not run again")
    args = parser.parse_args()
    arms = args.arms.split(",")
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        parser.error(f"unknown arms {unknown}; choose from {', '.join(ARMS)}")
    results: dict[str, list[dict]] = {arm: [] for arm in arms}
    done = _done(args.out, args)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="qd-bench-kmodule-") as tmp:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            runs = {}
            for arm in arms:
                runs[arm] = done.get((arm, seed)) or run_arm(arm, seed, args, Path(tmp))
                if (arm, seed) not in done and args.out is not None:
                    with args.out.open("a") as out:
                        out.write(json.dumps(runs[arm]) + "\n")
            initial = {tuple(r["initial"]) for r in runs.values()}
            assert len(initial) == 1, f"seed {seed}: the arms' random initial configurations differ"
            line = "  ".join(f"{arm} qd {r['qd']:.2f} solved@{r['solved_at'] or '-'} tok {r['tokens']}"
                             for arm, r in runs.items())
            print(f"seed {seed}: {line}  ({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
            for arm, r in runs.items():
                results[arm].append(r)
    print(f"k-module ({args.feedback} feedback), {args.evals} evaluations ({args.init_random} random), "
          f"{args.seeds} paired seeds, {(time.perf_counter() - start) / 60:.1f} min\n")
    print(summary(results, arms))


if __name__ == "__main__":
    main()
