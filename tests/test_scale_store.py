"""Issue 23: the run store keeps the archive as it stands and the running totals with every group
commit, so reading a run costs the archive, not the history; a version 1 store (the layout before
it) still reads as the qd that wrote it, and resumes; the driver keeps dedup keys at 8 bytes each.

The version 1 runs in tests/data were written by qd at commit 78571b6 (tests/data/README.md).
"""
from __future__ import annotations

import json
import math
import shutil
import sqlite3
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest
from archive_views import exact
from hypothesis import given, settings
from hypothesis import strategies as st
from run_process import start_run

from qd.archive_store import replay
from qd.cli import main, run_status
from qd.config import load_config
from qd.keyset import KeySet, key_of
from qd.listeners import SearchListener
from qd.noise import RULE as NOISE_RULE
from qd.rundir import ARCHIVE_META, RunStartingError, archive_from_spec, read_run
from qd.runner import run_search
from qd.store import RunStore
from qd.totals import RunTotals

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"


def _replayed(store):
    """The archive rebuilt from every committed evaluation, in the store's own read transaction."""
    archive = archive_from_spec(store.get_meta(ARCHIVE_META))
    replay(store, archive)
    return archive


def _v1_copy(name, tmp_path):
    run_dir = tmp_path / name
    shutil.copytree(DATA / f"v1_{name}", run_dir)
    return run_dir


# -- version 1 stores ------------------------------------------------------------------------------

def _as_expected(found: dict, expected: dict) -> dict:
    """``found`` cut to the keys ``expected`` has, at every level of nested dicts (a missing one stays missing)."""
    return {k: _as_expected(found[k], v) if isinstance(v, dict) and isinstance(found.get(k), dict)
            else found.get(k, "MISSING") for k, v in expected.items() if k != "run_dir"}


@pytest.mark.parametrize("name", ["plain", "noisy"])
def test_a_version_1_store_reads_as_the_qd_that_wrote_it(name, tmp_path, capsys):
    run_dir = _v1_copy(name, tmp_path)
    before = (run_dir / "run.sqlite").read_bytes()
    with RunStore(run_dir / "run.sqlite", readonly=True) as store:
        assert store.version == 1
    status = run_status(run_dir)
    expected = json.loads((run_dir / "expected_status.json").read_text())
    archive_figures = ("num_elites", "coverage", "qd_score", "obj_max")
    if name == "noisy":  # its archive is a replay of its samples through today's noise rule (posterior means)
        with RunStore(run_dir / "run.sqlite", readonly=True) as store:
            archive = _replayed(store)
        assert [status[k] for k in archive_figures] == pytest.approx(
            [len(archive), archive.stats.coverage, archive.stats.qd_score, archive.stats.obj_max])
        expected = {k: v for k, v in expected.items() if k not in archive_figures}
    # the figures that qd printed, the same; what qd reports since (the filter's count, why a run stopped) says "none"
    assert _as_expected(status, expected) == {k: v for k, v in expected.items() if k != "run_dir"}
    assert status["stopped"] is None and all(op["filtered"] == 0 for op in status["operators"].values())
    assert main(["elites", str(run_dir), "--top", "5"]) == 0
    if name == "plain":  # the same elites and figures; columns added since (the mean of its evaluations) aside
        printed = json.loads(capsys.readouterr().out)
        expected_top = json.loads((run_dir / "expected_top5.json").read_text())
        assert [_as_expected(p, e) for p, e in zip(printed, expected_top)] == expected_top
        assert len(printed) == len(expected_top) and all(p["mean"] == p["objective"] for p in printed)
    assert main(["plot", str(run_dir), "-o", str(tmp_path / "map.png")]) == 0
    assert (run_dir / "run.sqlite").read_bytes() == before  # readers never write


