"""Throughput of the evaluators against the ideal ``slots / duration``.

Runs evaluations that sleep (I/O-like), burn CPU, or do nothing, through the
serial evaluator (baseline, same run), Ray tasks and Ray async actors, driving
them the way the search does (``2 * slots`` in flight, ``collect`` in a loop).
Prints a markdown table:

- ``evals/s`` and ``% ideal``: achieved throughput over ``slots / duration``
  (targets: >= 90 % for tasks on 2 CPUs, >= 80 % for actors at concurrency 64);
- ``slot util %``: worker utilization, the share of slot-time spent inside ``evaluate``
  (sum of the evaluations' own wall times / (slots x wall time)). Unlike ``% ideal`` it
  does not drop when a loaded machine makes each evaluation slower, so it isolates the
  engine: below 100 % the driver left slots idle;
- ``x serial``: speed-up over the serial evaluator on the same load;
- ``submit us``: driver wall time per evaluation inside ``submit``;
- ``collect us``: driver wall time per evaluation inside ``collect``, mostly blocked
  waiting for results, so not an overhead;
- ``driver CPU us``: the driver's process CPU time per evaluation (submit, collect and
  Ray's client threads): the overhead figure to read. Its inverse bounds how many
  evaluations per second one driver can feed (see the ``noop`` rows).

A second table runs whole searches (``qd.Search`` on Ray tasks, sleeping evaluations)
whose offspring come half from a classic mutation and half from a stand-in LLM operator
that takes ``--llm-latency`` seconds per child on one LLM thread, with ``wait_for_llm``
off (the default: an LLM draw while the thread is busy goes to the classic operator) and
on (the slot waits for the thread): throughput against the ideal, and the LLM operator's
share of the evaluations.

Usage: ``python scripts/bench_ray.py [--workers 2] [--concurrency 64] [--duration 0.1] [--seconds 6]
[--llm-latency 1.0]`` (README, Performance, gives its run time; ``--seconds 2`` for a smoke test). Run it on a quiet
machine: other processes competing for the CPUs lower every ``% ideal`` figure.
"""
from __future__ import annotations

import argparse
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
    """Each evaluation sleeps, burns CPU, or returns at once, for ``duration`` seconds."""

    name = "bench"
    space = Space({"x": Float(0.0, 1.0)})
    default_measures = ("x",)

    def __init__(self, load: str, duration: float):
        self.load, self.duration = load, duration

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
        return EvalResult(fitness=config["x"], measures={"x": config["x"]},
                          metrics={"busy_s": time.perf_counter() - start})


