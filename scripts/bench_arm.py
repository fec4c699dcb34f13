"""MAP-Elites with Iso+LineDD on the 20-joint arm from the straight arm: qd against pyribs.

Both start from the straight arm (all angles 0, as pyribs's arm tutorial does) and run
Iso+LineDD (line sigma 0.2) at each iso sigma in radians, on a 100x100 grid with QD score offset
-10, for the same number of evaluations and seeds. qd's side is a run config (``qd_config`` below)
run by ``qd.runner.run_search``: ``[run] seeds = "default"``, ``init_random = 0`` and
``[operators.iso_line_dd]`` with ``iso_sigma`` in radians. pyribs's side is ``IsoLineEmitter``
(``x0`` zeros, default batch size) under its ``Scheduler``.

Prints, per iso sigma, QD score and coverage (mean ± sd over seeds) of both, then the ratio of
qd's best setting to pyribs's best setting, and the wall time per run. Needs the ``bench``
extra (``pip install -e '.[bench]'``).

    python scripts/bench_arm.py [--evals 20000] [--seeds 3] [--sigmas 0.01 0.05 0.1]
"""
from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np

from qd.config import resolve_config
from qd.domains.arm import ArmDomain
from qd.runner import run_search

JOINTS, BINS, OFFSET, LINE_SIGMA = 20, (100, 100), -10.0, 0.2


def qd_config(iso_sigma: float, evals: int, seed: int) -> dict:
    """The run config of one qd run (what a user would write in TOML)."""
    return resolve_config({
        "run": {"name": f"bench-arm-{iso_sigma}-{seed}", "evaluations": evals, "seed": seed, "seeds": "default",
                "init_random": 0, "progress": False, "plot": False},
        "domain": {"name": "arm", "options": {"joints": JOINTS}},
        "archive": {"type": "grid", "measures": ["x", "y"], "bins": list(BINS),
                    "ranges": [[-JOINTS, JOINTS], [-JOINTS, JOINTS]], "qd_score_offset": OFFSET, "noise": "none"},
        "operators": {"iso_line_dd": {"weight": 1.0, "iso_sigma": iso_sigma, "line_sigma": LINE_SIGMA}},
        "evaluator": {"backend": "serial"},
    })


def run_qd(iso_sigma: float, evals: int, seed: int, tmp: Path) -> tuple[dict, float]:
    config = qd_config(iso_sigma, evals, seed)
    start = time.perf_counter()
    run = run_search(config, tmp / f"qd-{iso_sigma}-{seed}", progress=False)
    wall = time.perf_counter() - start
    run.store.close()
    return _stats(run.archive.stats), wall


def run_pyribs(iso_sigma: float, evals: int, seed: int) -> tuple[dict, float]:
    from ribs.archives import GridArchive as RibsGrid
    from ribs.emitters import IsoLineEmitter
    from ribs.schedulers import Scheduler

    archive = RibsGrid(solution_dim=JOINTS, dims=BINS, ranges=[(-JOINTS, JOINTS)] * 2, qd_score_offset=OFFSET,
                       seed=seed)
    emitter = IsoLineEmitter(archive, iso_sigma=iso_sigma, line_sigma=LINE_SIGMA, x0=np.zeros(JOINTS),
                             bounds=[(-math.pi, math.pi)] * JOINTS, seed=seed)
    scheduler = Scheduler(archive, [emitter])
    done = 0
    start = time.perf_counter()
    while done < evals:
        solutions = scheduler.ask()[: evals - done]
        objective = -np.var(solutions, axis=1)
        cumulative = np.cumsum(solutions, axis=1)
        measures = np.stack([np.cos(cumulative).sum(axis=1), np.sin(cumulative).sum(axis=1)], axis=1)
        if len(solutions) < emitter.batch_size:  # the last, partial batch: insert it without the scheduler
            archive.add(solutions, objective, measures)
        else:
            scheduler.tell(objective, measures)
        done += len(solutions)
    return _stats(archive.stats), time.perf_counter() - start


def arm_eval_seconds(n: int) -> float:
    """Seconds per evaluation of the arm itself (the part the engine does not own)."""
    domain = ArmDomain(joints=JOINTS)
    rng = np.random.default_rng(0)
    configs = [domain.space.sample(rng) for _ in range(n)]
    start = time.perf_counter()
    for config in configs:
        domain.evaluate(config)
    return (time.perf_counter() - start) / n