@pytest.mark.parametrize("name", ["plain", "noisy"])
def test_resuming_a_version_1_store_converts_it_in_place_and_goes_on(name, tmp_path):
    run_dir = _v1_copy(name, tmp_path)
    with RunStore(run_dir / "run.sqlite", readonly=True) as store:
        old_rows = {r.id: (r.hash, r.config, r.fitness, r.operator) for r in store.evaluations()}
        old_samples = store.samples()
    old_status = run_status(run_dir)
    config = load_config(run_dir / "config.toml", {"run": {"evaluations": 220}})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_search(config, run_dir, resume=True, progress=False).store.close()
    # a noisy run written under the earlier noise rule says that its cells are decided again
    assert len([w for w in caught if "earlier qd" in str(w.message)]) == (name == "noisy")
    if name == "noisy":
        with RunStore(run_dir / "run.sqlite", readonly=True) as store:
            assert store.get_meta("noise")["noise_rule"] == NOISE_RULE
    with RunStore(run_dir / "run.sqlite", readonly=True) as store:
        assert store.version == 2 and store.count() == 220
        rows = {r.id: r for r in store.evaluations()}
        assert {i: (rows[i].hash, rows[i].config, rows[i].fitness, rows[i].operator) for i in old_rows} == old_rows
        assert all(store.samples()[i] == sample for i, sample in old_samples.items())
        first = [r for r in rows.values() if r.operator != "resample"]
        assert len({r.hash for r in first}) == len(first)  # nothing evaluated twice across the conversion
        if name == "plain":  # the stored archive is the one every committed evaluation gives
            assert exact(read_run(run_dir).archive) == exact(_replayed(store))
    status = run_status(run_dir)
    assert status["evaluations"] == 220 == sum(status["statuses"].values())
    assert status["operators"]["random"]["evaluated"] == old_status["operators"]["random"]["evaluated"]
    counted = RunTotals(["x", "y"], *zip(*[(-4, 4), (-4, 4)]))
    with RunStore(run_dir / "run.sqlite", readonly=True) as store:
        counted.add_rows(store.evaluations())
    assert status["failures"] == counted.failures and status["out_of_range"] == counted.out_of_range
    with warnings.catch_warnings(record=True) as caught:  # it records today's rule: the next resume says nothing
        warnings.simplefilter("always")
        run_search(load_config(run_dir / "config.toml", {"run": {"evaluations": 230}}), run_dir, resume=True,
                   progress=False).store.close()
    assert not [w for w in caught if "earlier qd" in str(w.message)] and run_status(run_dir)["evaluations"] == 230


def test_a_conversion_that_fails_leaves_the_version_1_store_as_it_was(tmp_path):
    run_dir = _v1_copy("plain", tmp_path)
    with RunStore(run_dir / "run.sqlite") as store:
        with pytest.raises(RuntimeError, match="disk on fire"):
            store.migrate(lambda converted: (_ for _ in ()).throw(RuntimeError("disk on fire")))
        assert store.version == 1
    expected = json.loads((run_dir / "expected_status.json").read_text())
    assert run_status(run_dir)["qd_score"] == expected["qd_score"]


def test_writing_evaluations_to_a_version_1_store_is_refused_until_it_is_converted(tmp_path):
    run_dir = _v1_copy("plain", tmp_path)
    with RunStore(run_dir / "run.sqlite") as store, pytest.raises(RuntimeError, match="version 1 run store"):
        store.add_evaluation(id=999, config_json="{}", status="ok", fitness=1.0, measures={}, error="",
                             feedback="", operator="x", parent_ids=[], trace_summary={}, metrics={},
                             archive_status=0, submitted_at=0.0)


# -- what the store keeps, and reading it while a run writes --------------------------------------

def _write_config(path, evaluations, delay_s=0.0005, batch=16, noise="none", joints=6):
    path.write_text(f"""
[run]
name = "live"
evaluations = {evaluations}
init_random = 40
plot = false
progress = false
batch = {batch}
[domain]
name = "sample_domains:SlowArm"
[domain.options]
joints = {joints}
delay_s = {delay_s}
[archive]
measures = ["x", "y"]
bins = [12, 12]
noise = "{noise}"
[operators]
iso_line_dd = 1.0
mutation = 0.3
[evaluator]
backend = "serial"
""")
    return path


