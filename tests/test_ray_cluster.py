"""RayEvaluator on a two-node cluster (ray.cluster_utils.Cluster), losing a node mid-run:
once under the evaluator alone, once under a whole Search with a run store.

A process can be connected to one Ray runtime only, and the test session already
holds one (the ``ray_session`` fixture), so the cluster runs in a subprocess: this
file is also a script that starts the cluster, runs the evaluations and prints one
JSON line with what it saw.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

import pytest

from qd.domain import Domain
from qd.result import EvalResult
from qd.space import Float, Space


class NodeDomain(Domain):
    """Sleeps ``delay`` seconds and reports the node it ran on.

    On start it drops a file ``<x>@<node id>`` in ``marker_dir``, so the driver can see
    which evaluations are running where (all nodes of a test cluster share one disk).
    """

    name = "node-probe"
    space = Space({"x": Float(0.0, 1.0), "delay": Float(0.0, 10.0)})

    def __init__(self, marker_dir: str):
        self.marker_dir = marker_dir

    def evaluate(self, config: dict) -> EvalResult:
        import ray

        node = ray.get_runtime_context().get_node_id()
        open(os.path.join(self.marker_dir, f"{config['x']}@{node}"), "w").close()
        time.sleep(config["delay"])
        return EvalResult(fitness=config["x"], measures={"x": config["x"]},
                          metrics={"node": node})


class SearchNodeDomain(Domain):
    """One float; each evaluation sleeps ``delay`` seconds and drops a ``<x!r>@<node id>`` marker file."""

    name = "node-search"
    space = Space({"x": Float(0.0, 1.0)})
    default_measures = ("x",)
    default_ranges = ((0.0, 1.0),)

    def __init__(self, marker_dir: str, delay: float):
        self.marker_dir, self.delay = marker_dir, delay

    def evaluate(self, config: dict) -> EvalResult:
        import ray

        node = ray.get_runtime_context().get_node_id()
        open(os.path.join(self.marker_dir, f"{config['x']!r}@{node}"), "w").close()
        time.sleep(self.delay)
        return EvalResult(fitness=-abs(config["x"] - 0.7), measures={"x": config["x"]}, metrics={"node": node})


def _committed(store_path: str) -> dict[int, tuple]:
    """What the run store holds, read through a reader of our own (as `qd status` would)."""
    import json

    from qd.store import RunStore

    with RunStore(store_path, readonly=True) as store:
        return {r.id: (r.hash, r.status, None if r.fitness != r.fitness else r.fitness,
                       json.dumps(r.config, sort_keys=True)) for r in store.evaluations()}


def run_search_with_node_loss(cluster, worker, budget: int = 60) -> dict:
    """A whole Search with a run store on the cluster; the worker node is killed mid-run.

    A watcher thread kills the node once a third of the budget is committed and an
    evaluation is running on that node, and snapshots the store just before.
    """
    import threading

    from qd.analysis.descriptors import resolve_measures
    from qd.archives import GridArchive
    from qd.evaluators import RayEvaluator
    from qd.operators.classic import Mutation
    from qd.search import Search, replay
    from qd.store import RunStore

    marker_dir = tempfile.mkdtemp(prefix="qd-cluster-search-")
    store_path = os.path.join(tempfile.mkdtemp(prefix="qd-cluster-store-"), "run.sqlite")
    domain = SearchNodeDomain(marker_dir, delay=0.25)
    archive = GridArchive(dims=[20], ranges=domain.default_ranges, measure_names=["x"])
    store = RunStore(store_path)
    search = Search(domain, archive, RayEvaluator(domain, timeout_s=30.0),
                    operators={"mutation": (Mutation(domain.space), 1.0)},
                    measures=resolve_measures(["x"], domain), budget=budget, store=store, init_random=10, seed=3)
    seen: dict = {}

    def watch() -> None:
        end = time.monotonic() + 60.0
        while time.monotonic() < end:
            committed = _committed(store_path)
            done_x = {json.loads(row[3])["x"] for row in committed.values()}
            running = [name.split("@")[0] for name in os.listdir(marker_dir)
                       if name.split("@")[1] == worker.node_id and float(name.split("@")[0]) not in done_x]
            if len(committed) >= budget // 3 and running:
                seen["before"] = committed
                seen["running_x"] = [float(x) for x in running]
                cluster.remove_node(worker, allow_graceful=False)
                seen["removed_at"] = len(_committed(store_path))
                return
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    error = ""
    try:
        search.run()
    except Exception as exc:  # reported, not raised: the test says what went wrong
        error = f"{type(exc).__name__}: {exc}"
    finally:
        search.close()
    watcher.join(timeout=10)
    after = _committed(store_path)
    replayed = GridArchive(dims=[20], ranges=domain.default_ranges, measure_names=["x"])
    replay(store, replayed)
    store.close()
    before = seen.get("before", {})
    crashed_x = sorted(json.loads(row[3])["x"] for row in after.values() if row[1] == "crash")
    worker_x = sorted(float(name.split("@")[0]) for name in os.listdir(marker_dir)
                      if name.split("@")[1] == worker.node_id)
    return {
        "error": error,
        "removed": "before" in seen,
        "committed_before": len(before),
        "committed_at_removal": seen.get("removed_at"),
        "before_kept": all(after.get(key) == row for key, row in before.items()),
        "finished": search.finished,
        "ids": sorted(after),
        "hashes_unique": len({row[0] for row in after.values()}) == len(after),
        "statuses": {status: sum(row[1] == status for row in after.values()) for status in ("ok", "crash", "error",
                                                                                              "timeout")},
        "running_x": seen.get("running_x", []),
        "crashed_x": crashed_x,
        "worker_x": worker_x,
        "replay_matches": (replayed.stats.num_elites, replayed.stats.qd_score)
        == (archive.stats.num_elites, archive.stats.qd_score),
    }


def _drain(evaluator, limit_s: float) -> dict:
    results, end = {}, time.monotonic() + limit_s
    while evaluator.pending() and time.monotonic() < end:
        for key, result in evaluator.collect(0.2):
            results[key] = result
    return results


def _summary(results: dict) -> dict:
    return {str(key): {"status": r.status, "fitness": r.fitness, "error": r.error[:200],
                       "node": r.metrics.get("node")} for key, r in results.items()}


def run_cluster_scenario() -> dict:
    """Two one-CPU nodes: evaluate on both, then remove the worker node while evaluations run."""
    import ray
    from ray.cluster_utils import Cluster

    from qd.evaluators import RayEvaluator

    out: dict = {}
    # Phase 0: with Ray not initialized, the evaluator starts a private local runtime and
    # shuts it down on close.
    with tempfile.TemporaryDirectory() as marker_dir:
        ev = RayEvaluator(NodeDomain(marker_dir), workers=1, timeout_s=30.0)
        out["owned_slots"] = ev.slots
        ev.submit(0, {"x": 0.5, "delay": 0.0})
        out["owned"] = _summary(_drain(ev, 30.0))
        ev.close()
        out["owned_shut_down"] = not ray.is_initialized()

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    worker = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        marker_dir = tempfile.mkdtemp(prefix="qd-cluster-test-")
        ev = RayEvaluator(NodeDomain(marker_dir), timeout_s=30.0)
        out["slots"] = ev.slots
        # Phase 1: evaluations with 2 x slots in flight until both nodes have run some
        # (a fresh node needs a moment to start its worker process).
        phase1: dict = {}
        key, end = 0, time.monotonic() + 30.0
        while time.monotonic() < end and len({r.metrics["node"] for r in phase1.values()}) < 2:
            while ev.pending() < 2 * ev.slots:
                ev.submit(key, {"x": key / 100, "delay": 0.3})
                key += 1
            phase1.update(ev.collect(0.1))
        phase1.update(_drain(ev, 30.0))
        out["phase1"], out["phase1_submitted"] = _summary(phase1), key
        for name in os.listdir(marker_dir):
            os.remove(os.path.join(marker_dir, name))
        out["head"], out["worker"] = cluster.head_node.node_id, worker.node_id

        # Phase 2: eight 1 s evaluations on 2 slots. As soon as one of them has started on the
        # worker node, kill that node.
        for key in range(100, 108):
            ev.submit(key, {"x": key, "delay": 1.0})
        early: dict = {}
        end = time.monotonic() + 30.0
        started_on_worker: list[int] = []
        while time.monotonic() < end and not started_on_worker:
            for key, result in ev.collect(0.05):
                early[key] = result
            started_on_worker = [int(name.split("@")[0]) for name in os.listdir(marker_dir)
                                 if name.split("@")[1] == worker.node_id]
        out["before_removal"] = len(early)
        out["running_on_removed"] = [key for key in started_on_worker if key not in early]
        cluster.remove_node(worker, allow_graceful=False)
        early.update(_drain(ev, 40.0))
        out["phase2"] = _summary(early)
        out["pending_after"] = ev.pending()
        ev.close()

        # Phase 3: a whole search on two nodes again, losing the new worker node mid-run.
        worker = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        out["search"] = run_search_with_node_loss(cluster, worker)
    finally:
        ray.shutdown()
        cluster.shutdown()
    return out


# The cluster scenario starts three Ray runtimes in a subprocess: run with -m slow.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def scenario() -> dict:
    proc = subprocess.run([sys.executable, __file__], capture_output=True, text=True, timeout=300)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert proc.returncode == 0 and lines, f"cluster script failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return json.loads(lines[-1])


def test_evaluator_starts_and_stops_its_own_runtime_when_ray_is_not_initialized(scenario):
    assert scenario["owned_slots"] == 1
    assert scenario["owned"]["0"]["status"] == "ok" and scenario["owned"]["0"]["fitness"] == 0.5
    assert scenario["owned_shut_down"]


def test_two_node_cluster_runs_evaluations_on_both_nodes(scenario):
    assert scenario["slots"] == 2  # one CPU per node
    phase1 = scenario["phase1"]
    assert sorted(phase1, key=int) == [str(k) for k in range(scenario["phase1_submitted"])]
    assert all(r["status"] == "ok" for r in phase1.values())
    assert {r["node"] for r in phase1.values()} == {scenario["head"], scenario["worker"]}


def test_losing_a_node_loses_no_submitted_evaluation(scenario):
    phase2 = scenario["phase2"]
    assert scenario["pending_after"] == 0
    assert sorted(phase2, key=int) == [str(k) for k in range(100, 108)]  # every submission came back
    statuses = [r["status"] for r in phase2.values()]
    crashed = sorted(int(key) for key, r in phase2.items() if r["status"] == "crash")
    assert set(statuses) <= {"ok", "crash"}
    assert scenario["running_on_removed"]  # the node went while an evaluation ran there ...
    assert set(scenario["running_on_removed"]) <= set(crashed)  # ... and that evaluation came back as a crash
    assert len(crashed) <= 2
    assert scenario["before_removal"] < 7  # the node went while evaluations were still queued
    assert statuses.count("ok") >= 6


def test_a_search_that_loses_a_node_mid_run_completes_and_loses_no_committed_evaluation(scenario):
    search = scenario["search"]
    assert search["error"] == ""
    assert search["removed"], "the worker node was never seen running an evaluation"
    assert search["committed_before"] >= 20  # a third of the budget was committed ...
    assert search["committed_at_removal"] < 60  # ... and the run was still going when the node went
    assert search["before_kept"]  # every evaluation committed before the loss is still there, unchanged
    assert search["finished"] == 60 and search["ids"] == list(range(60)) and search["hashes_unique"]
    statuses = search["statuses"]
    assert statuses["error"] == statuses["timeout"] == 0 and statuses["ok"] + statuses["crash"] == 60
    assert statuses["crash"] <= 2  # at most what ran on the lost node (one CPU: one evaluation, plus a race)
    assert set(search["crashed_x"]) <= set(search["worker_x"])  # only evaluations that ran on the lost node
    assert search["replay_matches"]  # the store rebuilds the archive the search had


if __name__ == "__main__":
    print(json.dumps(run_cluster_scenario()), flush=True)
