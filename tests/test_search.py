"""The steady-state loop end to end on the arm domain with real archives, store and evaluators."""
import gc
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from run_process import kill_once_committed, start_run

from qd.analysis.descriptors import resolve_measures
from qd.archives import AddStatus, GridArchive
from qd.domain import Domain
from qd.domains.arm import ArmDomain
from qd.evaluators import SerialEvaluator
from qd.listeners import SearchListener
from qd.operators.classic import IsoLineDD, Mutation
from qd.result import EvalResult
from qd.search import Search, SearchOptions
from qd.space import Int, Layout, Space
from qd.store import RunStore

ROOT = Path(__file__).resolve().parents[1]


def _search(domain, budget, seed=0, store=None, evaluator=None, init_random=50, **kwargs):
    archive = GridArchive(dims=[20, 20], ranges=domain.default_ranges, measure_names=["x", "y"],
                          qd_score_offset=domain.qd_score_offset)
    ops = {"iso_line_dd": (IsoLineDD(domain.space), 1.0), "mutation": (Mutation(domain.space), 0.2)}
    search = Search(domain, archive, evaluator or SerialEvaluator(domain), operators=ops,
                    measures=resolve_measures(["x", "y"], domain), budget=budget, store=store,
                    init_random=init_random, seed=seed, **kwargs)
    search.run()
    search.close()
    return search, archive


def _snapshot(archive):
    data = archive.data()
    order = np.argsort(data["index"])
    return (data["index"][order].tolist(), data["objective"][order].tolist(),
            [json.dumps(data["solution"][i], sort_keys=True) for i in order])


def test_search_fills_the_archive_and_beats_random():
    domain = ArmDomain(joints=8)
    for seed in (0, 1, 2):
        search, archive = _search(domain, budget=600, seed=seed)
        assert search.finished == 600 and search.stats["random"].evaluated == 50
        assert search.stats["iso_line_dd"].gains > 0
        # the baseline: the same budget spent on random samples only (init_random = budget)
        baseline, random_archive = _search(domain, budget=600, seed=seed, init_random=600)
        assert baseline.stats["random"].evaluated == 600
        assert archive.stats.num_elites > 1.2 * random_archive.stats.num_elites
        assert archive.stats.qd_score > 1.2 * random_archive.stats.qd_score


def test_same_seed_gives_identical_archive_and_other_seed_differs():
    domain = ArmDomain(joints=6)
    a = _snapshot(_search(domain, budget=300, seed=3)[1])
    b = _snapshot(_search(domain, budget=300, seed=3)[1])
    c = _snapshot(_search(domain, budget=300, seed=4)[1])
    assert a == b
    assert a != c


def test_store_holds_every_evaluation_once_with_lineage(tmp_path):
    domain = ArmDomain(joints=5)
    with RunStore(tmp_path / "run.sqlite") as store:
        search, archive = _search(domain, budget=200, store=store)
        rows = list(store.evaluations())
        assert len(rows) == 200 == len({r.hash for r in rows}) == len({r.id for r in rows})
        ids = {r.id for r in rows}
        assert all(set(r.parent_ids) <= ids for r in rows)
        assert all(r.parent_ids for r in rows if r.operator == "iso_line_dd")
        added = sum(r.archive_status > 0 for r in rows)
        assert added >= archive.stats.num_elites
        best = max(r.fitness for r in rows)
        assert math.isclose(best, archive.stats.obj_max)
        assert store.history()[-1]["evaluations"] == 200


def test_failures_are_recorded_and_never_stop_the_search(tmp_path):
    sys.path.insert(0, str(ROOT / "tests"))
    from sample_domains import FaultyArm

    domain = FaultyArm()
    with RunStore(tmp_path / "run.sqlite") as store:
        search, archive = _search(domain, budget=300, store=store)
        counts = store.status_counts()
        assert sum(counts.values()) == 300
        assert counts.get("error", 0) > 0 and counts.get("invalid", 0) > 0
        err = next(store.evaluations(status="error"))
        assert "boom" in err.error and err.archive_status == 0
    assert all(s[0] <= 2.5 for s in (e["angles"] for e in archive.data()["solution"]))


class JitterArm(ArmDomain):
    """The arm with a sleep of 0-30 ms chosen by the configuration: on Ray, results land out of order."""

    def evaluate(self, config):
        time.sleep(int(abs(config["angles"][0]) * 1e6) % 31 / 1000)
        return super().evaluate(config)


