"""Scale: a million evaluations on one driver, reading the run in a second, and the engine's overhead.

The issue's setting: the 20-joint arm, a 10,000-cell CVT archive (measures x, y), Iso+LineDD,
the serial backend, ``[archive] noise`` left at its default. Four parts, each printed with the
baseline it is compared with, measured in the same run:

1. ``overhead``: the serial engine's cost per evaluation (the wall time of ``Search.run`` in
   ``qd.runner.run_search``, every evaluation committed to the run store, minus the time spent
   inside ``ArmDomain.evaluate``) against pyribs's ask/tell loop (``Scheduler`` with one
   ``IsoLineEmitter`` of the same sigmas on a ``CVTArchive`` with the same centroids, minus its
   own evaluation time), over the same number of evaluations; the two alternate ``--repeats`` times
   and the best of each is kept (a shared machine's load moves), after one untimed warm-up of each
   (pyribs's first ask/tell in a process costs a quarter of a second once). A third loop,
   :func:`floor_overhead`, is the least an engine that keeps every evaluation must do: where
   qd's cost could go, and where no engine that writes each evaluation to SQLite from Python
   gets below. Target: qd / pyribs <= 5.
2. ``scale``: ``qd run`` of ``--evals`` evaluations in a child process: its resident memory over
   the run (sampled from /proc; the peak from ``wait4``), what it keeps per evaluation (the slope
   of its memory after the first 100,000), and the wall time of the first and the last 100,000
   evaluations (from the run's stored history). Their CPU time comes from the run itself (a
   ``[run] listeners`` entry, :class:`CpuMarks`, notes the process's CPU time every 10,000
   evaluations), and so does the machine's drift over the run: a fixed reference workload is timed
   at the edges of both windows, and the CPU ratio is also given divided by the reference's ratio.
   Targets: under 1 GB at the end, last / first <= 1.2.
3. ``read``: ``qd status``, ``qd status --json``, ``qd elites --top 10``, ``qd elites --diverse 10``
   and ``qd plot`` on that run, each in a fresh process (wall time and peak memory), against the
   start-up every command pays (``python -c "import qd.cli"``). Target: each under 2 s.
4. ``store``: bytes per evaluation of the run store, for the arm (the overhead part's run) and
   the demo's domain (retrieval with simulated LLM calls, mutation only), against the same
   evaluations written in the version 1 layout.

Needs the ``bench`` extra (``pip install -e '.[bench]'``; pyribs). Run it with ``nice`` on a
shared machine and read the load it prints next to the figures.

    python scripts/bench_scale.py [--evals 1000000] [--overhead-evals 100000] [--repeats 3]
                                  [--parts overhead,scale,read,store] [--keep DIR]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from qd.config import DEMO_CONFIG, dump_config, resolve_config
from qd.domains.arm import ArmDomain
from qd.listeners import SearchListener
from qd.store import V1_SCHEMA, RunStore

JOINTS, CELLS, ISO_SIGMA, LINE_SIGMA, SEED = 20, 10_000, 0.1, 0.2, 0
WINDOW = 100_000  # the first and last this many evaluations are compared
MARK = 10_000  # CpuMarks notes the CPU time this often
READS = [("status", []), ("status --json", ["--json"]), ("elites --top 10", ["--top", "10"]),
         ("elites --diverse 10", ["--diverse", "10"]), ("plot", ["-o", "{tmp}/heatmap.png"])]


def arm_config(evals: int, name: str = "arm-scale") -> dict:
    """The run config of the issue's setting (what a user would write in TOML)."""
    return resolve_config({
        "run": {"name": name, "evaluations": evals, "seed": SEED, "init_random": 100, "progress": False,
                "plot": False},
        "domain": {"name": "arm", "options": {"joints": JOINTS}},
        "archive": {"type": "cvt", "cells": CELLS, "measures": ["x", "y"]},
        "operators": {"iso_line_dd": {"weight": 1.0, "iso_sigma": ISO_SIGMA, "line_sigma": LINE_SIGMA}},
        "evaluator": {"backend": "serial"},
    })


