"""Issue 11 item 13: the cluster scripts use Ray token authentication by default, and `qd llm serve`
warns when it binds an address other nodes can reach (the embedded server has no authentication)."""
from __future__ import annotations

import os
import re
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from run_process import stop_group

from qd.cli import serve_warning

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "launch_cluster.sh"
BIN = Path(sys.executable).parent


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(HOME=str(home), PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", **extra)
    return env


def test_serve_warns_for_every_address_but_loopback():
    assert serve_warning("127.0.0.1") is None and serve_warning("localhost") is None and serve_warning("::1") is None
    for host in ("0.0.0.0", "10.77.0.1", "::", "myhost"):
        assert "has no authentication" in serve_warning(host)


def test_qd_llm_serve_on_all_interfaces_prints_the_warning_first():
    proc = subprocess.Popen([sys.executable, "-m", "qd.cli", "llm", "serve", "--host", "0.0.0.0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        ready, _, _ = select.select([proc.stderr], [], [], 60)
        assert ready, "qd llm serve printed nothing within 60 s"
        line = proc.stderr.readline()
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # our own process group: the CLI and the model server it started
        proc.wait()
    assert line.startswith("qd: warning: the embedded model server has no authentication")


def test_a_worker_without_the_cluster_token_refuses_to_start(tmp_path):
    proc = subprocess.run(["bash", str(SCRIPT), "worker", "10.77.0.1"], env=_env(tmp_path), capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert "no Ray auth token on this node: copy the head's ~/.ray/auth_token" in proc.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


DRIVER = """
import ray, sys
try:
    ray.init(address=sys.argv[1], _node_ip_address=sys.argv[2], log_to_driver=False)
    print("CONNECTED", ray.get(ray.remote(lambda: 41 + 1).remote()))
except Exception as exc:
    print("REFUSED", type(exc).__name__, exc)
"""


def start_head(script_args: list[str], env: dict[str, str], log: Path) -> tuple[subprocess.Popen, str]:
    """``launch_cluster.sh head ... --block`` in its own process group; returns it and the GCS address it printed."""
    out = log.open("w")
    head = subprocess.Popen(["bash", str(SCRIPT), "head", *script_args, "--block"], env=env, stdout=out,
                            stderr=subprocess.STDOUT, start_new_session=True)
    end = time.monotonic() + 120
    while True:
        found = re.search(r"ray start --address='([^']+)'", log.read_text())
        if found:
            return head, found.group(1)
        if time.monotonic() > end or head.poll() is not None:
            stop_group(head)
            raise AssertionError(f"the head did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.3)


@pytest.mark.slow
def test_head_started_by_the_script_requires_the_token_it_created(tmp_path):
    home, stranger = tmp_path / "head-home", tmp_path / "stranger-home"
    home.mkdir(), stranger.mkdir()
    temp_dir = tempfile.mkdtemp(prefix="qdr-", dir="/tmp")  # Ray's socket paths must stay under 108 bytes
    head, address = start_head([str(_free_port()), "--temp-dir", temp_dir, "--num-cpus", "1",
                                "--include-dashboard", "false"], _env(home), tmp_path / "head.log")
    ip = address.split(":")[0]
    try:
        token = home / ".ray" / "auth_token"
        assert token.exists() and stat.S_IMODE(token.stat().st_mode) == 0o600
        assert "created the cluster token" in (tmp_path / "head.log").read_text()
        with_token = subprocess.run([sys.executable, "-c", DRIVER, address, ip],
                                    env=_env(home, RAY_AUTH_MODE="token"), capture_output=True, text=True, timeout=120)
        assert "CONNECTED 42" in with_token.stdout, with_token.stdout + with_token.stderr[-3000:]
        wrong = subprocess.run([sys.executable, "-c", DRIVER, address, ip],
                               env=_env(stranger, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="not-the-token"),
                               capture_output=True, text=True, timeout=120)
        assert "REFUSED" in wrong.stdout and "CONNECTED" not in wrong.stdout, wrong.stdout + wrong.stderr[-3000:]
    finally:
        stop_group(head)
        shutil.rmtree(temp_dir, ignore_errors=True)
