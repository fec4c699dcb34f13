"""Archive micro-benchmark: qd's ``archives`` against pyribs, side by side, in one run.

What it measures (numeric solutions, ``solution_dim=10``, 2 measures in ``[-1, 1]²``, on both
sides):

* ``GridArchive`` 100×100: insertion throughput (items/s) for batch sizes 1, 10, 100, 1,000
  and 10,000. Batch size 1 calls ``add_single`` on both sides; the others call ``add``.
* ``CVTArchive`` with 10,000 cells: build time (qd's KD-tree Lloyd vs pyribs's
  ``CVTArchive(solution_dim=..., centroids=10000, ranges=...)``, which runs sklearn k-means
  on 100,000 samples), then ``add`` throughput at batch size 100 and ``add_single``
  throughput. Both insertion rows use the same centroids (qd's) so only insertion is timed;
  out-of-range measures go to the centroid nearest the raw point on both sides.
* ``sample_elites(32)`` calls/s on a filled 100×100 grid archive.

Both libraries get the same pre-generated data (seeded): solutions ~ N(0, 1), objectives
~ U(0, 1), measures ~ N(0, 0.5) per coordinate (about 9% of points have a coordinate outside the range; the grid
puts them in its edge cells), so a row mixes new cells, improvements and rejections. Every
repeat starts from a fresh archive (construction is not timed), each side is warmed up once,
qd and pyribs repeats are interleaved so background load hits both alike, the garbage
collector is off while timing, and the best of the repeats is reported. After each insertion
row the two archives are compared exactly (every field of ``data()`` in order, and the
statistics) as a check that both did the same work.

Ratios are always of *speed* (qd / pyribs > 1 means qd is faster); for the build-time row
that is ``pyribs seconds / qd seconds``. Only ratios measured in the same run are meaningful
on a loaded machine.

Run from the repository root (needs the ``bench`` extra: ``pip install -e '.[bench]'``)::

    python scripts/bench_archive.py            # full run (README, Performance, gives its run time)
    python scripts/bench_archive.py --quick    # smoke run: smaller totals, pyribs CVT built on 10,000 samples
"""
from __future__ import annotations

import argparse
import gc
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qd.archives import CVTArchive, GridArchive  # noqa: E402

SOLUTION_DIM = 10
RANGES = [(-1.0, 1.0), (-1.0, 1.0)]
DIMS = [100, 100]
CVT_CELLS = 10_000
BATCH_SIZES = [1, 10, 100, 1000, 10_000]
SAMPLE_N = 32

TARGET_SINGLE = 20.0   # add_single speed vs pyribs
TARGET_BATCH = 1.0     # batch >= 1,000 speed vs pyribs
TARGET_CVT_BUILD = 1.0  # seconds for qd's 10k-cell CVT build


