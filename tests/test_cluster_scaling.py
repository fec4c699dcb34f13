"""Issue 23 item 5: on a simulated multi-node cluster (ray.cluster_utils.Cluster), throughput of sleeping
evaluations grows with the nodes (one driver feeds three nodes' workers).

The measurement is ``scripts/bench_cluster.py``'s own (``measure``): the lean submit/collect loop,
``2 * slots * batch_size`` in flight, automatic batches. A process can be connected to one Ray
runtime only and the test session holds one, so the cluster runs in a subprocess: this file is also
the script, printing one JSON line.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DURATION = 0.1  # seconds each evaluation sleeps: 1 node x 16 slots = 160/s, 3 nodes = 480/s


def run_scaling() -> dict:
    sys.path.insert(0, str(ROOT / "scripts"))
    import ray
    from bench_cluster import measure, start_workers
    from ray.cluster_utils import Cluster

    args = argparse.Namespace(concurrency=16, seconds=3.0)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    out: dict = {}
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        for nodes in (1, 3):
            while len(cluster.list_all_nodes()) < nodes:
                cluster.add_node(num_cpus=2)
            cluster.wait_for_nodes()
            start_workers()
            for mode in ("task", "actor"):
                row = measure(mode, nodes, DURATION, None, args)
                out[f"{mode}-{nodes}"] = {key: row[key] for key in ("slots", "batch", "rate", "ideal", "nodes_seen",
                                                                    "statuses", "load")}
    finally:
        ray.shutdown()
        cluster.shutdown()
    return out


pytestmark = pytest.mark.slow  # three raylets and their workers: 1-3 minutes


@pytest.fixture(scope="module")
def scaling() -> dict:
    proc = subprocess.run([sys.executable, __file__], capture_output=True, text=True, timeout=400, cwd=ROOT)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert proc.returncode == 0 and lines, f"cluster script failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return json.loads(lines[-1])


@pytest.mark.parametrize("mode", ["task", "actor"])
def test_throughput_grows_with_the_nodes_of_a_simulated_cluster(scaling, mode):
    one, three = scaling[f"{mode}-1"], scaling[f"{mode}-3"]
    assert three["slots"] == 3 * one["slots"]  # each node brings its CPUs (tasks) or its actor (actors)
    assert (one["nodes_seen"], three["nodes_seen"]) == (1, 3)  # evaluations ran on every node (one actor each)
    assert set(one["statuses"]) == set(three["statuses"]) == {"ok"}
    # three nodes: at least twice as many evaluations (a saturated driver would not scale); how near
    # the ideal each gets is scripts/bench_cluster.py's measurement, not an assertion
    assert three["rate"] >= 2.0 * one["rate"], (one, three)


if __name__ == "__main__":
    print(json.dumps(run_scaling()), flush=True)
