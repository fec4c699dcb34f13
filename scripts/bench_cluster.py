"""Where one driver saturates: throughput against worker count on a simulated Ray cluster.

Starts Ray's own multi-node test cluster (``ray.cluster_utils.Cluster``: a raylet per node,
all on this machine) and grows it from one node to ``--nodes``. At each size it drives
evaluations that *sleep* (standing in for pipelines that wait on LLMs and tools, so that
many workers fit on two cores) through :class:`qd.evaluators.RayEvaluator` with the lean
loop of ``scripts/bench_ray.py`` (``2 * slots * batch_size`` in flight), one configuration
per call (``batch_size=1``) and batched (the default, sized from the measured evaluation
time), and prints evaluations per second against the ideal ``slots / duration``:

- **actor mode**, one async actor per node at ``--concurrency`` evaluations (the slots of
  an I/O-bound cluster: ``nodes x concurrency``), for each of ``--durations``;
- **task mode**, ``--cpus`` logical CPUs per node (a worker process each), for
  ``--task-duration``.

Where a row reaches its ideal, the workers are the limit; where it falls short while the
driver's CPU per evaluation times evaluations per second nears one core, the driver is. The
summary gives the highest rate each mode reached (what one driver feeds) and, from it, how
many workers of each evaluation time one driver keeps busy. Also printed: the load average
before and after each row (the machine is shared; sleeping evaluations use little CPU, the
driver and Ray's processes use the rest).

Usage: ``python scripts/bench_cluster.py [--nodes 1,2,4] [--concurrency 256] [--durations 1,0.1,0.01]
[--cpus 4] [--task-duration 0.01] [--seconds 4]`` (about 5 minutes with the defaults).
"""
from __future__ import annotations

import argparse
import os
import time

from bench_ray import BenchDomain, drive


def measure(mode: str, nodes: int, duration: float, batch_size: int | None, args: argparse.Namespace) -> dict:
    """Drive one evaluator on the cluster for ``args.seconds`` (after a warm-up) and report its rate."""
    from qd.evaluators import RayEvaluator

    load = os.getloadavg()[0]
    domain = BenchDomain("sleep", duration, report_node=True)
    if mode == "actor":
        evaluator = RayEvaluator(domain, mode="actor", num_actors=nodes, actor_concurrency=args.concurrency,
                                 timeout_s=60.0, batch_size=batch_size)
    else:
        evaluator = RayEvaluator(domain, timeout_s=60.0, batch_size=batch_size)
    try:
        slots = evaluator.slots
        # Warm-up: every node has run evaluations (a new node starts its worker processes first),
        # then the batch size settles on the measured evaluation time.
        seen: set[str] = set()
        end = time.monotonic() + 120.0
        while len(seen) < nodes and time.monotonic() < end:
            seen |= drive(evaluator, 2 * slots, warmup=0, seconds=args.seconds)["nodes"]
        drive(evaluator, 10**9, warmup=0, seconds=args.seconds)
        batch = evaluator.batch_size
        # Results land a call (batch x duration) at a time: measure over several calls.
        stats = drive(evaluator, 10**9, warmup=0, seconds=max(args.seconds, 3 * duration * batch))
        end = time.monotonic() + 60.0
        while evaluator.pending() and time.monotonic() < end:  # closing would kill busy workers: drain
            evaluator.collect(1.0)
    finally:
        evaluator.close()
    rate = stats["finished"] / stats["wall_s"]
    ideal = slots / duration
    row = {"mode": mode, "nodes": nodes, "duration": duration, "slots": slots, "batch": batch,
           "evals": stats["finished"], "rate": rate, "ideal": ideal, "pct": 100 * rate / ideal,
           "cpu_us": 1e6 * stats["cpu_s"] / max(1, stats["finished"]), "nodes_seen": len(stats["nodes"]),
           "statuses": stats["statuses"], "load": (load, os.getloadavg()[0])}
    print(f"  {mode} {nodes} node(s) {duration:g} s batch {batch}: {rate:.0f} evals/s of {ideal:.0f} "
          f"({row['pct']:.0f} %), driver CPU {row['cpu_us']:.0f} us/eval", flush=True)
    return row