def _check_consistent(run_dir):
    """The figures of one read agree with each other and with the committed evaluations; returns the count."""
    run = read_run(run_dir)
    try:
        totals, store, archive = run.totals, run.store, run.archive
        count = store.count()
        assert totals["evaluations"] == count == sum(totals["statuses"].values()) == totals["failures"]["of"]
        operators = store.counters("operators")
        assert sum(int(c.get("evaluated", 0)) for c in operators.values()) == count
        assert sum(int(c.get("spent", 0)) for c in operators.values()) == count
        # the stored archive is exactly what the committed evaluations give (serial: told in id order)
        assert exact(archive) == exact(_replayed(store))
        history = store.history()
        assert not history or history[-1]["evaluations"] <= count
        assert all(e["id"] < count for e in archive)
        return count
    finally:
        run.store.close()


def test_read_commands_on_a_run_that_is_still_writing_give_consistent_figures(tmp_path):
    config = _write_config(tmp_path / "live.toml", evaluations=6000, delay_s=0.001)  # 6 s of writing at least
    run_dir = tmp_path / "run"
    proc = start_run(config, run_dir)
    seen = []
    try:
        end = time.monotonic() + 240
        while proc.poll() is None and time.monotonic() < end:
            if (run_dir / "run.sqlite").exists():
                try:
                    seen.append(_check_consistent(run_dir))
                except (RunStartingError, sqlite3.OperationalError) as exc:  # the run is creating its store
                    assert "still starting" in str(exc) or "holds no run store" in str(exc)
            time.sleep(0.05)
        assert proc.wait(timeout=60) == 0, proc.stderr.read().decode()
    finally:
        if proc.poll() is None:
            proc.kill()
    live = [n for n in seen if 0 < n < 6000]
    assert len(set(live)) >= 2, f"too few reads while the run wrote: {seen}"  # two moments of one run
    assert _check_consistent(run_dir) == 6000


def test_reading_a_run_whose_store_holds_no_config_yet_says_it_is_starting(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    RunStore(run_dir / "run.sqlite").close()  # what a new run has made before its config is stored
    with pytest.raises(RunStartingError, match="still starting"):
        read_run(run_dir)
    assert main(["status", str(run_dir)]) == 2
    assert "still starting" in capsys.readouterr().err


def test_the_stored_archive_equals_the_live_one_after_every_group(tmp_path):
    from qd.analysis.descriptors import resolve_measures
    from qd.archives import CVTArchive
    from qd.domains.arm import ArmDomain
    from qd.evaluators import SerialEvaluator
    from qd.listeners import SearchListener
    from qd.operators.classic import IsoLineDD
    from qd.rundir import archive_spec, read_archive
    from qd.search import Search

    class Compare(SearchListener):  # after the recorder: its commit of this batch is done
        checked = 0

        def on_results(self, search, events):
            with RunStore(search.store.path, readonly=True) as reader:
                assert exact(read_archive(reader, archive_from_spec(archive_spec(search.archive)))) == \
                    exact(search.archive)
            self.checked += 1

    domain = ArmDomain(joints=8)
    archive = CVTArchive(cells=60, ranges=domain.default_ranges, measure_names=["x", "y"], seed=1,
                         qd_score_offset=domain.qd_score_offset)
    compare = Compare()
    with RunStore(tmp_path / "run.sqlite") as store:
        store.set_meta(ARCHIVE_META, archive_spec(archive))
        search = Search(domain, archive, SerialEvaluator(domain), operators={"iso": (IsoLineDD(domain.space), 1.0)},
                        measures=resolve_measures(["x", "y"], domain), budget=1500, store=store, init_random=20,
                        commit_s=0.0, listeners=[compare])
        with search:
            search.run()
        assert search.batch > 1  # cheap evaluations: the batched path ran
    assert compare.checked > 10


class MemoryMarks(SearchListener):
    """The memory tracemalloc holds (and its peak) once past 20,000 evaluations and at the end.

    Named in a run config's ``[run] listeners`` (``test_scale_store:MemoryMarks``): the run is the
    one a user starts. The marks are the class's, since the run builds its own instance.
    """

    marks: list[tuple[int, int, int]] = []

    def on_results(self, search, events):
        if not MemoryMarks.marks and search.finished >= 20000:
            MemoryMarks.marks.append((search.finished, *tracemalloc.get_traced_memory()))

    def on_end(self, search):
        MemoryMarks.marks.append((search.finished, *tracemalloc.get_traced_memory()))


@pytest.mark.slow
def test_a_long_cheap_run_grows_the_driver_by_bytes_per_evaluation_and_its_peak_with_it(tmp_path):
    """What scripts/bench_scale.py measures at a million evaluations, on a smaller run."""
    from qd.config import resolve_config

    config = resolve_config({"run": {"name": "cheap", "evaluations": 60000, "progress": False, "plot": False,
                                     "listeners": [f"{__name__}:MemoryMarks"]},
                             "domain": {"name": "arm", "options": {"joints": 10}},
                             "archive": {"type": "cvt", "cells": 2000, "measures": ["x", "y"]},
                             "operators": {"iso_line_dd": 1.0}, "evaluator": {"backend": "serial"}})
    MemoryMarks.marks.clear()
    tracemalloc.start()
    try:
        run = run_search(config, tmp_path / "run", progress=False)
    finally:
        tracemalloc.stop()
    assert len(run.store.keys()) == 60000
    run.store.close()
    (n0, held0, _), (n1, held1, peak) = MemoryMarks.marks
    per_evaluation = (held1 - held0) / (n1 - n0)
    assert per_evaluation < 120  # the recent dedup keys' set at most (the driver kept ~4 KB before)
    assert peak - held0 < 120 * n1  # no transient copy of the history


# -- dedup keys ------------------------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=300), st.lists(st.integers(-(2**63), 2**63 - 1),
                                                                          max_size=50))
