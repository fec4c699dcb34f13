"""Child processes of the tests: a `qd run` killed once it has committed enough evaluations, and
process groups (Ray nodes started by `scripts/launch_cluster.sh`) stopped for good."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from qd.store import RunStore

ROOT = Path(__file__).resolve().parents[1]


def start_run(config: Path, run_dir: Path) -> subprocess.Popen:
    """``qd run CONFIG --out RUN_DIR`` with the test domains importable."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}
    return subprocess.Popen([sys.executable, "-m", "qd.cli", "run", str(config), "--out", str(run_dir),
                             "--no-progress"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def kill_once_committed(proc: subprocess.Popen, db: Path, count: int, timeout_s: float) -> None:
    """SIGKILL ``proc`` once ``db`` holds ``count`` evaluations; fails if it ended before that."""
    deadline, committed = time.time() + timeout_s, 0
    while time.time() < deadline and committed < count:
        time.sleep(0.2)
        if db.exists():
            with RunStore(db) as store:
                committed = store.count()
    assert proc.poll() is None, proc.stderr.read().decode()
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def stop_group(proc: subprocess.Popen | None, first: int = signal.SIGINT, wait_s: float = 30) -> None:
    """End the process group ``proc`` leads: ``first`` (SIGINT lets `ray start --block` stop its Ray
    processes), then SIGKILL if it is still there after ``wait_s``."""
    if proc is None:
        return
    for sig in (first, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue
