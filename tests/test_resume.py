"""Issue 11 items 1 and 8: a run resumed during its initial random population continues a fresh
random stream (never re-drawing), and the operator/LLM counters are as durable as the evaluation
rows (a killed run's counters match its committed rows)."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from report_runs import make_run, sim_config
from store_versions import as_version_1

from qd.analysis.descriptors import resolve_measures
from qd.archive_store import replay
from qd.archives import GridArchive
from qd.domains.arm import ArmDomain
from qd.evaluators import SerialEvaluator
from qd.operators.classic import IsoLineDD
from qd.rundir import ARCHIVE_META, archive_from_spec, read_run
from qd.runner import run_search
from qd.search import Search
from qd.store import RunStore

ROOT = Path(__file__).resolve().parents[1]


def run(store_path, budget, init_random=100, seed=5):
    domain = ArmDomain(joints=4)
    archive = GridArchive(dims=[10, 10], ranges=domain.default_ranges, measure_names=["x", "y"],
                          qd_score_offset=domain.qd_score_offset)
    with RunStore(store_path) as store:
        search = Search(domain, archive, SerialEvaluator(domain),
                        operators={"iso_line_dd": (IsoLineDD(domain.space), 1.0)},
                        measures=resolve_measures(["x", "y"], domain), budget=budget, store=store,
                        init_random=init_random, seed=seed, window=1)
        with search:
            search.run()
        return [(r.id, r.hash, r.operator) for r in store.evaluations()]


def test_resume_during_the_initial_population_continues_a_fresh_random_stream(tmp_path):
    first = run(tmp_path / "run.sqlite", budget=90)  # stopped at 90 of init_random = 100
    assert [op for _, _, op in first] == ["random"] * 90
    shutil.copy(tmp_path / "run.sqlite", tmp_path / "copy.sqlite")
    resumed = run(tmp_path / "run.sqlite", budget=130)  # used to stop: "the space looks exhausted"
    assert len(resumed) == 130 and len({h for _, h, _ in resumed}) == 130  # nothing re-drawn
    assert resumed[:90] == first
    assert [op for _, _, op in resumed[90:100]] == ["random"] * 10  # the initial population completes
    assert {op for _, _, op in resumed[100:]} == {"iso_line_dd"}
    # the continuation is derived from the seed and the stored history: resuming again repeats it
    assert run(tmp_path / "copy.sqlite", budget=130) == resumed
    # ... and it is not the first session's stream started over
    fresh = run(tmp_path / "fresh.sqlite", budget=100)
    assert {h for _, h, _ in resumed[90:100]}.isdisjoint({h for _, h, _ in fresh})


def _count(db):
    try:
        with RunStore(db, readonly=True) as store:
            return store.count()
    except Exception:
        return 0


@pytest.mark.parametrize("batch", [0, 1])  # 0: serial runs grow their batches; 1: one result at a time
def test_a_killed_run_keeps_counters_that_match_its_committed_evaluations(tmp_path, batch):
    config = tmp_path / "slow.toml"
    config.write_text(f"""
[run]
name = "counters"
evaluations = 100000
init_random = 30
plot = false
progress = false
batch = {batch}
[domain]
name = "sample_domains:SlowArm"
[domain.options]
joints = 4
delay_s = 0.002
[archive]
measures = ["x", "y"]
bins = [10, 10]
[operators]
iso_line_dd = 1.0
mutation = 0.5
[evaluator]
backend = "serial"
""")
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}
    proc = subprocess.Popen([sys.executable, "-m", "qd.cli", "run", str(config), "--out", str(run_dir)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        end = time.monotonic() + 120
        while _count(run_dir / "run.sqlite") < 700:  # counters used to be saved every budget/200 = 500
            assert time.monotonic() < end and proc.poll() is None
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with RunStore(run_dir / "run.sqlite", readonly=True) as store:
        rows = list(store.evaluations())
        counters = store.counters("operators")
        replayed = archive_from_spec(store.get_meta(ARCHIVE_META))
        replay(store, replayed)
    by_operator: dict[str, int] = {}
    for row in rows:
        by_operator[row.operator] = by_operator.get(row.operator, 0) + 1
    assert {name: int(c.get("evaluated", 0)) for name, c in counters.items() if c.get("evaluated")} == by_operator
    assert sum(int(c.get("spent", 0)) for c in counters.values()) == len(rows)
    assert sum(int(c.get("gains", 0)) for c in counters.values()) == sum(r.archive_status > 0 for r in rows)
    # the archive and the totals committed with the rows are exactly what those rows give
    run = read_run(run_dir)
    try:
        assert run.totals["evaluations"] == len(rows) == sum(run.totals["statuses"].values())
        stored, again = run.archive.data(), replayed.data()
        assert stored["index"].tolist() == again["index"].tolist() and stored["id"].tolist() == again["id"].tolist()
        assert run.archive.stats == replayed.stats
    finally:
        run.store.close()


def test_a_store_from_before_traces_resumes_and_its_new_evaluations_keep_theirs(tmp_path):
    first = make_run(sim_config(evaluations=30), tmp_path / "new")
    old = as_version_1(first, tmp_path / "old")  # the layout a qd that kept no traces wrote
    with RunStore(old / "run.sqlite", readonly=True) as store:
        assert store.version == 1 and not store.has_traces and store.traces(range(30)) == {}
        before = {r.id: r.trace_summary["spans"] for r in store.evaluations()}
    run_search(sim_config(evaluations=45), old, resume=True, progress=False).store.close()
    with RunStore(old / "run.sqlite", readonly=True) as store:
        assert store.version == 2 and store.has_traces
        rows = {r.id: r for r in store.evaluations()}
        traces = store.traces(rows)
        assert store.trace_count() == sum(1 for r in rows.values() if r.id >= 30 and r.trace_summary.get("spans"))
    assert len(rows) == 45
    # the converted evaluations kept no spans: those that recorded some have no trace, the others an empty one
    assert {i for i in range(30) if before[i]} == set(range(30)) - set(traces)
    assert all(traces[i] == [] for i in range(30) if not before[i])
    # the resumed session's evaluations keep theirs, exactly as many spans as their summaries count
    assert set(range(30, 45)) <= set(traces)
    assert all(len(traces[i]) == rows[i].trace_summary.get("spans", 0) for i in range(30, 45))
    assert any(traces[i] for i in range(30, 45))