class Data:
    """Pre-generated items shared by both libraries."""

    def __init__(self, n: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.solutions = rng.normal(size=(n, SOLUTION_DIM))
        self.objective = rng.uniform(0.0, 1.0, size=n)
        self.measures = rng.normal(0.0, 0.5, size=(n, 2))
        # For add_single: per-item views built once (same objects for both sides), so the
        # timed loop measures the archive, not numpy slicing.
        self.single = list(zip(list(self.solutions), self.objective.tolist(), list(self.measures)))


# -- archive factories ---------------------------------------------------------------------------
def qd_grid():
    return GridArchive(DIMS, RANGES, solution_dim=SOLUTION_DIM, seed=0)


def ribs_grid():
    from ribs.archives import GridArchive as RibsGrid

    return RibsGrid(solution_dim=SOLUTION_DIM, dims=DIMS, ranges=RANGES, seed=0)


def qd_cvt_from(centroids: np.ndarray):
    return lambda: CVTArchive(centroids=centroids, ranges=RANGES, solution_dim=SOLUTION_DIM, seed=0)


def ribs_cvt_from(centroids: np.ndarray):
    from ribs.archives import CVTArchive as RibsCVT

    return lambda: RibsCVT(solution_dim=SOLUTION_DIM, centroids=centroids, ranges=RANGES, seed=0)


# -- timing --------------------------------------------------------------------------------------
def insert(archive, data: Data, batch: int, n: int) -> None:
    """Insert the first ``n`` items of ``data`` in batches of ``batch`` (add_single for 1)."""
    if batch == 1:
        add_single = archive.add_single
        for solution, objective, measures in data.single[:n]:
            add_single(solution, objective, measures)
    else:
        add, sols, obj, meas = archive.add, data.solutions, data.objective, data.measures
        for i in range(0, n, batch):
            add(sols[i:i + batch], obj[i:i + batch], meas[i:i + batch])


def timed(fn: Callable[[], object]) -> float:
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start
    finally:
        gc.enable()


def best_of(repeats: int, qd_run: Callable[[], float], ribs_run: Callable[[], float]) -> tuple[float, float]:
    """Warm up each side once, then interleave ``repeats`` runs of each; best (lowest) seconds."""
    qd_run(), ribs_run()
    qd_t, ribs_t = [], []
    for _ in range(repeats):
        qd_t.append(qd_run())
        ribs_t.append(ribs_run())
    return min(qd_t), min(ribs_t)


def same_archive(a, b) -> bool:
    """Identical elites in identical order, and identical statistics (qd's archives match pyribs exactly)."""
    da, db = a.data(), b.data()
    same_data = list(da) == list(db) and all(np.array_equal(da[k], db[k]) for k in db)
    sa, sb = a.stats, b.stats
    return same_data and all(getattr(sa, f) == getattr(sb, f) for f in ("num_elites", "qd_score", "obj_max"))


def insertion_row(make_qd, make_ribs, data: Data, batch: int, n: int, repeats: int,
                  checks: list[bool]) -> tuple[float, float]:
    n -= n % batch
    last: dict[str, object] = {}

    def run(make, key):
        def go() -> float:
            archive = make()
            seconds = timed(lambda: insert(archive, data, batch, n))
            last[key] = archive
            return seconds
        return go

    qd_s, ribs_s = best_of(repeats, run(make_qd, "qd"), run(make_ribs, "ribs"))
    checks.append(same_archive(last["qd"], last["ribs"]))
    return n / qd_s, n / ribs_s


# -- formatting ----------------------------------------------------------------------------------
def rate(x: float) -> str:
    if x >= 1e6:
        return f"{x / 1e6:.2f} M/s"
    if x >= 1e3:
        return f"{x / 1e3:.1f} k/s"
    return f"{x:.0f} /s"


def verdict(value: float, target: float, higher_is_better: bool = True) -> str:
    ok = value >= target if higher_is_better else value <= target
    return "met" if ok else "**missed**"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: smaller totals, 2 repeats, pyribs CVT built on 10,000 samples")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per row (default 3, quick 2)")
    args = parser.parse_args()

    try:
        import ribs
    except ImportError:
        sys.exit("pyribs is not installed: pip install -e '.[bench]'")

    quick = args.quick
    repeats = args.repeats or (2 if quick else 3)
    # Items inserted per timed repeat, by batch size (fixed totals: both sides do identical work).
    totals = ({1: 5_000, 10: 10_000, 100: 50_000, 1000: 100_000, 10_000: 100_000} if quick else
              {1: 30_000, 10: 100_000, 100: 300_000, 1000: 500_000, 10_000: 500_000})
    cvt_single_n, cvt_batch_n = (5_000, 50_000) if quick else (30_000, 300_000)
    sample_calls = 2_000 if quick else 20_000
    ribs_cvt_samples = 10_000 if quick else 100_000  # pyribs's default is 100,000
    data = Data(max(totals.values()))
    cvt_data = Data(cvt_batch_n)

    wall_start = time.perf_counter()
    rows: list[tuple[str, str, str, str, str]] = []
    checks: list[bool] = []

    def log(msg: str) -> None:
        print(f"  ... {msg} ({time.perf_counter() - wall_start:.0f} s)", file=sys.stderr, flush=True)

    # Grid insertion.
    for batch in BATCH_SIZES:
        q, r = insertion_row(qd_grid, ribs_grid, data, batch, totals[batch], repeats, checks)
        if batch == 1:
            case = "grid 100×100 add_single (batch 1), items/s"
            target = f"≥ {TARGET_SINGLE:.0f}×: {verdict(q / r, TARGET_SINGLE)}"
        else:
            case = f"grid 100×100 add, batch {batch:,}, items/s"
            target = f"≥ {TARGET_BATCH:.1f}×: {verdict(q / r, TARGET_BATCH)}" if batch >= 1000 else ""
        rows.append((case, rate(q), rate(r), f"{q / r:.2f}×", target))
        log(f"grid batch {batch}")

    # CVT build.
    from ribs.archives import CVTArchive as RibsCVT

    def qd_build() -> tuple[float, float]:
        cpu = time.process_time()
        wall = timed(lambda: CVTArchive(CVT_CELLS, RANGES, solution_dim=SOLUTION_DIM, seed=0))
        return wall, time.process_time() - cpu

    CVTArchive(1000, RANGES, solution_dim=SOLUTION_DIM, seed=1)  # warm-up (imports, caches)
    qd_build_s, qd_build_cpu = min(qd_build() for _ in range(repeats))
    log("qd CVT build")
    RibsCVT(solution_dim=SOLUTION_DIM, centroids=1000, ranges=RANGES, samples=10_000, seed=1)  # warm-up
    ribs_build_s = timed(lambda: RibsCVT(solution_dim=SOLUTION_DIM, centroids=CVT_CELLS, ranges=RANGES,
                                         samples=ribs_cvt_samples, seed=0))
    log("pyribs CVT build")
    samples_note = "" if ribs_cvt_samples == 100_000 else f"; --quick: pyribs on {ribs_cvt_samples:,} samples"
    rows.append((f"CVT {CVT_CELLS:,} cells build, s (once for pyribs{samples_note})",
                 f"{qd_build_s:.3f} s (CPU {qd_build_cpu:.3f} s)", f"{ribs_build_s:.2f} s",
                 f"{ribs_build_s / qd_build_s:.1f}×",
                 f"≤ {TARGET_CVT_BUILD:.0f} s: {verdict(qd_build_s, TARGET_CVT_BUILD, higher_is_better=False)}"))

    # CVT insertion (same centroids on both sides).
    centroids = CVTArchive(CVT_CELLS, RANGES, solution_dim=SOLUTION_DIM, seed=0).centroids
    for batch, n in ((1, cvt_single_n), (100, cvt_batch_n)):
        q, r = insertion_row(qd_cvt_from(centroids), ribs_cvt_from(centroids), cvt_data, batch, n, repeats, checks)
        case = (f"CVT {CVT_CELLS:,} add_single (batch 1), items/s" if batch == 1
                else f"CVT {CVT_CELLS:,} add, batch {batch}, items/s")
        rows.append((case, rate(q), rate(r), f"{q / r:.2f}×", ""))
        log(f"CVT batch {batch}")

    # sample_elites on a filled grid (the same elites on both sides).
    qd_full, ribs_full = qd_grid(), ribs_grid()
    insert(qd_full, data, 10_000, totals[10_000])
    insert(ribs_full, data, 10_000, totals[10_000])
    checks.append(same_archive(qd_full, ribs_full))
    rng = np.random.default_rng(0)

    def sampler(fn: Callable[[], object]) -> Callable[[], float]:
        def go() -> float:
            def loop() -> None:
                for _ in range(sample_calls):
                    fn()
            return timed(loop)
        return go

    qd_s, ribs_s = best_of(repeats, sampler(lambda: qd_full.sample_elites(SAMPLE_N, rng=rng)),
                           sampler(lambda: ribs_full.sample_elites(SAMPLE_N)))
    q, r = sample_calls / qd_s, sample_calls / ribs_s
    coverage = qd_full.stats.coverage
    rows.append((f"grid 100×100 sample_elites({SAMPLE_N}) ({coverage:.0%} full), calls/s", rate(q), rate(r),
                 f"{q / r:.2f}×", ""))
    log("sample_elites")
    total_s = time.perf_counter() - wall_start

    # Report.
    import numpy
    import scipy

    mode = "--quick smoke run; numbers are indicative only" if quick else "full run"
    print(f"# Archive benchmark: qd vs pyribs ({mode})\n")
    print(f"Python {platform.python_version()}, numpy {numpy.__version__}, scipy {scipy.__version__}, "
          f"pyribs {ribs.__version__}; {os.cpu_count()} CPUs; {platform.machine()}.")
    print(f"Numeric solutions (solution_dim={SOLUTION_DIM}), 2 measures in [-1, 1]², measures ~ N(0, 0.5), "
          f"objectives ~ U(0, 1), same data for both; fresh archive per repeat; best of {repeats} "
          f"after one warm-up.")
    print("Items per repeat: grid " + ", ".join(f"batch {b:,}: {n:,}" for b, n in totals.items())
          + f"; CVT add_single {cvt_single_n:,}, batch 100 {cvt_batch_n:,}; sample_elites {sample_calls:,} calls.")
    print(f"Targets: add_single ≥ {TARGET_SINGLE:.0f}× pyribs; "
          f"batch ≥ 1,000 at least {TARGET_BATCH:.1f}× pyribs; "
          f"CVT {CVT_CELLS:,}-cell build ≤ {TARGET_CVT_BUILD:.0f} s.")
    print("qd/pyribs is a speed ratio (> 1: qd faster); for the build row it is pyribs s / qd s.\n")
    print("| case | qd | pyribs | qd/pyribs | target |")
    print("| --- | ---: | ---: | ---: | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    agree = "yes" if all(checks) else f"NO ({checks.count(False)} of {len(checks)} rows differ)"
    print(f"\nIdentical data() and stats on both sides after every insertion row: {agree}. "
          f"Benchmark wall time: {total_s:.0f} s.")


if __name__ == "__main__":
    main()
