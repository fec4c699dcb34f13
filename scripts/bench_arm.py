"""MAP-Elites with Iso+LineDD on the 20-joint arm: qd against pyribs, same operator settings and budget.

Prints QD score and coverage at the budget for each seed, their means, the ratio qd/pyribs, and
the engine's overhead per evaluation (wall time minus the time the arm itself takes), all measured
in this run. Needs the ``bench`` extra (``pip install -e '.[bench]'``).

    python scripts/bench_arm.py [--evals 20000] [--seeds 3]
"""
from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np
from qd.archives import GridArchive
from qd.domains.arm import ArmDomain
from qd.operators.classic import IsoLineDD

from qd.analysis.descriptors import resolve_measures
from qd.evaluators import SerialEvaluator
from qd.search import Search
from qd.store import RunStore

JOINTS, BINS, INIT = 20, (100, 100), 100
ISO_SIGMA_RAD, LINE_SIGMA = 0.1, 0.2   # pyribs units (radians); qd's Iso+LineDD works in [0, 1] per angle


def run_qd(seed: int, evals: int, store_dir: Path) -> tuple[dict, float]:
    domain = ArmDomain(joints=JOINTS)
    archive = GridArchive(dims=BINS, ranges=domain.default_ranges, measure_names=["x", "y"],
                          qd_score_offset=domain.qd_score_offset)
    op = IsoLineDD(domain.space, iso_sigma=ISO_SIGMA_RAD / (2 * math.pi), line_sigma=LINE_SIGMA)
    with RunStore(store_dir / f"qd-{seed}.sqlite") as store:
        search = Search(domain, archive, SerialEvaluator(domain), operators={"iso_line_dd": (op, 1.0)},
                        measures=resolve_measures(["x", "y"], domain), budget=evals, store=store,
                        init_random=INIT, seed=seed)
        start = time.perf_counter()
        search.run()
        wall = time.perf_counter() - start
        search.close()
    return _stats(archive.stats), wall


def run_pyribs(seed: int, evals: int) -> tuple[dict, float]:
    from ribs.archives import GridArchive as RibsGrid
    from ribs.emitters import IsoLineEmitter
    from ribs.schedulers import Scheduler

    domain = ArmDomain(joints=JOINTS)
    archive = RibsGrid(solution_dim=JOINTS, dims=BINS, ranges=domain.default_ranges,
                       qd_score_offset=domain.qd_score_offset, seed=seed)
    rng = np.random.default_rng(seed)
    initial = rng.uniform(-math.pi, math.pi, size=(INIT, JOINTS))
    emitter = IsoLineEmitter(archive, iso_sigma=ISO_SIGMA_RAD, line_sigma=LINE_SIGMA, initial_solutions=initial,
                             bounds=[(-math.pi, math.pi)] * JOINTS, batch_size=INIT, seed=seed)
    scheduler = Scheduler(archive, [emitter])
    done = 0
    start = time.perf_counter()
    while done < evals:
        solutions = scheduler.ask()
        objective = -np.var(solutions, axis=1)
        cumulative = np.cumsum(solutions, axis=1)
        measures = np.stack([np.cos(cumulative).sum(axis=1), np.sin(cumulative).sum(axis=1)], axis=1)
        scheduler.tell(objective, measures)
        done += len(solutions)
    return _stats(archive.stats), time.perf_counter() - start


def _stats(s) -> dict:
    return {"qd_score": float(s.qd_score), "coverage": float(s.coverage), "obj_max": float(s.obj_max)}


def arm_eval_seconds(n: int) -> float:
    """Seconds per evaluation of the arm itself (the part the engine does not own)."""
    domain = ArmDomain(joints=JOINTS)
    rng = np.random.default_rng(0)
    configs = [domain.space.sample(rng) for _ in range(n)]
    start = time.perf_counter()
    for config in configs:
        domain.evaluate(config)
    return (time.perf_counter() - start) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evals", type=int, default=20000)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            qd_stats, qd_wall = run_qd(seed, args.evals, Path(tmp))
            rb_stats, rb_wall = run_pyribs(seed, args.evals)
            rows.append((seed, qd_stats, qd_wall, rb_stats, rb_wall))
            print(f"seed {seed}: qd {qd_stats} in {qd_wall:.1f}s | pyribs {rb_stats} in {rb_wall:.1f}s", flush=True)
    eval_s = arm_eval_seconds(2000)
    print(f"\nArm, {JOINTS} joints, grid {BINS[0]}x{BINS[1]}, {args.evals} evaluations, Iso+LineDD "
          f"(iso_sigma {ISO_SIGMA_RAD} rad, line_sigma {LINE_SIGMA}), {args.seeds} seeds\n")
    print("| metric | qd (mean ± sd) | pyribs (mean ± sd) | qd / pyribs |")
    print("| --- | --- | --- | --- |")
    for key in ("qd_score", "coverage", "obj_max"):
        a = np.array([r[1][key] for r in rows])
        b = np.array([r[3][key] for r in rows])
        ratio = a.mean() / b.mean() if key != "obj_max" else b.mean() / a.mean()
        label = key if key != "obj_max" else "obj_max (ratio pyribs/qd: >1 means qd better)"
        print(f"| {label} | {a.mean():.4g} ± {a.std():.2g} | {b.mean():.4g} ± {b.std():.2g} | {ratio:.3f} |")
    qd_wall = np.mean([r[2] for r in rows])
    rb_wall = np.mean([r[4] for r in rows])
    overhead_ms = (qd_wall / args.evals - eval_s) * 1e3
    print(f"| wall time (s) | {qd_wall:.2f} | {rb_wall:.2f} | {qd_wall / rb_wall:.2f} |")
    print(f"\nqd engine overhead per evaluation (steady-state, one at a time, SQLite commit per evaluation, "
          f"excluding the arm's own {eval_s * 1e6:.1f} µs): {overhead_ms:.3f} ms (target <= 1 ms)")


if __name__ == "__main__":
    main()