def _stats(s) -> dict:
    return {"qd_score": float(s.qd_score), "coverage": float(s.coverage)}


def _mean_sd(rows: list[dict], key: str) -> tuple[float, float]:
    values = np.array([r[key] for r in rows])
    return float(values.mean()), float(values.std())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evals", type=int, default=20000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--sigmas", type=float, nargs="+", default=[0.01, 0.05, 0.1],
                        help="iso sigmas (radians) of pyribs's runs")
    parser.add_argument("--qd-sigmas", type=float, nargs="+", default=None,
                        help="iso sigmas (radians) of qd's runs (default: --sigmas)")
    args = parser.parse_args()
    qd_sigmas = args.qd_sigmas or args.sigmas
    results: dict[str, dict[float, list[dict]]] = {"qd": {}, "pyribs": {}}
    walls: dict[str, list[float]] = {"qd": [], "pyribs": []}
    with tempfile.TemporaryDirectory() as tmp:
        runs = [("qd", sigma, seed) for sigma in qd_sigmas for seed in range(args.seeds)]
        runs += [("pyribs", sigma, seed) for sigma in args.sigmas for seed in range(args.seeds)]
        for name, sigma, seed in runs:
            if name == "qd":
                stats, wall = run_qd(sigma, args.evals, seed, Path(tmp))
            else:
                stats, wall = run_pyribs(sigma, args.evals, seed)
            results[name].setdefault(sigma, []).append(stats)
            walls[name].append(wall)
            print(f"iso_sigma {sigma} seed {seed} {name}: qd_score {stats['qd_score']:.0f} "
                  f"coverage {stats['coverage']:.4f} ({wall:.1f} s)", flush=True)

    print(f"\nArm, {JOINTS} joints from the straight arm, grid {BINS[0]}x{BINS[1]}, QD offset {OFFSET}, "
          f"{args.evals} evaluations, Iso+LineDD (line_sigma {LINE_SIGMA}), {args.seeds} seeds\n")
    print("| iso_sigma (rad) | qd QD score | pyribs QD score | qd coverage | pyribs coverage |")
    print("| --- | --- | --- | --- | --- |")
    for sigma in sorted(set(qd_sigmas) | set(args.sigmas)):
        cells = []
        for key in ("qd_score", "coverage"):
            for name in ("qd", "pyribs"):
                if sigma not in results[name]:
                    cells.append("-")
                    continue
                mean, sd = _mean_sd(results[name][sigma], key)
                cells.append(f"{mean:.0f} ± {sd:.0f}" if key == "qd_score" else f"{mean:.4f} ± {sd:.4f}")
        print(f"| {sigma} | {cells[0]} | {cells[1]} | {cells[2]} | {cells[3]} |")

    print("\n| metric | qd best setting | pyribs best setting | qd / pyribs | target |")
    print("| --- | --- | --- | --- | --- |")
    for key in ("qd_score", "coverage"):
        best = {name: max(results[name], key=lambda s, n=name: _mean_sd(results[n][s], key)[0]) for name in results}
        qd_mean = _mean_sd(results["qd"][best["qd"]], key)[0]
        rb_mean = _mean_sd(results["pyribs"][best["pyribs"]], key)[0]
        ratio = qd_mean / rb_mean
        fmt = "{:.0f}" if key == "qd_score" else "{:.4f}"
        print(f"| {key} | {fmt.format(qd_mean)} (σ {best['qd']}) | {fmt.format(rb_mean)} (σ {best['pyribs']}) "
              f"| {ratio:.3f} | ≥ 0.95: {'met' if ratio >= 0.95 else 'NOT met'} |")
    print(f"\nwall time per run: qd {np.mean(walls['qd']):.1f} s (every evaluation committed to SQLite), "
          f"pyribs {np.mean(walls['pyribs']):.2f} s (numpy batches, no persistence)")
    eval_s = arm_eval_seconds(2000)
    overhead_ms = (np.mean(walls["qd"]) / args.evals - eval_s) * 1e3
    print(f"qd engine overhead per evaluation (whole run_search, batched ask/tell, excluding the arm's own "
          f"{eval_s * 1e6:.1f} µs): {overhead_ms:.3f} ms (target <= 1 ms)")


if __name__ == "__main__":
    main()