def test_a_keyset_is_a_set_of_64_bit_keys(added, probes):
    import qd.keyset

    old = qd.keyset._MERGE_AT
    qd.keyset._MERGE_AT = 16  # merge often: both halves of the structure are exercised
    try:
        keys = KeySet(added[: len(added) // 2])
        for k in added[len(added) // 2:]:
            keys.add(k)
        expected = set(added)
        assert len(keys) == len(expected) and set(keys) == expected
        # keys that share an added key's low bits pass the bitmap: the binary search must answer
        twins = [k ^ (1 << 40) for k in added]
        assert [k in keys for k in probes + added + twins] == [k in expected for k in probes + added + twins]
        assert keys.contains_many(np.array(probes + added, dtype=np.int64)).tolist() == \
            [k in expected for k in probes + added]
        assert keys.array().tolist() == sorted(expected)
        assert 8 * len(expected) < keys.nbytes <= 8 * len(expected) + max(8192, 4 * len(expected))
        checked = KeySet()  # the scheduler's way: look, then add what was missing without a second lookup
        for k in added:
            if k not in checked:
                checked.add_unseen(k)
        assert checked.array().tolist() == sorted(expected) and [k in checked for k in probes] == \
            [k in expected for k in probes]
    finally:
        qd.keyset._MERGE_AT = old


def test_a_keyset_answers_the_same_after_its_bitmap_grows():
    rng = np.random.default_rng(0)
    first, more = rng.integers(-(2**63), 2**63 - 1, 5_000), rng.integers(-(2**63), 2**63 - 1, 60_000)
    keys = KeySet(first)
    small = keys.nbytes - first.nbytes
    keys.update(more)  # the bitmap is resized: every key's bit moves
    for k in rng.integers(-(2**63), 2**63 - 1, 1_000).tolist():
        keys.add_unseen(k)
        more = np.append(more, k)
    assert keys.nbytes - 8 * len(keys) > small
    every = np.concatenate([first, more]).tolist()
    assert all(k in keys for k in every)
    twins = (np.concatenate([first, more]) ^ np.int64(1 << 40)).tolist()  # same low bits, not added
    assert not any(k in keys for k in twins)


def test_a_key_is_the_first_8_bytes_of_the_hash_signed():
    assert key_of("0" * 64) == 0
    assert key_of("7fffffffffffffff" + "0" * 48) == 2**63 - 1
    assert key_of("8000000000000000" + "0" * 48) == -(2**63)
    assert key_of("ffffffffffffffff" + "0" * 48) == -1
    assert not math.isnan(key_of("a" * 64))


def test_a_group_that_fails_to_commit_is_written_whole_by_the_next(tmp_path):
    # Ctrl-C (or a full disk) during a group commit rolls it back; what it held (rows, counters,
    # archive cells) goes with the next commit, so the store still agrees with itself.
    from qd.listeners import StoreRecorder

    config = load_config(_write_config(tmp_path / "c.toml", evaluations=400, delay_s=0.0),
                         {"domain": {"name": "arm", "options": {"joints": 6}}})
    fail = {"left": 3}
    add = RunStore.add_evaluations

    def flaky(self, records):
        add(self, records)
        if fail["left"] and records:
            fail["left"] -= 1
            raise OSError("disk full")

    commit, start = StoreRecorder.commit, StoreRecorder.on_start

    def retrying(self, search):
        try:
            commit(self, search)
        except OSError:
            pass  # the next batch commits again

    def every_batch(self, search):
        start(self, search)
        self.commit_s = 0.0  # one commit per batch: several fail, and the next ones carry what they held

    RunStore.add_evaluations, StoreRecorder.commit, StoreRecorder.on_start = flaky, retrying, every_batch
    try:
        run_search(config, tmp_path / "run", progress=False).store.close()
    finally:
        RunStore.add_evaluations, StoreRecorder.commit, StoreRecorder.on_start = add, commit, start
    assert fail["left"] == 0
    assert _check_consistent(tmp_path / "run") == 400


_summaries = st.sampled_from([{}, {"spans": 0, "examples": 1, "llm_calls": 0, "cost_usd": 0, "unpriced_models": []},
                              {"spans": 2, "llm_calls": 2, "tokens_in": 30, "tokens_out": 7, "cost_usd": 0.25,
                               "estimated_calls": 1, "unpriced_models": ["m"]}])
_metrics = st.sampled_from([{}, {"eval_s": 0.1}, {"eval_s": 0.1, "untraced_llm_calls": 1, "untraced_tokens": 9},
                            {"examples": 3, "failed_examples": 1, "example_errors": [{"error": "bad"}]},
                            {"examples": 2, "failed_examples": 0}])
_rows = st.lists(st.builds(
    lambda i, status, summary, metrics, x, y: type("Row", (), dict(
        id=i, status=status, error="" if status == "ok" else "it broke", trace_summary=summary, metrics=metrics,
        measures={k: v for k, v in (("x", x), ("y", y)) if v is not None})),
    st.integers(0, 99), st.sampled_from(["ok", "ok", "ok", "error", "invalid", "timeout"]), _summaries, _metrics,
    st.one_of(st.none(), st.floats(-10, 10), st.just(math.nan), st.just(math.inf)),
    st.one_of(st.none(), st.floats(-10, 10), st.just(-math.inf))), max_size=12)


@settings(max_examples=200, deadline=None)
@given(st.lists(_rows, max_size=4))
def test_totals_of_batches_are_those_of_one_evaluation_at_a_time(batches):
    """RunTotals.add_rows (a batch, measures counted with numpy) leaves exactly what add() row by row leaves,
    to the JSON text the store keeps."""
    batched, single = RunTotals(["x", "y"], [-4, -5], [4, 5]), RunTotals(["x", "y"], [-4, -5], [4, 5])
    for batch in batches:
        batched.add_rows(batch)
        for r in batch:
            single.add(r.id, r.status, r.error, r.metrics, r.trace_summary, r.measures)
        assert json.dumps(batched.as_dict()) == json.dumps(single.as_dict())
