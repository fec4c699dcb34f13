"""Throughput of the evaluators against the ideal ``slots / duration``, batched and not.

Runs evaluations that sleep (I/O-like), burn CPU, or do nothing, through the
serial evaluator (baseline, same run), Ray tasks and Ray async actors, driving
them with a lean loop as the search does (``2 * slots * batch_size`` in flight,
``collect`` in a loop). The no-op load runs twice per mode: one configuration per
call (``batch_size=1``, the unbatched path) and batches sized automatically from the
measured evaluation time (the default). Prints a markdown table:

- ``batch``: configurations per Ray call at the end of the row (1: unbatched);
- ``evals/s`` and ``% ideal``: achieved throughput over ``slots / duration``
  (targets: >= 90 % for tasks on 2 CPUs, >= 80 % for actors at concurrency 64);
- ``slot util %``: worker utilization, the share of slot-time spent inside ``evaluate``
  (sum of the evaluations' own wall times / (slots x wall time)). Unlike ``% ideal`` it
  does not drop when a loaded machine makes each evaluation slower, so it isolates the
  engine: below 100 % the driver left slots idle;
- ``x serial``: speed-up over the serial evaluator on the same load; ``x unbatched``:
  the batched no-op row over the unbatched one of the same mode, same run;
- ``submit us``: driver wall time per evaluation inside ``submit``;
- ``collect us``: driver wall time per evaluation inside ``collect``, mostly blocked
  waiting for results, so not an overhead;
- ``driver CPU us``: the driver's process CPU time per evaluation (submit, collect and
  Ray's client threads): the overhead figure to read. Its inverse bounds how many
  evaluations per second one driver can feed (see the ``noop`` rows).

A second table runs whole searches (``qd.Search`` on Ray tasks, the no-op domain, a
Gaussian operator, a 100-cell grid, the pre-evaluation filter off), unbatched and batched,
without and with a run store (what ``qd run`` adds), and once with the store and the filter on
(what a domain that makes calls gets by default); it splits the driver's CPU time per evaluation into the
evaluator's share (its ``submit`` and ``collect``, main thread), the rest of the main
thread (scheduler, descriptors, archive, store, listeners) and Ray's client threads; then
``qd run --backend ray`` itself on the same domain (a subprocess: config, run store,
filter and progress off), its steady rate read from the stored finish times (ids 10-90 %).

A third table runs whole searches whose offspring come half from a classic mutation and
half from a stand-in LLM operator that takes ``--llm-latency`` seconds per child on one
LLM thread, with ``wait_for_llm`` off (the default: an LLM draw while the thread is busy
goes to the classic operator) and on (the slot waits for the thread): throughput against
the ideal, and the LLM operator's share of the evaluations.

Usage: ``python scripts/bench_ray.py [--workers 2] [--concurrency 64] [--duration 0.1] [--seconds 6]
[--llm-latency 1.0]`` (README, Performance, gives its run time; ``--seconds 2`` for a smoke test). Run it on a quiet
machine: other processes competing for the CPUs lower every ``% ideal`` figure.
"""
from __future__ import annotations

import argparse
import itertools
import time

from qd.domain import Domain
from qd.evaluators import SerialEvaluator
from qd.operators.base import Operator
from qd.result import EvalResult
from qd.space import Float, Space


class SlowLLMOperator(Operator):
    """Stand-in for an LLM operator: a Gaussian child of one elite after ``latency`` seconds."""

    name = "slow_llm"
    num_parents = 1
    uses_llm = True

    def __init__(self, space: Space, latency: float):
        from qd.operators.classic import Gaussian

        self._inner, self.latency = Gaussian(space), latency

    def vary(self, parents: list, rng) -> list[dict]:
        time.sleep(self.latency)
        return self._inner.vary(parents, rng)


class BenchDomain(Domain):
    """Each evaluation sleeps, burns CPU, or returns at once, for ``duration`` seconds.

    With ``report_node``, each result also says which Ray node ran it (``metrics["node"]``).
    """

    name = "bench"
    space = Space({"x": Float(0.0, 1.0)})
    default_measures = ("x",)

    def __init__(self, load: str, duration: float, report_node: bool = False):
        self.load, self.duration, self.report_node = load, duration, report_node

    def evaluate(self, config: dict) -> EvalResult:
        start = time.perf_counter()
        if self.load == "sleep":
            time.sleep(self.duration)
        elif self.load == "cpu":
            # Count this thread's CPU time so every evaluation does the same work, contended or not.
            end = time.thread_time() + self.duration
            acc = 0.0
            while time.thread_time() < end:
                for i in range(2000):
                    acc += i * 1e-9
        metrics = {"busy_s": time.perf_counter() - start}
        if self.report_node:
            metrics["node"] = _node_id()
        return EvalResult(objective=config["x"], measures={"x": config["x"]}, metrics=metrics)