def drive(evaluator, count: int, warmup: int) -> dict:
    """Run ``warmup`` then ``count`` evaluations with ``2 * slots`` in flight; time the second part."""
    window = 2 * evaluator.slots

    def run(n: int) -> dict:
        submitted = finished = 0
        submit_s = collect_s = busy_s = 0.0
        cpu0, wall0 = time.process_time(), time.perf_counter()
        statuses: dict[str, int] = {}
        while finished < n:
            while submitted < n and evaluator.pending() < window:
                t = time.perf_counter()
                evaluator.submit(submitted, {"x": (submitted % 100) / 100})
                submit_s += time.perf_counter() - t
                submitted += 1
            t = time.perf_counter()
            done = evaluator.collect(1.0)
            collect_s += time.perf_counter() - t
            for _, result in done:
                statuses[result.status] = statuses.get(result.status, 0) + 1
                busy_s += result.metrics.get("busy_s", 0.0)
            finished += len(done)
        return {"wall_s": time.perf_counter() - wall0, "cpu_s": time.process_time() - cpu0,
                "submit_s": submit_s, "collect_s": collect_s, "busy_s": busy_s, "statuses": statuses}

    if warmup:
        run(warmup)
    return run(count)


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
                drain_s=0.0) as search:
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

    import ray

    from qd.evaluators import RayEvaluator

    ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
    rows = []
    serial_rate: dict[str, float] = {}

    def measure(label: str, mode: str, load: str, make, ideal_slots: int | None) -> None:
        evaluator = make(BenchDomain(load, args.duration))
        try:
            slots = evaluator.slots
            busy = ideal_slots or slots  # evaluations that can truly progress at once
            ideal = busy / args.duration if load != "noop" else float("nan")
            expected = ideal if load != "noop" else 500.0
            count = max(4 * busy, int(expected * args.seconds))
            # Warm-up: workers import qd and unpickle the domain on their first evaluation.
            stats = drive(evaluator, count, warmup=0 if label == "serial" else 2 * busy)
        finally:
            evaluator.close()
        rate = count / stats["wall_s"]
        if label == "serial":
            serial_rate[load] = rate
        rows.append({
            "evaluator": label, "mode": mode, "load": load, "slots": slots, "evals": count,
            "wall_s": stats["wall_s"], "rate": rate, "ideal": ideal, "pct": 100 * rate / ideal,
            "util": 100 * stats["busy_s"] / (slots * stats["wall_s"]),
            "x_serial": rate / serial_rate[load] if load in serial_rate else float("nan"),
            "submit_us": 1e6 * stats["submit_s"] / count, "collect_us": 1e6 * stats["collect_s"] / count,
            "cpu_us": 1e6 * stats["cpu_s"] / count, "statuses": stats["statuses"],
        })
        print(f"  done: {label} {mode} {load}: {rate:.1f} evals/s", flush=True)

    serial = lambda domain: SerialEvaluator(domain)  # noqa: E731
    tasks = lambda domain: RayEvaluator(domain, workers=args.workers, timeout_s=60.0)  # noqa: E731
    actors = lambda domain: RayEvaluator(domain, mode="actor", num_actors=1,  # noqa: E731
                                         actor_concurrency=args.concurrency, timeout_s=60.0)
    seconds = args.seconds
    args.seconds = min(seconds, 2.0)  # the serial baseline is slow by design; a short run suffices
    for load in ("sleep", "cpu", "noop"):
        measure("serial", "-", load, serial, None)
    args.seconds = seconds
    for load in ("sleep", "cpu", "noop"):
        measure("ray", "task", load, tasks, None)
    for load in ("sleep", "noop"):
        measure("ray", "actor", load, actors, None)
    # One actor is one process: CPU-bound evaluations share its GIL, so its ideal is 1 slot.
    measure("ray", "actor", "cpu", actors, 1)
    searches = [bench_search(args, wait) for wait in (False, True)]
    ray.shutdown()

    print()
    print(f"Evaluations of {args.duration:g} s; tasks on {args.workers} CPUs; actor concurrency {args.concurrency}; "
          "window 2 x slots.")
    print()
    print("| evaluator | mode | load | slots | evals | wall s | evals/s | ideal/s | % ideal | slot util % | x serial "
          "| submit us/eval | collect us/eval | driver CPU us/eval |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['evaluator']} | {r['mode']} | {r['load']} | {r['slots']} | {r['evals']} | {r['wall_s']:.2f} "
              f"| {r['rate']:.1f} | {r['ideal']:.0f} | {r['pct']:.0f} | {r['util']:.0f} | {r['x_serial']:.3g} "
              f"| {r['submit_us']:.0f} | {r['collect_us']:.0f} | {r['cpu_us']:.0f} |")
    print()
    for r in rows:  # the targets
        if r["evaluator"] == "ray" and r["load"] != "noop" and (r["mode"] == "task" or r["load"] == "sleep"):
            target = 90 if r["mode"] == "task" else 80
            verdict = "meets" if r["pct"] >= target else "MISSES"
            print(f"target: ray {r['mode']} {r['load']}: {r['pct']:.0f} % of ideal {verdict} >= {target} % "
                  f"(slot utilization {r['util']:.0f} %)")
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
