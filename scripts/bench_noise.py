"""Scores you can trust under noise: naive MAP-Elites against qd's noise handling, same budget.

Two noisy domains, each searched with ``[archive] noise = "none"`` (naive MAP-Elites: one
evaluation per configuration, what qd did before) and ``"auto"`` (the default: detects the
noise, then adaptive sampling, ``qd.noise``), over ``--seeds`` seeds, with the SAME number of
evaluations for both (re-evaluations count against the budget):

``retrieval-sim``  the retrieval pipeline with SIMULATED LLM calls (``domains/retrieval_sim.py``),
                   scored as accuracy on 3 questions per evaluation: sampling noise. A
                   re-evaluation uses 3 fresh questions.
``arm``            the planar arm with Gaussian noise (``--arm-noise``) added to the objective,
                   and with ``--arm-measure-noise`` to its x and y as well.

Per run, on the final archive:

- corrected QD score and coverage (``qd.analysis.validation.validate``): every elite re-evaluated
  10 times on held-out draws (the ``validation`` split), inserted by its mean objective and mean
  measures into an empty archive of the same shape;
- the ceiling: what naive MAP-Elites' corrected coverage would score with every elite at the best
  objective there is (accuracy 1; the arm's 0), over naive's corrected QD score. A policy that
  covers no more cells than naive cannot beat it; with the arm's offset (``-pi**2``) every
  filled cell is worth 8.9 to 9.9, so the ceiling there is close to 1;
- for the arm, the same search without any noise (``noiseless``: naive MAP-Elites on the exact
  objective and measures), what a policy with perfect information could hope for at this budget;
- optimism of the top elites: stored score minus TRUE score, mean over the ``--top`` elites with
  the best stored scores. True score: the arm's noise-free objective; for retrieval the accuracy
  on 120 held-out questions never used by the search nor by the corrected score.

Prints a markdown table (mean and standard deviation over seeds, and the ratios the README
quotes) and writes ``noise_bench.png``. Usage::

    python scripts/bench_noise.py [--seeds 10] [--retrieval-evals 6000] [--arm-evals 6000]
        [--arm-noise 1.0] [--arm-measure-noise 0.0] [--top 10] [--out docs/img]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from anywhere without installing

from qd.analysis.descriptors import resolve_measures  # noqa: E402
from qd.analysis.validation import validate  # noqa: E402
from qd.archives import GridArchive  # noqa: E402
from qd.domains import get_domain  # noqa: E402
from qd.evaluation import evaluate_config, with_draw  # noqa: E402
from qd.evaluators import SerialEvaluator  # noqa: E402
from qd.operators.classic import IsoLineDD, Mutation  # noqa: E402
from qd.search import Search  # noqa: E402
from qd.store import RunStore  # noqa: E402

POLICIES = ("none", "auto")
NOISELESS = "noiseless"  # the arm searched without noise: a row of the table, not a policy
RETRIEVAL = {"n_pairs": 16, "n_instances": 3, "max_samples": 3, "max_few_shot": 2}
BEST_OBJECTIVE = {"retrieval-sim": 1.0, "arm": 0.0}  # accuracy 1; the arm's -var(angles) 0
TRUTH_QUESTIONS = 120


def _setup(name: str, arm_noise: float, arm_measure_noise: float = 0.0):
    """Domain, archive factory, operators and a true-score function of one benchmark domain."""
    if name == "retrieval-sim":
        domain = get_domain("retrieval-sim", **RETRIEVAL)
        # 120 questions per evaluation on validation draw 1: disjoint from the search (search split)
        # and from the corrected score (validation draws 0..9 of 3 questions each).
        judge = get_domain("retrieval-sim", **{**RETRIEVAL, "n_instances": TRUTH_QUESTIONS})

        def truth(config: dict) -> float:
            return evaluate_config(judge, with_draw(config, 1, "validation")).objective

        names, dims, ops = list(domain.default_measures), [8, 8], {"mutation": (Mutation(domain.space), 1.0)}
    else:
        domain = get_domain("arm", joints=10, noise=arm_noise, measure_noise=arm_measure_noise)
        truth = domain.true_objective
        names, dims, ops = ["x", "y"], [10, 10], {"iso_line_dd": (IsoLineDD(domain.space), 1.0)}

    def empty() -> GridArchive:
        return GridArchive(dims=dims, ranges=domain.default_ranges, measure_names=names,
                           qd_score_offset=domain.qd_score_offset)

    return domain, empty, ops, truth, names


def run_one(name: str, policy: str, seed: int, budget: int, arm_noise: float, top: int,
            arm_measure_noise: float = 0.0) -> dict:
    """One search and its measurements."""
    domain, empty, ops, truth, names = _setup(name, arm_noise, arm_measure_noise)
    archive = empty()
    start = time.perf_counter()
    with Search(domain, archive, SerialEvaluator(domain), operators=ops, measures=resolve_measures(names, domain),
                budget=budget, init_random=50, seed=seed, noise=policy) as search:
        search.run()
        resamples = search.stats["resample"].evaluated if "resample" in search.stats else 0
        finished = search.finished
    search_s = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp, RunStore(Path(tmp) / "v.sqlite") as store:
        report = validate(store, archive, domain, SerialEvaluator(domain), measures=resolve_measures(names, domain),
                          samples=10, empty_archive=empty)
    best = archive.top(top)
    optimism = float(np.mean([e["objective"] - truth(e["solution"]) for e in best]))
    return {"domain": name, "policy": policy, "seed": seed, "evaluations": finished, "resamples": resamples,
            "elites": len(archive), "qd_score": float(archive.stats.qd_score), "cells": archive.cells,
            "best_cell_value": BEST_OBJECTIVE[name] - archive.qd_score_offset,
            "corrected_qd": report.corrected_qd_score, "corrected_coverage": report.corrected_coverage,
            "optimism": optimism, "search_s": search_s}


def _table(rows: list[dict]) -> str:
    lines = ["| domain | policy | evaluations | re-evaluations | search QD | corrected QD | corrected coverage "
             "| optimism of top elites |", "|---|---|---|---|---|---|---|---|"]
    for (d, p), group in _groups(rows).items():
        def ms(key: str, fmt: str = ".3g", group: list[dict] = group) -> str:
            v = np.array([r[key] for r in group], dtype=float)
            return f"{v.mean():{fmt}} ± {v.std():{fmt}}"
        lines.append(f"| {d} | {p} | {group[0]['evaluations']} | {ms('resamples', '.0f')} | {ms('qd_score')} | "
                     f"{ms('corrected_qd')} | {ms('corrected_coverage', '.2f')} | {ms('optimism')} |")
    lines.append("")
    lines.append("| domain | corrected QD, auto / none | optimism, auto / none | ceiling at naive's coverage "
                 "| noiseless search / none |")
    lines.append("|---|---|---|---|---|")
    groups = _groups(rows)
    for d in dict.fromkeys(r["domain"] for r in rows):
        a, n = groups[(d, "auto")], groups[(d, "none")]
        qd = np.mean([r["corrected_qd"] for r in a]) / np.mean([r["corrected_qd"] for r in n])
        opt = np.mean([r["optimism"] for r in a]) / np.mean([r["optimism"] for r in n])
        # What any policy would score with naive's corrected coverage and every elite at the best
        # objective there is: the most the corrected QD can gain without covering more cells.
        ceiling = np.mean([r["corrected_coverage"] * r["cells"] * r["best_cell_value"] for r in n]) / np.mean(
            [r["corrected_qd"] for r in n])
        exact = groups.get((d, NOISELESS))
        reference = f"{np.mean([r['corrected_qd'] for r in exact]) / np.mean([r['corrected_qd'] for r in n]):.2f}x" \
            if exact else "-"
        lines.append(f"| {d} | {qd:.2f}x | {opt:.2f} | {ceiling:.2f}x | {reference} |")
    return "\n".join(lines)


def _groups(rows: list[dict]) -> dict[tuple[str, str], list[dict]]:
    out: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        out.setdefault((r["domain"], r["policy"]), []).append(r)
    return out


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    domains = list(dict.fromkeys(r["domain"] for r in rows))
    fig, axes = plt.subplots(1, 2 * len(domains), figsize=(4.2 * len(domains) * 2, 3.4))
    groups = _groups(rows)
    for i, d in enumerate(domains):
        for j, (key, label) in enumerate((("corrected_qd", "corrected QD score"),
                                          ("optimism", "optimism of top elites"))):
            ax = axes[2 * i + j]
            data = [[r[key] for r in groups[(d, p)]] for p in POLICIES]
            ax.boxplot(data, tick_labels=["naive (none)", "auto (default)"])
            for k, values in enumerate(data):
                ax.scatter(np.full(len(values), k + 1.0), values, s=12, alpha=0.6)
            ax.set_title(f"{d}: {label}", fontsize=9)
            ax.grid(alpha=0.3)
    fig.suptitle("same evaluation budget per policy, re-evaluations included", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--retrieval-evals", type=int, default=6000)
    parser.add_argument("--arm-evals", type=int, default=6000)
    parser.add_argument("--arm-noise", type=float, default=1.0)
    parser.add_argument("--arm-measure-noise", type=float, default=0.0,
                        help="noise on the arm's x and y too (link lengths; cells are 2 wide)")
    parser.add_argument("--top", type=int, default=10, help="elites whose optimism is measured")
    parser.add_argument("--domains", default="retrieval-sim,arm")
    parser.add_argument("--out", default=str(ROOT / "docs" / "img"))
    args = parser.parse_args(argv)
    rows = []
    started = time.perf_counter()
    for name in args.domains.split(","):
        budget = args.retrieval_evals if name == "retrieval-sim" else args.arm_evals
        for seed in range(args.seeds):
            for policy in POLICIES + ((NOISELESS,) if name == "arm" else ()):
                if policy == NOISELESS:
                    row = {**run_one(name, "none", seed, budget, 0.0, args.top), "policy": NOISELESS}
                else:
                    row = run_one(name, policy, seed, budget, args.arm_noise, args.top, args.arm_measure_noise)
                rows.append(row)
                print(f"{name} {policy} seed {seed}: corrected QD {row['corrected_qd']:.4g}, optimism "
                      f"{row['optimism']:.3g}, re-evaluations {row['resamples']}, {row['search_s']:.1f} s",
                      file=sys.stderr)
    print(_table(rows))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _plot(rows, out / "noise_bench.png")
    print(f"\n{out / 'noise_bench.png'}; total {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