_NODE: list[str] = []  # per worker process: the Ray node it runs on, asked once


def _node_id() -> str:
    if not _NODE:
        import ray

        _NODE.append(ray.get_runtime_context().get_node_id())
    return _NODE[0]


_KEYS = itertools.count()  # unique across drives: a timed one leaves evaluations in flight


def drive(evaluator, count: int, warmup: int, seconds: float = float("inf")) -> dict:
    """Run ``warmup`` then ``count`` evaluations with ``2 * slots * batch_size`` in flight; time the second part.

    With ``seconds``, each part also ends after that long (what is still in flight is left to ``close``);
    ``finished`` says how many evaluations it counted, ``nodes`` which nodes reported (``metrics["node"]``).
    """
    def run(n: int) -> dict:
        submitted = finished = 0
        submit_s = collect_s = busy_s = 0.0
        cpu0, wall0 = time.process_time(), time.perf_counter()
        statuses: dict[str, int] = {}
        nodes: set[str] = set()
        while finished < n and time.perf_counter() - wall0 < seconds:
            window = 2 * evaluator.slots * getattr(evaluator, "batch_size", 1)
            while submitted < n and evaluator.pending() < window:
                t = time.perf_counter()
                evaluator.submit(next(_KEYS), {"x": (submitted % 100) / 100})
                submit_s += time.perf_counter() - t
                submitted += 1
            t = time.perf_counter()
            done = evaluator.collect(1.0)
            collect_s += time.perf_counter() - t
            for _, result in done:
                statuses[result.status] = statuses.get(result.status, 0) + 1
                busy_s += result.metrics.get("busy_s", 0.0)
                if "node" in result.metrics:
                    nodes.add(result.metrics["node"])
            finished += len(done)
        return {"wall_s": time.perf_counter() - wall0, "cpu_s": time.process_time() - cpu0, "finished": finished,
                "submit_s": submit_s, "collect_s": collect_s, "busy_s": busy_s, "statuses": statuses, "nodes": nodes}

    if warmup:
        run(warmup)
    return run(count)


class TimedCalls:
    """Counts the CPU time of the calling thread inside an evaluator's ``submit`` and ``collect``."""

    def __init__(self, evaluator):
        self.cpu_s = 0.0
        for name in ("submit", "collect"):
            setattr(evaluator, name, self._timed(getattr(evaluator, name)))

    def _timed(self, method):
        def call(*args):
            start = time.thread_time()
            try:
                return method(*args)
            finally:
                self.cpu_s += time.thread_time() - start
        return call


def bench_whole_search(args: argparse.Namespace, batch_size: int | None, store: bool, filter: bool = False) -> dict:
    """A whole search of the no-op domain on Ray tasks; the driver's CPU time split by who spends it.

    ``filter`` turns the pre-evaluation filter on (4 proposals per child, each predicted from the
    results so far): what a domain that makes calls gets by default, measured on its own row.
    """
    import tempfile
    from pathlib import Path

    from qd.analysis.descriptors import resolve_measures
    from qd.archives import GridArchive
    from qd.evaluators import RayEvaluator
    from qd.operators.classic import Gaussian
    from qd.search import Search
    from qd.store import RunStore

    domain = BenchDomain("noop", 0.0)
    budget = max(400, int((15000 if batch_size is None else 500) * args.seconds))
    with tempfile.TemporaryDirectory() as tmp:
        run_store = RunStore(Path(tmp) / "run.sqlite") if store else None
        evaluator = RayEvaluator(domain, workers=args.workers, timeout_s=60.0, batch_size=batch_size)
        timed = TimedCalls(evaluator)
        search = Search(domain, GridArchive(dims=[100], ranges=[(0.0, 1.0)], measure_names=["x"]), evaluator,
                        operators={"gaussian": (Gaussian(domain.space), 1.0)}, measures=resolve_measures(["x"], domain),
                        budget=budget, store=run_store, init_random=100, drain_s=0.0, filter=filter)
        try:
            cpu0, main0, wall0 = time.process_time(), time.thread_time(), time.perf_counter()
            search.run()
            wall, cpu, main = time.perf_counter() - wall0, time.process_time() - cpu0, time.thread_time() - main0
            batch = evaluator.batch_size
        finally:
            search.close()
            if run_store is not None:
                run_store.close()
    return {"batch": batch, "store": store, "filter": filter, "evals": budget, "wall_s": wall, "rate": budget / wall,
            "cpu_us": 1e6 * cpu / budget, "evaluator_us": 1e6 * timed.cpu_s / budget,
            "rest_us": 1e6 * (main - timed.cpu_s) / budget, "threads_us": 1e6 * (cpu - main) / budget}


