"""Issue 11 items 3, 6, 7: read-only commands never import the run's domain; a resume may not change
what scores and cells mean (and records what else changed); one writer per run directory."""
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from qd.cli import main
from qd.rundir import RunLock, RunLockedError, read_run
from qd.store import RunStore

ROOT = Path(__file__).resolve().parents[1]
QD = [sys.executable, "-m", "qd.cli"]


def arm_config(path, evaluations=60, bins=8, measures='["x", "y"]', extra="", domain='name = "arm"',
               operators="mutation = 1.0", archive_type="grid"):
    path.write_text(f"""
[run]
name = "rundir"
evaluations = {evaluations}
init_random = 10
plot = false
progress = false
{extra}
[domain]
{domain}
[domain.options]
joints = 4
[archive]
type = "{archive_type}"
measures = {measures}
{f"bins = [{bins}, {bins}]" if archive_type == "grid" else "cells = 20"}
[operators]
{operators}
[evaluator]
backend = "serial"
""")
    return path


@pytest.fixture
def finished_run(tmp_path):
    out = tmp_path / "run"
    assert main(["run", str(arm_config(tmp_path / "arm.toml")), "--out", str(out), "--no-progress"]) == 0
    return out


# -- item 3: reading a run reads the store only ------------------------------------------------------------
EVIL = '''
import pathlib
pathlib.Path({marker!r}).write_text("imported")  # what a hostile run directory's domain could do on import
from qd.domains.arm import ArmDomain as Evil
'''


def _snapshot(run_dir):
    # run.sqlite-shm is SQLite's shared-memory index that every reader of a WAL database maps; not data
    return {p.name: p.read_bytes() for p in sorted(run_dir.iterdir()) if p.is_file() and not p.name.endswith("-shm")}