class CpuMarks(SearchListener):
    """The scale run's own clock: its CPU seconds every :data:`MARK` evaluations, as JSON lines in ``path``.

    At the start, after the first :data:`WINDOW` evaluations, before the last ``WINDOW`` and at the
    end it also times :func:`reference_work` (its CPU time left out of the marks, its wall time noted
    so that the wall windows leave it out too), whose change over the run is the machine's, not the
    run's.
    """

    def __init__(self, path: str, evaluations: int):
        self.path, self.evaluations = Path(path), evaluations
        self.next_mark = 0
        self.edges = sorted({0, min(WINDOW, evaluations), max(evaluations - WINDOW, 0), evaluations})
        self.excluded = 0.0  # CPU seconds of the reference work so far

    def _note(self, search: Any) -> None:
        done = search.finished
        lines = []
        if done >= self.next_mark or done >= self.evaluations:
            lines.append({"evaluations": done, "cpu": time.process_time() - self.excluded})
            self.next_mark = (done // MARK + 1) * MARK
        while self.edges and done >= self.edges[0]:
            edge = self.edges.pop(0)
            start, wall = time.process_time(), time.perf_counter()
            cpu = reference_work()
            lines.append({"reference_at": edge, "reference_cpu": cpu, "reference_wall": time.perf_counter() - wall})
            self.excluded += time.process_time() - start
        if lines:
            with self.path.open("a") as out:
                out.writelines(json.dumps(line) + "\n" for line in lines)

    def on_start(self, search: Any) -> None:
        self._note(search)

    def on_results(self, search: Any, events: Any) -> None:
        self._note(search)

    def on_end(self, search: Any) -> None:
        self._note(search)


def reference_work() -> float:
    """CPU seconds of a fixed piece of driver-like work: 20,000 arm configurations validated, packed and hashed."""
    from qd.keyset import key_of_bytes
    from qd.space import Layout

    space = ArmDomain(joints=JOINTS).space
    layout = Layout.of(space)
    configs = [space.sample(np.random.default_rng(i)) for i in range(200)]
    start = time.process_time()
    for _ in range(100):
        for config in configs:
            space.is_valid(config)
            key_of_bytes(layout.pack(config))
            json.dumps(config)
    return time.process_time() - start


def load() -> str:
    return "load average " + " ".join(f"{v:.1f}" for v in os.getloadavg())


# -- 1. overhead ---------------------------------------------------------------------------------
def qd_overhead(evals: int, run_dir: Path) -> dict:
    """Per evaluation: wall and CPU seconds of qd's serial search, of its arm evaluations, and the rest (the engine)."""
    import qd.runner
    from qd.search import Search

    spent = {"evaluate": 0.0, "evaluate_cpu": 0.0, "run": 0.0, "run_cpu": 0.0}
    evaluate = ArmDomain.evaluate

    def timed(self, config, **kw):
        start, cpu = time.perf_counter(), time.thread_time()
        try:
            return evaluate(self, config, **kw)
        finally:
            spent["evaluate"] += time.perf_counter() - start
            spent["evaluate_cpu"] += time.thread_time() - cpu

    class TimedSearch(Search):
        def run(self):
            start, cpu = time.perf_counter(), time.process_time()
            try:
                return super().run()
            finally:
                spent["run"], spent["run_cpu"] = time.perf_counter() - start, time.process_time() - cpu

    ArmDomain.evaluate, qd.runner.Search = timed, TimedSearch
    try:
        run = qd.runner.run_search(arm_config(evals, "overhead"), run_dir, progress=False)
        run.store.close()
    finally:
        ArmDomain.evaluate, qd.runner.Search = evaluate, Search
    return {"wall": spent["run"] / evals, "evaluate": spent["evaluate"] / evals,
            "engine": (spent["run"] - spent["evaluate"]) / evals,
            "engine_cpu": (spent["run_cpu"] - spent["evaluate_cpu"]) / evals,
            "elites": int(run.archive.stats.num_elites)}


def pyribs_overhead(evals: int, centroids: np.ndarray) -> dict:
    """Per evaluation: wall and CPU seconds of pyribs's ask/tell loop, of its arm evaluations, and the rest."""
    from ribs.archives import CVTArchive
    from ribs.emitters import IsoLineEmitter
    from ribs.schedulers import Scheduler

    archive = CVTArchive(solution_dim=JOINTS, centroids=centroids, ranges=[(-JOINTS, JOINTS)] * 2,
                         qd_score_offset=-math.pi**2, seed=SEED)
    emitter = IsoLineEmitter(archive, iso_sigma=ISO_SIGMA, line_sigma=LINE_SIGMA, x0=np.zeros(JOINTS),
                             bounds=[(-math.pi, math.pi)] * JOINTS, seed=SEED)
    scheduler = Scheduler(archive, [emitter])
    done, evaluate_s, evaluate_cpu = 0, 0.0, 0.0
    start, cpu = time.perf_counter(), time.process_time()
    while done < evals:
        solutions = scheduler.ask()
        t, c = time.perf_counter(), time.process_time()
        objective = -np.var(solutions, axis=1)
        cumulative = np.cumsum(solutions, axis=1)
        measures = np.stack([np.cos(cumulative).sum(axis=1), np.sin(cumulative).sum(axis=1)], axis=1)
        evaluate_s += time.perf_counter() - t
        evaluate_cpu += time.process_time() - c
        scheduler.tell(objective, measures)
        done += len(solutions)
    wall, used = time.perf_counter() - start, time.process_time() - cpu
    return {"wall": wall / done, "evaluate": evaluate_s / done, "engine": (wall - evaluate_s) / done,
            "engine_cpu": (used - evaluate_cpu) / done, "elites": int(archive.stats.num_elites)}


def floor_overhead(evals: int, centroids: np.ndarray, db_path: Path) -> dict:
    """Per evaluation: CPU seconds of the least an engine that keeps every evaluation must do, and of the rest.

    A reference, not an engine: Iso+LineDD children made as one matrix per batch of 256 (parents'
    unit vectors kept per cell), each child a configuration dict identified by the sha256 of its
    float64 bytes and checked against the keys seen, the domain's result checked
    (``qd.result.check_result``), the batch inserted into a qd ``CVTArchive`` in one
    ``add_in_order``, and one row per evaluation written to SQLite (the run store's columns and
    pragmas, a commit per 2,000 rows). No validation, totals, counters, elites table, listeners,
    timeouts or noise policy.
    """
    import hashlib

    from qd.archives import CVTArchive
    from qd.result import check_result

    domain = ArmDomain(joints=JOINTS)
    archive = CVTArchive(ranges=[(-JOINTS, JOINTS)] * 2, centroids=centroids)
    db = sqlite3.connect(db_path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE evaluations (id INTEGER PRIMARY KEY, key INTEGER NOT NULL, config BLOB NOT NULL, "
               "status TEXT NOT NULL, fitness REAL, measures TEXT NOT NULL, error TEXT NOT NULL, "
               "feedback TEXT NOT NULL, operator TEXT NOT NULL, parent_ids TEXT NOT NULL, "
               "trace_summary TEXT NOT NULL, metrics BLOB NOT NULL, archive_status INTEGER NOT NULL, "
               "submitted_at REAL NOT NULL, finished_at REAL NOT NULL)")
    rng = np.random.default_rng(SEED)
    low, span = -math.pi, 2 * math.pi
    unit, ids = np.zeros((CELLS, JOINTS)), np.zeros(CELLS, dtype=np.int64)
    filled: list[int] = []  # occupied cells, to draw parents from
    seen: set[int] = set()
    rows: list[tuple] = []
    done, evaluate_cpu = 0, 0.0
    cpu = time.process_time()
    while done < evals:
        batch = min(256, evals - done)
        if len(filled) < 100:  # random initial configurations, as qd's run starts
            u, parents = rng.random((batch, JOINTS)), [[]] * batch
        else:
            cells = np.array(filled)[rng.integers(0, len(filled), size=2 * batch)]
            x1, x2 = unit[cells[:batch]], unit[cells[batch:]]
            u = (x1 + ISO_SIGMA / span * rng.standard_normal(x1.shape)
                 + LINE_SIGMA * rng.standard_normal((batch, 1)) * (x2 - x1)).clip(0.0, 1.0)
            parents = np.stack([ids[cells[:batch]], ids[cells[batch:]]], axis=1).tolist()
        children, keys, packs, units, lineage = [], [], [], [], []
        for row, urow, pids in zip((low + u * span).tolist(), u, parents):
            packed = np.array(row).tobytes()
            key = int.from_bytes(hashlib.sha256(packed).digest()[:8], "little", signed=True)
            if key not in seen:
                seen.add(key)
                children.append({"angles": row})
                keys.append(key)
                packs.append(packed)
                units.append(urow)
                lineage.append(pids)
        c = time.process_time()
        results = [domain.evaluate(child) for child in children]
        spent = time.process_time() - c
        evaluate_cpu += spent
        now = time.time()
        objectives, measures = [], []
        for j, result in enumerate(results):
            result = check_result(result)
            x, y = result.measures["x"], result.measures["y"]
            objectives.append(result.objective)
            measures.append((x, y))
            rows.append((done + j + 1, keys[j], packs[j], result.status, result.objective,
                         f'{{"x":{x!r},"y":{y!r}}}', "", result.feedback, "iso_line_dd",
                         json.dumps(lineage[j]), "{}", f'{{"eval_s":{spent / len(results)!r}}}', 0, now, now))
        status = archive.add_in_order(children, objectives, measures)
        cells = archive.index_of(np.array(measures))
        for j in np.flatnonzero(status).tolist():
            unit[cells[j]], ids[cells[j]] = units[j], done + j + 1
            if status[j] == 2:
                filled.append(int(cells[j]))
        done += len(results)
        if len(rows) >= 2000 or done >= evals:
            with db:
                db.executemany("INSERT INTO evaluations VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
            rows.clear()
    used = time.process_time() - cpu
    db.close()
    return {"engine_cpu": (used - evaluate_cpu) / done, "elites": int(archive.stats.num_elites)}


def part_overhead(evals: int, tmp: Path, repeats: int) -> Path:
    from qd.archives import CVTArchive

    print(f"\n## 1. engine overhead per evaluation, {evals:,} evaluations each, best of {repeats} alternating runs "
          f"({load()})", flush=True)
    centroids = CVTArchive(cells=CELLS, ranges=[(-JOINTS, JOINTS)] * 2, seed=SEED).centroids  # qd's run builds these
    # Each loop once, untimed: the first ask/tell of pyribs in a process takes a quarter of a second
    # (one-off set-up, not per evaluation), which a single timed run would spread over its evaluations.
    warm = min(evals, 2_000)
    first = pyribs_overhead(warm, centroids)
    qd_overhead(warm, tmp / "overhead-warm-up")
    floor_overhead(warm, centroids, tmp / "floor-warm-up.db")
    print(f"  warm-up ({warm:,} evaluations each, untimed): pyribs's first loop cost "
          f"{first['engine_cpu'] * 1e6:.1f} µs of CPU per evaluation", flush=True)
    ours: list[dict] = []
    theirs: list[dict] = []
    floors: list[dict] = []
    for i in range(repeats):  # alternate, so that all sides meet the same load
        ours.append(qd_overhead(evals, tmp / f"overhead-{i}"))
        theirs.append(pyribs_overhead(evals, centroids))
        floors.append(floor_overhead(evals, centroids, tmp / f"floor-{i}.db"))
        print(f"  run {i + 1}: engine per evaluation, wall: qd {ours[-1]['engine'] * 1e6:.1f} µs, pyribs "
              f"{theirs[-1]['engine'] * 1e6:.1f} µs; CPU: qd {ours[-1]['engine_cpu'] * 1e6:.1f} µs, pyribs "
              f"{theirs[-1]['engine_cpu'] * 1e6:.1f} µs, floor {floors[-1]['engine_cpu'] * 1e6:.1f} µs ({load()})",
              flush=True)
    print("| loop | wall µs/eval | arm evaluation µs/eval | engine µs/eval (wall) | engine µs/eval (CPU) | elites |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, runs in (("qd `run_search`, serial, run store", ours), ("pyribs ask/tell (batch 64)", theirs)):
        r = min(runs, key=lambda x: x["engine"])
        print(f"| {name} | {r['wall'] * 1e6:.1f} | {r['evaluate'] * 1e6:.1f} | {r['engine'] * 1e6:.1f} "
              f"| {min(x['engine_cpu'] for x in runs) * 1e6:.1f} | {r['elites']} |")
    print(f"| floor: a minimal loop that keeps every evaluation (`floor_overhead`) | | | "
          f"| {min(x['engine_cpu'] for x in floors) * 1e6:.1f} | {floors[0]['elites']} |")
    for what in ("engine", "engine_cpu"):
        ratio = min(r[what] for r in ours) / min(r[what] for r in theirs)
        label = ("wall time" if what == "engine"
                 else "CPU time (all threads; what the load on a shared machine moves least)")
        print(f"\nqd engine / pyribs engine, {label}: **{ratio:.2f}×** (target <= 5: "
              f"{'met' if ratio <= 5 else 'NOT met'})")
    floor = min(x["engine_cpu"] for x in floors)
    print(f"\nfloor / pyribs, CPU: {floor / min(r['engine_cpu'] for r in theirs):.2f}×; "
          f"qd / floor, CPU: {min(r['engine_cpu'] for r in ours) / floor:.2f}×")
    print(f"({load()})", flush=True)
    best = min(ours, key=lambda r: r["engine"])
    return tmp / f"overhead-{ours.index(best)}"


# -- 2. scale ------------------------------------------------------------------------------------
def _proc(pid: int) -> tuple[float, float, float] | None:
    """``(CPU seconds, resident MB, peak resident MB)`` of a live process, from /proc."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        rss = hwm = math.nan
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) / 1024
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1]) / 1024
        return cpu, rss, hwm
    except (OSError, ValueError, IndexError):
        return None


def _count(db: Path) -> int | None:
    try:
        with RunStore(db, readonly=True) as store:
            return store.count()
    except Exception:  # not created yet
        return None


def part_scale(evals: int, tmp: Path) -> Path:
    print(f"\n## 2. {evals:,} evaluations in one `qd run` ({load()})", flush=True)
    config = tmp / "scale.toml"
    marks_path = tmp / "cpu_marks.jsonl"
    marks_path.unlink(missing_ok=True)
    scale_config = arm_config(evals)
    scale_config["run"]["listeners"] = [{"listener": "bench_scale:CpuMarks", "path": str(marks_path),
                                         "evaluations": evals}]
    config.write_text(dump_config(scale_config))
    run_dir = tmp / "scale"
    start = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parent),
                                                        os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "qd.cli", "run", str(config), "--out", str(run_dir),
                             "--no-progress"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    samples: list[tuple[float, float, float, float, int]] = []  # wall, CPU s, MB, peak MB, evaluations
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            got, done = _proc(proc.pid), _count(run_dir / "run.sqlite")
            if got is not None and done is not None:
                samples.append((time.perf_counter() - start, *got, done))
            stop.wait(1.0)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status, _ = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    stop.set()
    sampler.join()
    err = proc.stderr.read().decode() if proc.stderr else ""
    if status != 0:
        raise SystemExit(f"qd run failed ({status}):\n{err[-3000:]}")
    with RunStore(run_dir / "run.sqlite", readonly=True) as store:
        history = store.history()
        count = store.count()
    done = np.array([h["evaluations"] for h in history], dtype=float)
    at = np.array([h["wall_s"] for h in history], dtype=float)
    marks = [json.loads(line) for line in marks_path.read_text().splitlines()]
    paused = {m["reference_at"]: m["reference_wall"] for m in marks if "reference_at" in m}
    # the reference work at the start and at the last window's start ran inside the wall windows
    first = float(np.interp(WINDOW, done, at)) - paused[0]
    last = float(at[-1] - np.interp(count - WINDOW, done, at)) - paused[max(count - WINDOW, 0)]
    counts = np.array([m["evaluations"] for m in marks if "cpu" in m], dtype=float)
    cpus = np.array([m["cpu"] for m in marks if "cpu" in m], dtype=float)
    first_cpu = float(np.interp(WINDOW, counts, cpus) - np.interp(0, counts, cpus))
    last_cpu = float(np.interp(count, counts, cpus) - np.interp(count - WINDOW, counts, cpus))
    reference = {m["reference_at"]: m["reference_cpu"] for m in marks if "reference_at" in m}
    window = min(WINDOW, count)  # a short trial run compares what it has
    ref_first = (reference[0] + reference[window]) / 2  # the machine's speed over each window: its edges'
    ref_last = (reference[count - window] + reference[count]) / 2
    end_mb = samples[-1][2] if samples else math.nan
    peak_mb = max((x[3] for x in samples), default=math.nan)  # VmHWM: the peak since the process started
    after = [x for x in samples if x[4] >= WINDOW]
    kept = ((after[-1][2] - after[0][2]) * 2**20 / max(1, after[-1][4] - after[0][4])
            if len(after) > 1 else math.nan)
    size = sum(p.stat().st_size for p in run_dir.iterdir() if p.name.startswith("run.sqlite"))
    print("| figure | value | baseline (same run) | ratio | target |")
    print("| --- | ---: | ---: | ---: | --- |")
    print(f"| evaluations | {count:,} in {wall:.0f} s ({count / wall:,.0f}/s) | | | |")
    base_mb = after[0][2] if after else math.nan
    print(f"| driver memory at the end | {end_mb:.0f} MB | after the first {WINDOW:,}: {base_mb:.0f} MB | "
          f"{end_mb / base_mb:.2f}× | < 1 GB: {'met' if end_mb < 1024 else 'NOT met'} |")
    print(f"| driver memory, peak (the run summary included) | {peak_mb:.0f} MB | | | "
          f"< 1 GB: {'met' if peak_mb < 1024 else 'NOT met'} |")
    print(f"| driver memory kept per evaluation (after the first {WINDOW:,}) | {kept:.0f} B | | | |")
    print(f"| last {WINDOW:,} evaluations, wall | {last:.1f} s | first {WINDOW:,}: {first:.1f} s | "
          f"{last / first:.2f}× | <= 1.2×: {'met' if last / first <= 1.2 else 'NOT met'} |")
    print(f"| last {WINDOW:,} evaluations, CPU | {last_cpu:.1f} s | first {WINDOW:,}: {first_cpu:.1f} s | "
          f"{last_cpu / first_cpu:.2f}× | <= 1.2×: {'met' if last_cpu / first_cpu <= 1.2 else 'NOT met'} |")
    drift = ref_last / ref_first
    steady = last_cpu / first_cpu / drift
    print(f"| reference work at the windows' edges, CPU (the machine's drift) | {ref_last:.3f} s | "
          f"{ref_first:.3f} s | {drift:.2f}× | |")
    print(f"| last / first CPU over the machine's drift | | | {steady:.2f}× | "
          f"<= 1.2×: {'met' if steady <= 1.2 else 'NOT met'} |")
    print(f"| run store | {size / 2**20:.0f} MB, {size / count:.0f} B per evaluation | | | |")
    print(f"({load()})", flush=True)
    return run_dir


# -- 3. read ---------------------------------------------------------------------------------------
def _timed(cmd: list[str]) -> tuple[float, float, int]:
    """Wall seconds, peak resident MB (GNU time's, of the command itself) and exit status of ``cmd``."""
    gnu_time = Path("/usr/bin/time")
    with tempfile.NamedTemporaryFile("r") as out:
        wrapped = [str(gnu_time), "-f", "%M", "-o", out.name, *cmd] if gnu_time.exists() else cmd
        start = time.perf_counter()
        status = subprocess.run(wrapped, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
        wall = time.perf_counter() - start
        text = out.read().strip().splitlines()
    peak = int(text[-1]) / 1024 if text and text[-1].isdigit() else math.nan
    return wall, peak, status


def part_read(run_dir: Path, tmp: Path) -> None:
    with RunStore(run_dir / "run.sqlite", readonly=True) as store:
        count = store.count()
    print(f"\n## 3. reading the run ({count:,} evaluations), each command in a fresh process ({load()})", flush=True)
    startup = min(_timed([sys.executable, "-c", "import qd.cli"])[0] for _ in range(3))
    print("| command | wall s | peak memory MB | wall / start-up | target |")
    print("| --- | ---: | ---: | ---: | --- |")
    print(f"| `python -c 'import qd.cli'` (start-up, best of 3) | {startup:.2f} | | 1.00× | |")
    for label, args in READS:
        command, *sub = label.split()[:1]
        cmd = [sys.executable, "-m", "qd.cli", command, str(run_dir), *[a.format(tmp=tmp) for a in args]]
        wall, peak, status = _timed(cmd)
        ok = "met" if wall < 2 and status == 0 else "NOT met"
        print(f"| `qd {label}` | {wall:.2f} | {peak:.0f} | {wall / startup:.2f}× | < 2 s: {ok} |", flush=True)
    print(f"({load()})")


# -- 4. store --------------------------------------------------------------------------------------
def _v1_bytes(store_path: Path, out: Path) -> int:
    """The size of the same evaluations written in the version 1 layout (rows, samples and their indexes)."""
    db = sqlite3.connect(out)
    db.executescript(V1_SCHEMA)
    compact = {"separators": (",", ":")}
    hashes = {}
    with RunStore(store_path, readonly=True) as store:
        for r in store.evaluations():
            hashes[r.id] = r.hash
            db.execute("INSERT INTO evaluations VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", (
                r.id, r.hash, json.dumps(r.config, sort_keys=True, ensure_ascii=False, **compact), r.status,
                r.fitness if math.isfinite(r.fitness) else None, json.dumps(r.measures, **compact), r.error,
                r.feedback, r.operator, json.dumps(r.parent_ids, **compact),
                json.dumps(_full_summary(r.trace_summary), **compact), json.dumps(r.metrics, **compact),
                r.archive_status, r.submitted_at, r.finished_at))
        db.executemany("INSERT INTO samples VALUES (?,?,?,?,?)",
                       [(i, hashes[i], d, q, None if s is None else json.dumps(s, **compact))
                        for i, (d, q, s) in store.samples().items()])
    db.commit()
    db.execute("VACUUM")
    db.close()
    return out.stat().st_size


def _full_summary(sparse: dict) -> dict:
    """The trace summary as version 1 stored it (every field)."""
    from qd.analysis.descriptors import summarize

    return {**summarize([]), **sparse}


def _v2_bytes(store_path: Path, out: Path) -> int:
    db = sqlite3.connect(store_path)
    db.execute(f"VACUUM INTO '{out}'")
    db.close()
    return out.stat().st_size


def part_store(arm_dir: Path, tmp: Path, demo_evals: int) -> None:
    from qd.runner import run_search

    print(f"\n## 4. run store bytes per evaluation ({load()})", flush=True)
    demo = resolve_config({**DEMO_CONFIG, "run": {**DEMO_CONFIG["run"], "evaluations": demo_evals, "plot": False,
                                                  "progress": False},
                           "domain": {"name": "retrieval-sim", "options": DEMO_CONFIG["domain"]["options"]},
                           "operators": {"mutation": 1.0}, "evaluator": {"backend": "serial"}})
    demo_run = run_search(demo, tmp / "demo", progress=False)
    demo_run.store.close()
    print("| run | evaluations | v2 B/eval | v1 B/eval (same evaluations) | v2 / v1 |")
    print("| --- | ---: | ---: | ---: | ---: |")
    runs = (("arm, 20 joints, CVT 10,000", arm_dir), ("demo's domain (retrieval-sim), mutation", tmp / "demo"))
    for name, run_dir in runs:
        with RunStore(run_dir / "run.sqlite", readonly=True) as store:
            count = store.count()
        v2 = _v2_bytes(run_dir / "run.sqlite", tmp / f"{run_dir.name}-v2.sqlite")
        v1 = _v1_bytes(run_dir / "run.sqlite", tmp / f"{run_dir.name}-v1.sqlite")
        print(f"| {name} | {count:,} | {v2 / count:.0f} | {v1 / count:.0f} | {v2 / v1:.2f}× |", flush=True)
    print(f"(sizes after VACUUM; {load()})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evals", type=int, default=1_000_000, help="evaluations of the scale run")
    parser.add_argument("--overhead-evals", type=int, default=100_000, help="evaluations of each overhead loop")
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs of each overhead loop (best kept)")
    parser.add_argument("--demo-evals", type=int, default=300, help="evaluations of the demo's domain (store part)")
    parser.add_argument("--parts", default="overhead,scale,read,store")
    parser.add_argument("--keep", help="keep the runs in this directory (default: a temporary one)")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(args.keep or scratch)
        tmp.mkdir(parents=True, exist_ok=True)
        print(f"bench_scale: arm {JOINTS} joints, CVT {CELLS:,} cells, Iso+LineDD (iso σ {ISO_SIGMA} rad, line σ "
              f"{LINE_SIGMA}), serial; {os.cpu_count()} CPUs, {load()}")
        arm_dir = (part_overhead(args.overhead_evals, tmp, args.repeats) if "overhead" in parts or "store" in parts
                   else None)
        scale_dir = part_scale(args.evals, tmp) if "scale" in parts else None
        if "read" in parts:
            part_read(scale_dir or (tmp / "scale"), tmp)
        if "store" in parts and arm_dir is not None:
            part_store(arm_dir, tmp, args.demo_evals)


if __name__ == "__main__":
    main()