def bench_qd_run(args: argparse.Namespace, batch_size: int) -> dict:
    """``qd run --backend ray`` on the no-op domain (a subprocess); steady rate from the stored finish times."""
    import os
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    from qd.store import RunStore

    evals = max(400, int((10000 if batch_size == 0 else 400) * args.seconds))
    here = Path(__file__).resolve().parent
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "noop.toml"
        config.write_text(f"""[run]
name = "bench-noop"
evaluations = {evals}
init_random = 100
progress = false
plot = false

[domain]
name = "bench_ray:BenchDomain"
options = {{ load = "noop", duration = 0.0 }}

[archive]
measures = ["x"]
ranges = [[0.0, 1.0]]
bins = [100]
noise = "none"

[operators]
gaussian = 1.0
filter = false

[evaluator]
backend = "ray"
workers = {args.workers}
batch_size = {batch_size}
""")
        out = Path(tmp) / "run"
        start = time.perf_counter()
        env = {**os.environ, "RAY_ADDRESS": "local"}  # a private runtime, not the bench's
        subprocess.run([sys.executable, "-m", "qd.cli", "run", str(config), "--out", str(out), "--no-progress"],
                       cwd=here, env=env, check=True, capture_output=True, text=True)
        wall = time.perf_counter() - start
        with RunStore(out / "run.sqlite", readonly=True) as store:
            finished = sorted(row.finished_at for row in store.evaluations())
    lo, hi = len(finished) // 10, len(finished) * 9 // 10
    return {"batch_size": batch_size, "evals": evals, "wall_s": wall,
            "rate": (hi - lo) / max(finished[hi] - finished[lo], 1e-9)}