def start_workers() -> None:
    """Occupy every CPU of the cluster at once, so Ray starts a worker process for each before a row is timed."""
    from qd.evaluators import RayEvaluator

    evaluator = RayEvaluator(BenchDomain("sleep", 0.5), timeout_s=120.0, batch_size=1)
    try:
        drive(evaluator, 2 * evaluator.slots, warmup=0)
    finally:
        evaluator.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", default="1,2,4", help="cluster sizes, in increasing order")
    parser.add_argument("--concurrency", type=int, default=256, help="actor mode: evaluations per node at once")
    parser.add_argument("--durations", default="1,0.1,0.01", help="actor mode: seconds each evaluation sleeps")
    parser.add_argument("--cpus", type=int, default=4, help="task mode: logical CPUs (worker processes) per node")
    parser.add_argument("--task-duration", type=float, default=0.01, help="task mode: seconds each evaluation sleeps")
    parser.add_argument("--seconds", type=float, default=4.0,
                        help="warm-up and measured wall time per row (measured: at least three calls' length)")
    args = parser.parse_args()
    sizes = [int(n) for n in args.nodes.split(",")]
    durations = [float(d) for d in args.durations.split(",")]

    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": args.cpus, "include_dashboard": False})
    rows = []
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        for size in sizes:
            while len(cluster.list_all_nodes()) < size:
                cluster.add_node(num_cpus=args.cpus)
            cluster.wait_for_nodes()
            start_workers()
            print(f"{size} node(s):", flush=True)
            for batch_size in (1, None):
                rows.append(measure("task", size, args.task_duration, batch_size, args))
                for duration in durations:
                    rows.append(measure("actor", size, duration, batch_size, args))
    finally:
        ray.shutdown()
        cluster.shutdown()

    print()
    print(f"Simulated cluster: nodes of {args.cpus} CPUs (task mode: a worker process per CPU) and one async actor "
          f"at concurrency {args.concurrency} (actor mode); evaluations sleep; window 2 x slots x batch; "
          f"at least {args.seconds:g} s measured per row after as much warm-up.")
    print()
    print("| mode | nodes | eval s | slots | batch | evals/s | ideal/s | % ideal | driver CPU us/eval "
          "| nodes used | load before/after |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['nodes']} | {r['duration']:g} | {r['slots']} | {r['batch']} | {r['rate']:.0f} "
              f"| {r['ideal']:.0f} | {r['pct']:.0f} | {r['cpu_us']:.0f} | {r['nodes_seen']} "
              f"| {r['load'][0]:.1f} / {r['load'][1]:.1f} |")
    print()
    for label, batched in (("one configuration per call", False), ("batched", True)):
        best = max((r for r in rows if (r["batch"] > 1 or not batched) and (r["batch"] == 1 or batched)),
                   key=lambda r: r["rate"], default=None)
        saturated = [r for r in rows if (r["batch"] > 1) == batched and r["pct"] < 80]
        if best is None:
            continue
        feeds = ", ".join(f"{best['rate'] * d:.0f} workers of {d:g} s" for d in (1.0, 10.0, 60.0))
        print(f"{label}: highest rate {best['rate']:.0f} evals/s ({best['mode']}, {best['nodes']} node(s), "
              f"{best['duration']:g} s evaluations, batch {best['batch']}); {len(saturated)} row(s) below 80 % of "
              f"ideal; one driver keeps busy about {feeds}")
    bad = [r for r in rows if set(r["statuses"]) - {"ok"}]
    for r in bad:
        print(f"WARNING: {r['mode']} {r['nodes']} node(s) {r['duration']:g} s statuses {r['statuses']}")


if __name__ == "__main__":
    main()
