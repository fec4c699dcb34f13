"""A `qd run` in a child process, killed with SIGKILL once it has committed enough evaluations."""
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