def test_ordered_search_is_independent_of_the_window_filling_order(ray_session):
    from qd.evaluators import RayEvaluator

    domain = JitterArm(joints=6)
    serial = _snapshot(_search(domain, budget=120, seed=1, window=4, ordered=True)[1])
    # On Ray with 2 workers and jittered delays, results land in another order and other batches
    # than they were submitted in; the ordered search must not notice.
    ray_ordered = _snapshot(_search(domain, budget=120, seed=1, window=4, ordered=True,
                                    evaluator=RayEvaluator(domain, workers=2, timeout_s=30))[1])
    assert ray_ordered == serial
    # ... while the unordered search does: the landing order really differs (the test has power).
    ray_unordered = _snapshot(_search(domain, budget=120, seed=1, window=4, ordered=False,
                                      evaluator=RayEvaluator(domain, workers=2, timeout_s=30))[1])
    assert ray_unordered != serial


def _run_cli(*args, **kw):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}
    return subprocess.run([sys.executable, "-m", "qd.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, **kw)


@pytest.mark.parametrize("batch", [0, 16])  # 0: 4 ms evaluations on Ray are told one by one; 16: in batches
def test_sigkill_then_resume_loses_and_repeats_nothing(tmp_path, batch):
    config = tmp_path / "slow.toml"
    config.write_text(f"""
[run]
name = "kill-test"
evaluations = 1500
init_random = 50
plot = false
batch = {batch}
[domain]
name = "sample_domains:SlowArm"
[domain.options]
joints = 6
delay_s = 0.004
[archive]
measures = ["x", "y"]
bins = [20, 20]
[operators]
iso_line_dd = 1.0
""")
    run_dir = tmp_path / "run"
    db = run_dir / "run.sqlite"
    kill_once_committed(start_run(config, run_dir), db, 300, timeout_s=60)
    with RunStore(db) as store:
        before = {r.id: r.hash for r in store.evaluations()}
    assert 300 <= len(before) < 1500

    done = _run_cli("run", "--resume", str(run_dir), "--no-progress", timeout=120)
    assert done.returncode == 0, done.stderr
    with RunStore(db) as store:
        rows = list(store.evaluations())
    assert len(rows) == 1500
    first = [r for r in rows if r.operator != "resample"]  # noise = "auto" probes repeat a few on purpose
    assert len({r.hash for r in first}) == len(first) >= 1500 - 8
    assert all(before[r.id] == r.hash for r in rows if r.id in before)
    status = json.loads(_run_cli("status", str(run_dir), "--json").stdout)
    assert status["evaluations"] == 1500 == status["budget"]


class _GrowingEvaluator(SerialEvaluator):
    """Serial evaluation whose slots grow from 1 to 4 after 100 results, as when Ray nodes join."""

    def __init__(self, domain):
        super().__init__(domain)
        self.finished = 0
        self.queued: list[tuple[int, int]] = []  # (results so far, evaluations queued) after each submit

    def submit(self, key, config):
        super().submit(key, config)
        self.queued.append((self.finished, self.pending()))

    def collect(self, timeout):
        out = super().collect(timeout)
        self.finished += len(out)
        if self.finished >= 100:
            self.slots = 4
        return out


def test_window_follows_the_evaluators_slots_unless_fixed():
    domain = ArmDomain(joints=4)
    grown, _ = _search(domain, 300, evaluator=_GrowingEvaluator(domain), batch=1)
    ev = grown.evaluator
    assert max(q for done, q in ev.queued if done < 100) == 2 and max(q for done, q in ev.queued if done >= 100) == 8
    assert grown.window == 8
    fixed, _ = _search(domain, 300, evaluator=_GrowingEvaluator(domain), window=3, batch=1)
    assert max(q for _, q in fixed.evaluator.queued) == 3



class _Recorder(SearchListener):
    """A listener that keeps what the driver reports."""

    def __init__(self):
        self.calls: list[str] = []
        self.events: list = []

    def on_start(self, search):
        self.calls.append("start")

    def on_result(self, search, event):
        self.calls.append("result")
        self.events.append(event)
        assert isinstance(event.status, AddStatus) and search.finished >= len(self.events)  # told in batches

    def on_end(self, search):
        self.calls.append("end")


def test_options_group_the_driver_settings_and_keywords_override_them():
    domain = ArmDomain(joints=4)
    archive = GridArchive(dims=[10, 10], ranges=domain.default_ranges, measure_names=["x", "y"])
    ops = {"mutation": (Mutation(domain.space), 1.0)}
    options = SearchOptions(init_random=7, window=3, seed=5)
    search = Search(domain, archive, SerialEvaluator(domain), operators=ops,
                    measures=resolve_measures(["x", "y"], domain), budget=40, options=options, init_random=9)
    assert search.options.init_random == 9 and search.window == 3 and search.scheduler.options.seed == 5
    assert options.init_random == 7  # the caller's options are not changed
    with search:
        search.run()
    assert search.stats["random"].evaluated == 9
    with pytest.raises(TypeError, match="no_such_option"):
        Search(domain, archive, SerialEvaluator(domain), operators=ops, measures=[], budget=1, no_such_option=1)


def test_listeners_hear_every_result_between_start_and_end():
    recorder = _Recorder()
    _search(ArmDomain(joints=4), budget=60, listeners=[recorder])
    assert recorder.calls == ["start"] + ["result"] * 60 + ["end"]
    assert sorted(e.id for e in recorder.events) == list(range(60))
    assert [e.id for e in recorder.events] == sorted(e.id for e in recorder.events)  # serial: in submission order


def test_a_search_seeded_with_the_default_configuration_evaluates_it_first():
    domain = ArmDomain(joints=5)
    recorder = _Recorder()
    search, _ = _search(domain, budget=80, seeds=[domain.default_config()], init_random=0, listeners=[recorder])
    first = recorder.events[0].candidate
    assert first.operator == "seed" and first.config == {"angles": [0.0] * 5}
    assert recorder.events[0].status == AddStatus.NEW
    assert search.stats["seed"].evaluated == 1 and "random" not in search.stats


def test_a_fresh_store_does_not_change_what_a_seed_gives(tmp_path):
    """Resuming re-seeds the stream from the stored history; an empty store has none, so the run is the same."""
    domain = ArmDomain(joints=5)
    without = _snapshot(_search(domain, budget=120, seed=6)[1])
    with RunStore(tmp_path / "run.sqlite") as store:
        stored = _snapshot(_search(domain, budget=120, seed=6, store=store)[1])
    assert stored == without


def _json_identity_search(domain, budget, store, seed=0, **kwargs):
    """A search that identifies configurations by their canonical JSON, as qd did before flat numeric
    spaces were identified by their bytes (its store keeps JSON and no layout, like a store of then)."""
    archive = GridArchive(dims=[20, 20], ranges=domain.default_ranges, measure_names=["x", "y"],
                          qd_score_offset=domain.qd_score_offset)
    ops = {"iso_line_dd": (IsoLineDD(domain.space), 1.0), "mutation": (Mutation(domain.space), 0.2)}
    kwargs.setdefault("init_random", 50)
    search = Search(domain, archive, SerialEvaluator(domain), operators=ops,
                    measures=resolve_measures(["x", "y"], domain), budget=budget, store=store, seed=seed, **kwargs)
    search.scheduler.use_layout(None)
    search.run()
    search.close()
    return search, archive


def _stored(store):
    """Every stored evaluation's fields but its time (and the dedup key, which the identity sets)."""
    rows = []
    for r in store.evaluations():
        metrics = {k: v for k, v in r.metrics.items() if k != "eval_s"}
        rows.append((r.id, r.hash, json.dumps(r.config), r.status, r.fitness, r.measures, r.error, r.feedback,
                     r.operator, r.parent_ids, r.trace_summary, metrics, r.archive_status))
    return rows


def test_identifying_configurations_by_bytes_gives_the_run_the_json_identity_gave(tmp_path):
    """Same seed, same evaluations, archive, stored rows and totals: only the dedup keys and the stored form differ."""
    domain = ArmDomain(joints=6)
    with RunStore(tmp_path / "json.sqlite") as old, RunStore(tmp_path / "bytes.sqlite") as new:
        _, archive_json = _json_identity_search(domain, 400, old, batch=16)
        search, archive_bytes = _search(domain, 400, store=new, batch=16)
        assert search.scheduler.layout is not None and old.config_layout() is None
        assert new.config_layout() == search.scheduler.layout
        assert _snapshot(archive_bytes) == _snapshot(archive_json)
        assert archive_bytes.stats.qd_score == archive_json.stats.qd_score
        assert _stored(new) == _stored(old)
        assert new.get_meta("totals") == old.get_meta("totals")
        assert new.elites(configs=True)[0]["config"] == old.elites(configs=True)[0]["config"]
        assert len(set(new.keys().tolist())) == 400 and set(new.keys().tolist()).isdisjoint(old.keys().tolist())
        # the stored form: 8 bytes a value and a marker, against the compressed canonical JSON
        sizes = [n for (n,) in new._db.execute("SELECT length(config) FROM evaluations")]
        assert set(sizes) == {1 + 8 * 6}


class IntPairs(Domain):
    """36 configurations of two Ints: a short run repeats them often, and exhausts them."""

    name = "int-pairs"
    space = Space({"a": Int(0, 5), "b": Int(0, 5)})
    default_measures = ("x", "y")
    default_ranges = ((0.0, 5.0), (0.0, 5.0))

    def evaluate(self, config: dict) -> EvalResult:
        a, b = config["a"], config["b"]
        return EvalResult(fitness=-float((a - 2) ** 2 + (b - 3) ** 2), measures={"x": float(a), "y": float(b)})


@pytest.mark.parametrize("first_identity", ["json", "bytes"])
def test_a_resumed_store_keeps_the_identity_it_was_written_with(tmp_path, first_identity):
    """A store of before (JSON configurations, no layout) resumes deduplicating against its evaluations and
    stays JSON; one written with bytes stays bytes. Either way the space is evaluated once, all of it."""
    domain = IntPairs()
    with RunStore(tmp_path / "run.sqlite") as store:
        if first_identity == "json":
            _json_identity_search(domain, 20, store, init_random=10)
        else:
            _search(domain, 20, store=store, init_random=10)
        stored = [v for (v,) in store._db.execute("SELECT config FROM evaluations")]
        search, _ = _search(domain, 100, store=store, init_random=10)
        assert search.stopped and "36 configurations" in search.stopped
        assert (search.scheduler.layout is None) == (first_identity == "json") == (store.config_layout() is None)
        rows = list(store.evaluations())
        assert len(rows) == 36 == len({r.hash for r in rows}) == len({json.dumps(r.config) for r in rows})
        assert [v for (v,) in store._db.execute("SELECT config FROM evaluations ORDER BY id LIMIT 20")] == stored
        packed = {v[:1] == b"\x00" for (v,) in store._db.execute("SELECT config FROM evaluations")}
        assert packed == {first_identity == "bytes"}


def test_a_store_written_with_bytes_resumes_with_them_and_refuses_another_space(tmp_path):
    with RunStore(tmp_path / "run.sqlite") as store:
        _search(ArmDomain(joints=4), 150, store=store)
        search, _ = _search(ArmDomain(joints=4), 300, store=store)
        assert search.scheduler.layout == store.config_layout() == Layout.of(ArmDomain(joints=4).space)
        rows = list(store.evaluations())
        assert len(rows) == 300 == len({r.hash for r in rows}) == len(set(store.keys().tolist()))
        with pytest.raises(ValueError, match="another space"):
            _search(ArmDomain(joints=5), 400, store=store)


def test_a_serial_run_tells_whole_batches_so_timing_never_changes_it():
    # Batches of 24 evaluations of 50 ms take longer than one collect() (1 s): the serial evaluator
    # returns part of a batch, and telling that part at once made the run depend on the machine's speed.
    from sample_domains import SlowArm

    def run(ordered: bool) -> list:
        domain = SlowArm(joints=4, delay_s=0.05)
        archive = GridArchive(dims=[6, 6], ranges=domain.default_ranges, measure_names=["x", "y"])
        with Search(domain, archive, SerialEvaluator(domain), operators={"mutation": (Mutation(domain.space), 1.0)},
                    measures=resolve_measures(["x", "y"], domain), budget=120, init_random=10, seed=5,
                    noise="none", batch=24, ordered=ordered) as search:
            search.run()
        return sorted((int(e["index"]), float(e["objective"])) for e in archive)

    assert run(ordered=False) == run(ordered=True)


class _CollectorWatch(SearchListener):
    """Notes the collector's thresholds and frozen count while the search runs."""

    def __init__(self):
        self.during: list[tuple] = []

    def on_results(self, search, events):
        self.during.append((gc.get_threshold(), gc.get_freeze_count() > 0))


def test_search_relaxes_the_collector_while_it_runs_and_restores_it():
    domain = ArmDomain(joints=4)
    before = gc.get_threshold()
    watch = _CollectorWatch()
    _search(domain, 120, listeners=[watch])
    assert watch.during and all(t[0] >= 20_000 and t[1:] == before[1:] and frozen for t, frozen in watch.during)
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_search_leaves_collection_off_when_the_process_turned_it_off():
    domain = ArmDomain(joints=4)
    before = gc.get_threshold()
    gc.set_threshold(0)
    try:
        watch = _CollectorWatch()
        _search(domain, 60, listeners=[watch])
        assert watch.during and all(t[0] == 0 for t, _ in watch.during)
        assert gc.get_threshold()[0] == 0
    finally:
        gc.set_threshold(*before)