def bench_search(args: argparse.Namespace, wait_for_llm: bool) -> dict:
    """A whole search on Ray tasks, half its offspring asked of a slow one-thread LLM operator."""
    from qd.analysis.descriptors import resolve_measures
    from qd.archives import GridArchive
    from qd.evaluators import RayEvaluator
    from qd.operators.classic import Gaussian
    from qd.search import Search

    domain = BenchDomain("sleep", args.duration)
    ideal = args.workers / args.duration
    budget = max(40, int(ideal * args.seconds))
    archive = GridArchive(dims=[50], ranges=[(0.0, 1.0)], measure_names=["x"])
    evaluator = RayEvaluator(domain, workers=args.workers, timeout_s=60.0)
    operators = {"gaussian": (Gaussian(domain.space), 1.0),
                 "slow_llm": (SlowLLMOperator(domain.space, args.llm_latency), 1.0)}
    with Search(domain, archive, evaluator, operators=operators, measures=resolve_measures(["x"], domain),
                budget=budget, init_random=2 * args.workers, llm_threads=1, wait_for_llm=wait_for_llm,
                drain_s=0.0, filter=False) as search:  # the stand-in sleeps per child: proposals would multiply it
        start = time.perf_counter()
        search.run()
        wall = time.perf_counter() - start
    llm = search.stats["slow_llm"]
    return {"wait": wait_for_llm, "evals": budget, "wall_s": wall, "rate": budget / wall, "ideal": ideal,
            "llm_share": llm.spent / budget, "llm_children": llm.evaluated}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="CPUs of the local Ray runtime (task slots)")
    parser.add_argument("--concurrency", type=int, default=64, help="actor_concurrency for actor mode")
    parser.add_argument("--duration", type=float, default=0.1, help="seconds per sleep / CPU evaluation")
    parser.add_argument("--seconds", type=float, default=6.0, help="target wall time per measured row")
    parser.add_argument("--llm-latency", type=float, default=1.0, help="seconds per child of the stand-in LLM")
    args = parser.parse_args()

    import os

    import ray

    from qd.evaluators import RayEvaluator

    load_before = os.getloadavg()
    ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
    rows = []
    serial_rate: dict[str, float] = {}
    unbatched_rate: dict[str, float] = {}

    def measure(label: str, mode: str, load: str, make, ideal_slots: int | None = None,
                batch_size: int | None = None) -> None:
        evaluator = make(BenchDomain(load, args.duration), batch_size)
        try:
            slots = evaluator.slots
            busy = ideal_slots or slots  # evaluations that can truly progress at once
            ideal = busy / args.duration if load != "noop" else float("nan")
            expected = ideal if load != "noop" else 50000.0 if label == "serial" else 500.0 if batch_size == 1 \
                else 15000.0
            count = max(4 * busy, int(expected * args.seconds))
            # Warm-up: workers import qd and unpickle the domain on their first evaluation, and the
            # batch size settles on the measured evaluation time.
            stats = drive(evaluator, count, warmup=0 if label == "serial" else max(2 * busy, count // 10))
            batch = getattr(evaluator, "batch_size", 1)
        finally:
            evaluator.close()
        rate = count / stats["wall_s"]
        if label == "serial":
            serial_rate[load] = rate
        if load == "noop" and batch_size == 1:
            unbatched_rate[mode] = rate
        rows.append({
            "evaluator": label, "mode": mode, "load": load, "slots": slots, "batch": batch, "evals": count,
            "wall_s": stats["wall_s"], "rate": rate, "ideal": ideal, "pct": 100 * rate / ideal,
            "util": 100 * stats["busy_s"] / (slots * stats["wall_s"]),
            "x_serial": rate / serial_rate[load] if load in serial_rate else float("nan"),
            "x_unbatched": rate / unbatched_rate[mode] if load == "noop" and batch_size != 1 and mode in unbatched_rate
            else float("nan"),
            "submit_us": 1e6 * stats["submit_s"] / count, "collect_us": 1e6 * stats["collect_s"] / count,
            "cpu_us": 1e6 * stats["cpu_s"] / count, "statuses": stats["statuses"],
        })
        print(f"  done: {label} {mode} {load} batch {batch}: {rate:.1f} evals/s", flush=True)

    serial = lambda domain, _: SerialEvaluator(domain)  # noqa: E731
    tasks = lambda domain, batch: RayEvaluator(domain, workers=args.workers, timeout_s=60.0,  # noqa: E731
                                               batch_size=batch)
    actors = lambda domain, batch: RayEvaluator(domain, mode="actor", num_actors=1,  # noqa: E731
                                                actor_concurrency=args.concurrency, timeout_s=60.0, batch_size=batch)
    seconds = args.seconds
    args.seconds = min(seconds, 2.0)  # the serial baseline is slow by design; a short run suffices
    for load in ("sleep", "cpu", "noop"):
        measure("serial", "-", load, serial)
    args.seconds = seconds
    for load in ("sleep", "cpu"):
        measure("ray", "task", load, tasks)
    measure("ray", "task", "noop", tasks, batch_size=1)
    measure("ray", "task", "noop", tasks)
    measure("ray", "actor", "sleep", actors)
    # One actor is one process: CPU-bound evaluations share its GIL, so its ideal is 1 slot.
    measure("ray", "actor", "cpu", actors, ideal_slots=1)
    measure("ray", "actor", "noop", actors, batch_size=1)
    measure("ray", "actor", "noop", actors)
    whole = []
    for store, batch_size, filter in ((False, 1, False), (False, None, False), (True, 1, False), (True, None, False),
                                      (True, None, True)):
        whole.append(bench_whole_search(args, batch_size, store, filter))
        print(f"  done: search batch {whole[-1]['batch']} store {store} filter {filter}: "
              f"{whole[-1]['rate']:.0f} evals/s", flush=True)
    searches = [bench_search(args, wait) for wait in (False, True)]
    ray.shutdown()
    qd_runs = []
    for batch_size in (1, 0):
        qd_runs.append(bench_qd_run(args, batch_size))
        print(f"  done: qd run batch_size {batch_size}: {qd_runs[-1]['rate']:.0f} evals/s", flush=True)
    load_after = os.getloadavg()

    print()
    print(f"Evaluations of {args.duration:g} s; tasks on {args.workers} CPUs; actor concurrency {args.concurrency}; "
          f"window 2 x slots x batch. Load average (1 min) {load_before[0]:.1f} before, {load_after[0]:.1f} after.")
    print()
    print("| evaluator | mode | load | slots | batch | evals | wall s | evals/s | ideal/s | % ideal | slot util % "
          "| x serial | x unbatched | submit us/eval | collect us/eval | driver CPU us/eval |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['evaluator']} | {r['mode']} | {r['load']} | {r['slots']} | {r['batch']} | {r['evals']} "
              f"| {r['wall_s']:.2f} | {r['rate']:.1f} | {r['ideal']:.0f} | {r['pct']:.0f} | {r['util']:.0f} "
              f"| {r['x_serial']:.3g} | {r['x_unbatched']:.3g} | {r['submit_us']:.1f} | {r['collect_us']:.1f} "
              f"| {r['cpu_us']:.1f} |")
    print()
    for r in rows:  # the issue's targets
        if r["evaluator"] == "ray" and r["load"] != "noop" and (r["mode"] == "task" or r["load"] == "sleep"):
            target = 90 if r["mode"] == "task" else 80
            verdict = "meets" if r["pct"] >= target else "MISSES"
            print(f"target: ray {r['mode']} {r['load']}: {r['pct']:.0f} % of ideal {verdict} >= {target} % "
                  f"(slot utilization {r['util']:.0f} %)")
        if r["evaluator"] == "ray" and r["load"] == "noop" and r["batch"] > 1:
            verdict = "meets" if r["rate"] >= 10000 else "MISSES"
            print(f"target: one driver, ray {r['mode']} no-op batched ({r['batch']} per call): {r['rate']:.0f} "
                  f"evals/s {verdict} >= 10,000 ({r['x_unbatched']:.3g} x unbatched)")
    print()
    print(f"Whole searches, no-op domain, Ray tasks on {args.workers} CPUs (driver CPU time per evaluation, split "
          "by who spends it: the evaluator's submit/collect, the rest of the main thread, Ray's client threads):")
    print()
    print("| run store | filter | batch | evals | wall s | evals/s | x unbatched | driver CPU us/eval | evaluator us "
          "| scheduler, archive, store, listeners us | Ray threads us |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in whole:
        base = next(b for b in whole if b["store"] == r["store"] and b["batch"] == 1)
        print(f"| {'yes' if r['store'] else 'no'} | {'on' if r['filter'] else 'off'} | {r['batch']} | {r['evals']} "
              f"| {r['wall_s']:.2f} | {r['rate']:.0f} "
              f"| {r['rate'] / base['rate']:.3g} | {r['cpu_us']:.0f} | {r['evaluator_us']:.0f} | {r['rest_us']:.0f} "
              f"| {r['threads_us']:.0f} |")
    print()
    base = qd_runs[0]["rate"]
    for r in qd_runs:
        print(f"qd run --backend ray, batch_size = {r['batch_size']}: {r['evals']} evaluations in {r['wall_s']:.1f} s "
              f"(Ray start included), steady {r['rate']:.0f} evals/s ({r['rate'] / base:.3g} x batch_size = 1)")
    print()
    print(f"Whole searches on Ray tasks ({args.workers} CPUs, {args.duration:g} s sleeps), operators gaussian 1.0 + "
          f"a stand-in LLM operator 1.0 taking {args.llm_latency:g} s per child on 1 LLM thread:")
    print()
    print("| wait_for_llm | evals | wall s | evals/s | ideal/s | % ideal | LLM operator's share of evaluations |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in searches:
        print(f"| {str(r['wait']).lower()} | {r['evals']} | {r['wall_s']:.2f} | {r['rate']:.1f} | {r['ideal']:.0f} "
              f"| {100 * r['rate'] / r['ideal']:.0f} | {r['llm_share']:.0%} |")
    bad = [r for r in rows if set(r["statuses"]) != {"ok"}]
    for r in bad:
        print(f"WARNING: {r['evaluator']} {r['mode']} {r['load']} statuses {r['statuses']}")


if __name__ == "__main__":
    main()
