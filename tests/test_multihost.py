"""Issue 11 item 12: a real two-host Ray cluster, each node in its own Linux network namespace.

Topology (all created by this test, nothing outside them is reached)::

    netns qdh-PID: 10.77.0.1/24  head node (scripts/launch_cluster.sh head, token auth),
                                  `qd llm serve --host 10.77.0.1` (the embedded model), the driver (`qd run`)
    netns qdw-PID: 10.77.0.2/24  worker node (scripts/launch_cluster.sh worker, the head's token copied),
                                  started in an empty directory: the domain's module is not importable there
    a veth pair joins the two namespaces

The domain module lives in a directory only the driver has on its path, so its code must travel
with the domain (``qd.evaluators.ray_eval`` ships it). Every evaluation makes one traced LLM call to
the endpoint on the head's address. Mid-run the worker node is killed (SIGKILL of its Ray
processes); the run must keep every committed evaluation and finish its budget on the head.

Needs root and ``ip netns`` (CI runs as root); elsewhere it skips and says why. It is part of the
default run (about a minute), so CI runs it on every submission; alone: ``pytest -k multihost``.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from run_process import stop_group

from qd.store import RunStore

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "launch_cluster.sh"
BIN = Path(sys.executable).parent
HEAD_IP, WORKER_IP, PORT, LLM_PORT = "10.77.0.1", "10.77.0.2", 6379, 8088
BUDGET = 36

DOMAIN = '''
"""A user's domain, importable only where the driver runs."""
import time

import ray

from qd.domain import Domain
from qd.llm import LLMClient
from qd.result import EvalResult
from qd.space import Float, Space


class MultiHostDomain(Domain):
    name = "multihost"
    space = Space({"x": Float(0.0, 1.0)})
    default_measures = ("x",)
    default_ranges = ((0.0, 1.0),)

    def __init__(self, base_url: str, delay_s: float = 0.5):
        self.base_url, self.delay_s = base_url, delay_s

    def evaluate(self, config):
        client = LLMClient(base_url=self.base_url, model="gemma-3-270m", max_tokens=4, timeout_s=120.0,
                           retries=2, cache=None)
        answer = client.complete(f"Count: {config['x']:.2f},", name="ask", temperature=0.0, seed=1)
        time.sleep(self.delay_s)
        return EvalResult(fitness=-abs(config["x"] - 0.7), measures={"x": config["x"]},
                          metrics={"node_ip": ray.util.get_node_ip_address(), "answer": answer.text})
'''


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, check=check, timeout=60)


def _netns_or_skip() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: the test creates network namespaces (`ip netns add`)")
    if shutil.which("ip") is None:
        pytest.skip("needs iproute2 (`ip`) to create network namespaces")
    probe = f"qdprobe-{os.getpid()}"
    made = sh("ip", "netns", "add", probe, check=False)
    if made.returncode != 0:
        pytest.skip(f"network namespaces are not permitted here: {made.stderr.strip()}")
    sh("ip", "netns", "del", probe, check=False)


class Topology:
    """Two namespaces joined by a veth pair, addresses 10.77.0.1 (head) and 10.77.0.2 (worker)."""

    def __init__(self) -> None:
        pid = os.getpid()
        self.head, self.worker = f"qdh-{pid}", f"qdw-{pid}"
        self.veth_h, self.veth_w = f"qdvh{pid}"[:15], f"qdvw{pid}"[:15]

    def up(self) -> None:
        for ns in (self.head, self.worker):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "link", "add", self.veth_h, "type", "veth", "peer", "name", self.veth_w)
        for ns, dev, ip in ((self.head, self.veth_h, HEAD_IP), (self.worker, self.veth_w, WORKER_IP)):
            sh("ip", "link", "set", dev, "netns", ns)
            sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
            # Ray finds a node's address from the route to a public IP (a UDP connect, no packet
            # sent); the only route here leads to the other namespace.
            sh("ip", "-n", ns, "route", "add", "default", "dev", dev)

    def down(self) -> None:
        for ns in (self.head, self.worker):
            sh("ip", "netns", "del", ns, check=False)  # deletes the veth pair with it

    def popen(self, ns: str, args: list[str], env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen:
        out = log.open("w")
        return subprocess.Popen(["ip", "netns", "exec", ns, *args], env=env, cwd=cwd, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "PYTHONPATH", "QD_"))}
    env.update(HOME=str(home), PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", RAY_AUTH_MODE="token",
               QD_CACHE_DIR=str(home / "qd-cache"), **extra)
    return env


def _kill_leftovers(marker: str) -> None:
    """SIGKILL processes whose command line names this test's own temp dir (Ray daemons of our nodes)."""
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            cmdline = (pid_dir / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            try:
                os.kill(int(pid_dir.name), signal.SIGKILL)
            except ProcessLookupError:
                pass


def _wait_for(predicate, what: str, limit_s: float, procs: dict[str, subprocess.Popen], logs: dict[str, Path]):
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        for name, proc in procs.items():
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited ({proc.returncode}) while waiting for {what}:\n"
                                     f"{logs[name].read_text()[-4000:]}")
        time.sleep(0.5)
    tails = "\n".join(f"--- {n}\n{p.read_text()[-2000:]}" for n, p in logs.items() if p.exists())
    raise AssertionError(f"timed out after {limit_s:.0f} s waiting for {what}\n{tails}")


def _rows(db: Path) -> dict[int, tuple]:
    """id -> (hash, status, objective or None, metrics JSON, trace summary JSON), read as a reader of a live run."""
    if not db.exists():
        return {}
    try:
        with RunStore(db, readonly=True) as store:
            return {r.id: (r.hash, r.status, None if r.fitness != r.fitness else r.fitness, json.dumps(r.metrics),
                           json.dumps(r.trace_summary)) for r in store.evaluations()}
    except (sqlite3.OperationalError, ValueError):  # the run is still creating its schema
        return {}


def test_multihost_cluster_in_network_namespaces_survives_losing_the_worker_node():
    _netns_or_skip()
    net = Topology()
    base = Path(tempfile.mkdtemp(prefix="qdmh-", dir="/tmp"))  # short: Ray's socket paths stay < 108 bytes
    head_home, worker_home, user_code = base / "hh", base / "wh", base / "usercode"
    driver_dir, worker_dir, run_dir = base / "driver", base / "worker", base / "run"
    for d in (head_home, worker_home, user_code, driver_dir, worker_dir):
        d.mkdir()
    (user_code / "mh_domain.py").write_text(DOMAIN)
    logs = {name: base / f"{name}.log" for name in ("head", "worker", "llm", "driver")}
    procs: dict[str, subprocess.Popen] = {}
    try:
        net.up()
        # -- head node, with Ray token authentication (the script creates the token) -----------------
        procs["head"] = net.popen(net.head, ["bash", str(SCRIPT), "head", str(PORT), "--block",
                                             "--node-ip-address", HEAD_IP, "--temp-dir", str(base / "rh"),
                                             "--num-cpus", "2", "--include-dashboard", "false",
                                             "--object-store-memory", str(200 * 2**20)],
                                  _env(head_home), head_home, logs["head"])
        _wait_for(lambda: "ray start --address=" in logs["head"].read_text(), "the head node", 180, procs, logs)
        token = head_home / ".ray" / "auth_token"
        assert token.exists() and oct(token.stat().st_mode & 0o777) == "0o600"
        # -- the token reaches the worker node the documented way: the head's file, copied --------------
        (worker_home / ".ray").mkdir()
        shutil.copy(token, worker_home / ".ray" / "auth_token")
        os.chmod(worker_home / ".ray" / "auth_token", 0o600)
        worker_env = _env(worker_home)
        not_importable = subprocess.run(["ip", "netns", "exec", net.worker, sys.executable, "-c", "import mh_domain"],
                                        env=worker_env, cwd=worker_dir, capture_output=True, text=True)
        assert not_importable.returncode != 0 and "No module named 'mh_domain'" in not_importable.stderr
        procs["worker"] = net.popen(net.worker, ["bash", str(SCRIPT), "worker", HEAD_IP, str(PORT), "--block",
                                                 "--node-ip-address", WORKER_IP, "--temp-dir", str(base / "rw"),
                                                 "--num-cpus", "2", "--object-store-memory", str(200 * 2**20)],
                                    worker_env, worker_dir, logs["worker"])
        _wait_for(lambda: "Ray runtime started" in logs["worker"].read_text(), "the worker node", 180, procs, logs)
        # -- one LLM endpoint for both nodes: the embedded model served on the head's address ------------
        # (the user's own HOME: the model file is assembled there once, and the server needs no Ray token)
        procs["llm"] = net.popen(net.head, [sys.executable, "-m", "qd.cli", "llm", "serve", "--host", HEAD_IP,
                                            "--port", str(LLM_PORT)], _env(Path.home()), head_home, logs["llm"])
        base_url = f"http://{HEAD_IP}:{LLM_PORT}/v1"
        _wait_for(lambda: base_url in logs["llm"].read_text(), "the LLM endpoint", 300, procs, logs)
        assert "has no authentication" in logs["llm"].read_text()  # qd llm serve warns on a non-loopback address
        # -- the driver on the head node -------------------------------------------------------------
        config = driver_dir / "multihost.toml"
        config.write_text(f"""
[run]
name = "multihost"
evaluations = {BUDGET}
init_random = 8
plot = false
progress = false
[domain]
name = "mh_domain:MultiHostDomain"
[domain.options]
base_url = "{base_url}"
[archive]
measures = ["x"]
bins = [12]
ranges = [[0.0, 1.0]]
noise = "none"
[operators]
mutation = 1.0
[evaluator]
backend = "ray"
ray_address = "{HEAD_IP}:{PORT}"
timeout_s = 240
""")
        procs["driver"] = net.popen(net.head, [sys.executable, "-m", "qd.cli", "run", str(config), "--out",
                                               str(run_dir), "--no-progress"],
                                    _env(head_home, PYTHONPATH=str(user_code)), driver_dir, logs["driver"])
        db = run_dir / "run.sqlite"

        def on_worker(rows: dict) -> list[int]:
            return [i for i, r in rows.items() if r[1] == "ok" and json.loads(r[3]).get("node_ip") == WORKER_IP]

        def ready_to_kill():
            rows = _rows(db)
            return rows if len(rows) >= BUDGET // 3 and on_worker(rows) else None

        before = _wait_for(ready_to_kill, "evaluations on the worker node", 600, procs, logs)
        # -- lose the worker node: SIGKILL its `ray start` and every Ray process it started ------------
        stop_group(procs.pop("worker"), first=signal.SIGKILL, wait_s=10)
        _kill_leftovers(str(base / "rw"))
        driver = procs["driver"]
        try:
            driver.wait(timeout=900)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the run did not finish:\n{logs['driver'].read_text()[-4000:]}") from None
        assert driver.returncode == 0, logs["driver"].read_text()[-4000:]
        after = _rows(db)
    finally:
        for name in ("driver", "llm", "worker", "head"):
            stop_group(procs.get(name))
        _kill_leftovers(str(base))
        net.down()

    # the search finished its budget and lost no committed evaluation
    assert len(after) == BUDGET
    assert all(after[i] == row for i, row in before.items())
    statuses = [r[1] for r in after.values()]
    assert statuses.count("ok") >= BUDGET - 4  # at most the evaluations in flight on the lost node crashed
    assert set(statuses) <= {"ok", "crash", "error"}
    # evaluations ran on both nodes: the worker imported nothing, so the domain's code travelled there
    nodes = [json.loads(r[3]).get("node_ip") for r in after.values() if r[1] == "ok"]
    assert nodes.count(WORKER_IP) >= 1 and nodes.count(HEAD_IP) >= 1
    # traced LLM calls from both nodes are counted (one per evaluation, through the head's endpoint)
    calls = {ip: 0 for ip in (HEAD_IP, WORKER_IP)}
    for r in after.values():
        if r[1] == "ok":
            calls[json.loads(r[3])["node_ip"]] += json.loads(r[4]).get("llm_calls", 0)
    assert calls[HEAD_IP] >= 1 and calls[WORKER_IP] >= 1
    assert sum(calls.values()) == statuses.count("ok")
    status = subprocess.run([sys.executable, "-m", "qd.cli", "status", "--json", str(run_dir)], capture_output=True,
                            text=True, timeout=120)
    assert status.returncode == 0, status.stderr
    spend = json.loads(status.stdout)["spend"]["pipeline"]
    assert spend["calls"] == sum(calls.values())  # `qd status` counts the calls of both nodes
    shutil.rmtree(base, ignore_errors=True)