def test_read_only_commands_never_import_the_domain_named_in_the_run(finished_run, tmp_path, monkeypatch, capsys):
    marker = tmp_path / "imported.txt"
    (tmp_path / "evil_domain.py").write_text(EVIL.format(marker=str(marker)))
    monkeypatch.syspath_prepend(str(tmp_path))
    # The run directory came from someone else: its config.toml and its store both name the evil domain.
    toml = (finished_run / "config.toml").read_text().replace('name = "arm"', 'name = "evil_domain:Evil"')
    (finished_run / "config.toml").write_text(toml)
    with RunStore(finished_run / "run.sqlite") as store:
        config = store.get_meta("config")
        config["domain"]["name"] = "evil_domain:Evil"
        store.set_meta("config", config)
    before = _snapshot(finished_run)
    assert main(["status", str(finished_run)]) == 0
    assert main(["status", str(finished_run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["domain"] == "evil_domain:Evil"
    assert main(["plot", str(finished_run), "-o", str(tmp_path / "map.png")]) == 0
    assert main(["elites", str(finished_run), "--top", "2", "--where", "x > -10"]) == 0
    assert main(["elites", str(finished_run), "--top", "1", "--traces", str(tmp_path / "traces"),
                 "--export-traces", str(tmp_path / "otlp.json")]) == 0  # the stored traces
    assert main(["report", str(finished_run), "-o", str(tmp_path / "report.html")]) == 0
    assert not marker.exists() and "evil_domain" not in sys.modules
    assert _snapshot(finished_run) == before  # wrote nothing into the run directory either
    # The one command that runs the domain says so first (and then does: the marker proves the module is live).
    assert main(["elites", str(finished_run), "--top", "1", "--rerun", "--traces", str(tmp_path / "traces")]) == 0
    err = capsys.readouterr().err
    assert "--rerun re-running them imports and runs the domain named in" in err and "'evil_domain:Evil'" in err
    assert marker.exists()


def test_qd_status_in_a_fresh_process_writes_nothing(finished_run, tmp_path):
    marker = tmp_path / "imported.txt"
    (tmp_path / "evil_domain.py").write_text(EVIL.format(marker=str(marker)))
    with RunStore(finished_run / "run.sqlite") as store:
        config = store.get_meta("config")
        config["domain"] = {"name": "evil_domain:Evil", "options": {}}
        store.set_meta("config", config)
    before = _snapshot(finished_run)
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run([*QD, "status", str(finished_run)], env=env, capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "evil_domain:Evil" in proc.stdout
    assert not marker.exists() and _snapshot(finished_run) == before


def test_read_run_rebuilds_the_same_archive_as_the_search(tmp_path):
    out = tmp_path / "cvt"
    config = arm_config(tmp_path / "cvt.toml", archive_type="cvt")
    from qd.config import load_config
    from qd.runner import run_search

    searched = run_search(load_config(config), out, progress=False)  # the archive the search itself built
    without = read_run(out)  # rebuilt from the store alone, without the domain
    assert without.archive.stats == searched.archive.stats and without.archive.stats.num_elites > 0
    for field in ("index", "objective", "measures"):
        assert np.array_equal(without.archive.data(field), searched.archive.data(field))
    assert without.archive.objective_name == searched.domain.objective_name


# -- item 6: resume refuses a config that changes what scores and cells mean --------------------------------
def test_resume_refuses_changed_bins_in_the_edited_config_toml(finished_run, capsys):
    path = finished_run / "config.toml"
    path.write_text(path.read_text().replace("bins = [8, 8]", "bins = [9, 8]"))
    assert main(["run", "--resume", str(finished_run), "--evals", "80"]) == 2
    err = capsys.readouterr().err
    assert "changes what scores and cells mean" in err and "archive.bins: [8, 8] -> [9, 8]" in err
    with RunStore(finished_run / "run.sqlite") as store:
        assert store.count() == 60  # nothing evaluated into the incomparable archive


def test_resume_with_a_config_file_that_changes_the_measures_names_them(finished_run, tmp_path, capsys):
    other = arm_config(tmp_path / "other.toml", evaluations=80, measures='["x", "llm_calls"]')
    assert main(["run", str(other), "--resume", str(finished_run)]) == 2  # was: CONFIG silently ignored
    err = capsys.readouterr().err
    assert "archive.measures: ['x', 'y'] -> ['x', 'llm_calls']" in err and "KeyError" not in err


def test_resume_refuses_another_domain_option(finished_run, tmp_path, capsys):
    other = arm_config(tmp_path / "other.toml", evaluations=80).read_text().replace("joints = 4", "joints = 5")
    (tmp_path / "other.toml").write_text(other)
    assert main(["run", str(tmp_path / "other.toml"), "--resume", str(finished_run)]) == 2
    assert "domain.options: {'joints': 4} -> {'joints': 5}" in capsys.readouterr().err


def test_resume_refuses_a_cvt_archive_whose_centroids_moved_with_the_seed(tmp_path, capsys):
    out = tmp_path / "cvt"
    config = arm_config(tmp_path / "cvt.toml", archive_type="cvt")
    assert main(["run", str(config), "--out", str(out), "--no-progress", "--seed", "1"]) == 0
    assert main(["run", "--resume", str(out), "--evals", "70", "--seed", "2"]) == 2
    assert "centroids (a CVT archive's centroids follow run.seed)" in capsys.readouterr().err


def test_resume_allows_budget_workers_weights_and_llm_endpoint_and_records_them(finished_run, tmp_path):
    other = arm_config(tmp_path / "other.toml", evaluations=75, operators="mutation = 1.0\niso_line_dd = 0.5")
    text = other.read_text() + '\n[llm]\nbase_url = "http://127.0.0.1:9/v1"\n'
    other.write_text(text.replace('backend = "serial"', 'backend = "serial"\nworkers = 3'))
    assert main(["run", str(other), "--resume", str(finished_run), "--no-progress"]) == 0
    with RunStore(finished_run / "run.sqlite") as store:
        assert store.count() == 75
        (resume,) = store.get_meta("resumes")
    assert resume["evaluations"] == 60
    assert resume["changed"]["run.evaluations"] == [60, 75]
    assert resume["changed"]["operators.iso_line_dd"] == [None, 0.5]
    assert resume["changed"]["evaluator.workers"] == [0, 3]
    assert resume["changed"]["llm.base_url"] == ["", "http://127.0.0.1:9/v1"]


def _closed_port() -> int:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        return closed.getsockname()[1]  # nothing listens there once the socket is closed


def _run_state(run_dir):
    with RunStore(run_dir / "run.sqlite", readonly=True) as store:
        meta = {key: store.get_meta(key) for key in ("config", "budget", "archive", "resumes", "noise")}
        return (run_dir / "config.toml").read_text(), meta, store.count()


def test_a_resume_that_fails_to_start_leaves_the_run_as_it_was(finished_run):
    """Issue 22: a resume on an unreachable Ray head rewrote config.toml and the budget; a plain resume then failed."""
    before = _run_state(finished_run)
    # a fresh process: no Ray runtime is running there, so the address is really tried
    failed = subprocess.run([*QD, "run", "--resume", str(finished_run), "--backend", "ray", "--ray-address",
                             f"127.0.0.1:{_closed_port()}", "--evals", "80", "--no-progress"],
                            capture_output=True, text=True, timeout=120)
    assert failed.returncode == 2 and "evaluator.ray_address" in failed.stderr, failed.stderr
    assert _run_state(finished_run) == before  # config.toml, stored config, budget, resumes: untouched
    assert main(["run", "--resume", str(finished_run), "--evals", "70", "--no-progress"]) == 0  # plain: serial
    config_toml, meta, count = _run_state(finished_run)
    assert count == 70 and meta["budget"] == 70 and 'backend = "serial"' in config_toml
    (resume,) = meta["resumes"]
    assert resume["changed"] == {"run.evaluations": [60, 70]}


# -- item 7: one writer per run directory ---------------------------------------------------------------
def _count(run_dir):
    if not (run_dir / "run.sqlite").exists():
        return 0
    try:
        with RunStore(run_dir / "run.sqlite", readonly=True) as store:
            return store.count()
    except sqlite3.OperationalError:  # the run is still creating its schema
        return 0


def _wait_for_lock(path, proc, limit_s=60.0):
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        if path.exists() and path.read_text():
            return json.loads(path.read_text())
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else "run exited"
        time.sleep(0.1)
    raise AssertionError("the run never took its lock")


def test_a_second_resume_of_a_live_run_names_the_holder_and_a_crash_frees_the_lock(tmp_path, capsys):
    out = tmp_path / "run"
    config = arm_config(tmp_path / "slow.toml", evaluations=100_000, domain='name = "sample_domains:SlowArm"')
    config.write_text(config.read_text().replace("joints = 4", "joints = 4\ndelay_s = 0.01"))
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'tests'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    first = subprocess.Popen([*QD, "run", str(config), "--out", str(out), "--no-progress"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        holder = _wait_for_lock(out / "lock", first)
        assert holder["pid"] == first.pid and holder["host"] == socket.gethostname()
        end = time.monotonic() + 60
        while _count(out) < 5:  # a live run: it has committed evaluations
            assert time.monotonic() < end and first.poll() is None
            time.sleep(0.1)
        sys.path.insert(0, str(ROOT / "tests"))
        try:
            assert main(["run", "--resume", str(out), "--no-progress"]) == 2
        finally:
            sys.path.remove(str(ROOT / "tests"))
        err = capsys.readouterr().err
        assert f"is in use by pid {first.pid} on host {socket.gethostname()}" in err
        first.send_signal(signal.SIGKILL)  # a crash: no cleanup runs
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    with RunStore(out / "run.sqlite") as store:
        done = store.count()
    assert done > 0 and (out / "lock").exists()  # the dead holder's file stays; the kernel dropped its lock
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        assert main(["run", "--resume", str(out), "--evals", str(done + 5), "--no-progress"]) == 0
    finally:
        sys.path.remove(str(ROOT / "tests"))
    with RunStore(out / "run.sqlite") as store:
        assert store.count() == done + 5
    assert not (out / "lock").exists()  # released on a clean exit


def test_lock_is_exclusive_within_one_host_and_reusable_after_release(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(RunLockedError, match=rf"in use by pid {os.getpid()} on host "):
            RunLock(tmp_path).acquire()
    with RunLock(tmp_path):  # released: can be taken again
        pass
