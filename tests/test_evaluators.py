"""Evaluators: serial and Ray (tasks and actors) record every failure type and agree on results."""
from __future__ import annotations

import json
import os
import re
import threading
import time

import numpy as np
import pytest

from qd.domain import Domain
from qd.evaluators import Evaluator, SerialEvaluator, make_evaluator
from qd.result import EvalResult
from qd.space import Categorical, Float, Space
from qd.testing.evaluators import drain

ACTIONS = ["ok", "sleep", "raise", "exit", "sys_exit", "hang", "unpicklable"]


class ToyDomain(Domain):
    """Deterministic fitness from ``x``; ``action`` makes an evaluation misbehave on purpose."""

    name = "toy"
    space = Space({"x": Float(0.0, 1.0), "action": Categorical(ACTIONS), "delay": Float(0.0, 60.0)})
    default_measures = ("x",)

    def evaluate(self, config: dict) -> EvalResult:
        action, x = config["action"], config["x"]
        if action == "sleep":
            time.sleep(config["delay"])
        elif action == "raise":
            raise RuntimeError(f"bad x {x:.3f}")
        elif action == "exit":
            os._exit(1)
        elif action == "sys_exit":
            raise SystemExit(3)
        elif action == "hang":
            time.sleep(config["delay"])  # blocks: only a force-cancel or the actor's deadline ends it
        elif action == "unpicklable":
            return EvalResult(fitness=x, metrics={"lock": threading.Lock()})
        return EvalResult(fitness=-(x - 0.3) ** 2, measures={"x": x, "y": x * x},
                          feedback=f"x={x:.4f}", metrics={"action": action})


def cfg(x: float = 0.5, action: str = "ok", delay: float = 0.0) -> dict:
    return {"x": x, "action": action, "delay": delay}


def comparable(result: EvalResult) -> tuple:
    """The parts of a result that must not depend on where it ran."""
    return (result.status, repr(result.fitness), result.measures, result.feedback, result.error, result.trace,
            result.metrics.get("action"))


# -- make_evaluator and argument checks ----------------------------------------------------------

def test_make_evaluator_rejects_unknown_backend_and_options():
    with pytest.raises(ValueError, match="unknown evaluator backend 'dask'"):
        make_evaluator("dask", ToyDomain())
    with pytest.raises(ValueError, match=r"does not take option\(s\) \['workers'\]"):
        make_evaluator("serial", ToyDomain(), workers=2)
    with pytest.raises(ValueError, match="timeout_s"):
        make_evaluator("serial", ToyDomain(), timeout_s=0)
    assert isinstance(make_evaluator("serial", ToyDomain(), timeout_s=5), SerialEvaluator)


def test_ray_evaluator_argument_errors(ray_session):
    from qd.evaluators import RayEvaluator

    with pytest.raises(ValueError, match="mode must be 'task' or 'actor'"):
        RayEvaluator(ToyDomain(), mode="thread")
    with pytest.raises(ValueError, match="workers must be a positive integer"):
        RayEvaluator(ToyDomain(), workers=0)
    with pytest.raises(ValueError, match="actor_concurrency"):
        RayEvaluator(ToyDomain(), mode="actor", actor_concurrency=0)


def test_ray_evaluator_warns_when_workers_leave_cluster_cpus_unused(ray_session, caplog):
    from qd.evaluators import RayEvaluator

    with caplog.at_level("WARNING", logger="qd.evaluators.ray_eval"):
        RayEvaluator(ToyDomain(), workers=2).close()  # the session runtime has 2 CPUs: all used
        assert not caplog.records
        ev = RayEvaluator(ToyDomain(), workers=1)
        ev.close()
    assert ev.slots == 1
    assert "workers = 1 leaves 1 of the cluster's 2 CPUs unused" in caplog.text


# -- serial -------------------------------------------------------------------------------------

def test_serial_evaluates_in_submission_order_and_records_errors():
    ev = SerialEvaluator(ToyDomain())
    assert isinstance(ev, Evaluator) and ev.slots == 1
    for key, config in enumerate([cfg(0.1), cfg(0.2, "raise"), cfg(0.3), cfg(0.4, "sys_exit")]):
        ev.submit(key, config)
    with pytest.raises(ValueError, match="already pending"):
        ev.submit(0, cfg())
    assert ev.pending() == 4
    got = ev.collect(10.0)
    assert [key for key, _ in got] == [0, 1, 2, 3] and ev.pending() == 0
    assert got[0][1].status == "ok" and got[0][1].fitness == pytest.approx(-0.04)
    assert got[1][1].status == "error" and "bad x 0.200" in got[1][1].error
    assert got[2][1].fitness == 0.0
    assert got[3][1].status == "error" and got[3][1].error == "SystemExit: 3"
    assert ev.collect(0.1) == []


def test_serial_collect_returns_after_its_timeout_with_the_rest_still_queued():
    ev = SerialEvaluator(ToyDomain())
    for key in range(3):
        ev.submit(key, cfg(action="sleep", delay=0.05))
    first = ev.collect(0.0)  # at least one, then stop: the timeout has passed
    assert [key for key, _ in first] == [0] and ev.pending() == 2
    assert sorted(drain(ev)) == [1, 2]


def test_serial_timeout_abandons_a_hung_evaluation_and_goes_on():
    ev = SerialEvaluator(ToyDomain(), timeout_s=0.3)
    ev.submit(0, cfg(action="hang", delay=3.0))
    ev.submit(1, cfg(0.3))
    got = dict(ev.collect(10.0))
    assert got[0].status == "timeout" and "timeout_s=0.3" in got[0].error
    assert got[0].metrics["abandoned_threads"] >= 1
    assert got[1].status == "ok" and got[1].fitness == 0.0
    ev.close()
    with pytest.raises(RuntimeError, match="closed"):
        ev.submit(2, cfg())


# -- Ray tasks ----------------------------------------------------------------------------------

def test_ray_task_mode_records_each_failure_and_finishes_the_rest(ray_session):
    from qd.evaluators import RayEvaluator

    configs = {
        0: cfg(0.1), 1: cfg(0.2, "raise"), 2: cfg(0.3, "exit"), 3: cfg(0.4, "hang", delay=60.0),
        4: cfg(0.5, "unpicklable"), 5: cfg(0.6, "sleep", delay=0.2), 6: cfg(0.7), 7: cfg(0.8), 8: cfg(0.9),
        9: cfg(0.1, "sys_exit"),
    }
    ev = RayEvaluator(ToyDomain(), timeout_s=2.0)
    try:
        assert isinstance(ev, Evaluator) and ev.slots == 2  # the session runtime's CPUs
        for key, config in configs.items():
            ev.submit(key, config)
        assert ev.pending() == len(configs)
        results = drain(ev)
    finally:
        ev.close()
    assert sorted(results) == sorted(configs)
    assert results[1].status == "error" and "RuntimeError: bad x 0.200" in results[1].error
    assert results[2].status == "crash" and "worker process died" in results[2].error
    assert results[3].status == "timeout" and "timeout_s=2" in results[3].error
    assert results[4].status == "error" and "pickle" in results[4].error.lower()  # a RayTaskError
    assert results[9].status == "error" and results[9].error == "SystemExit: 3"  # as in the serial evaluator
    for key in (0, 5, 6, 7, 8):
        x = configs[key]["x"]
        assert results[key].status == "ok" and results[key].fitness == pytest.approx(-(x - 0.3) ** 2)
        assert results[key].measures == {"x": x, "y": x * x}
    assert ray_session.is_initialized()  # the shared runtime outlives the evaluator


def test_ray_queued_evaluations_are_not_timed_out_for_waiting(ray_session):
    """Twelve 0.6 s evaluations on 2 slots take 3.6 s. The deadline (1.4 s, plus as much start-up
    allowance) applies to each one's run, not its wait: counted from submission, the last four
    would be timed out."""
    from qd.evaluators import RayEvaluator

    ev = RayEvaluator(ToyDomain(), timeout_s=1.4)
    try:
        # Warm up: a fresh worker process (an earlier test killed some) imports qd and unpickles
        # the domain inside its first evaluation's deadline.
        for key in range(2):
            ev.submit(100 + key, cfg(0.5))
        assert all(r.status == "ok" for r in drain(ev).values())
        for key in range(12):
            ev.submit(key, cfg(0.05 * key, "sleep", delay=0.6))
        results = drain(ev)
    finally:
        ev.close()
    assert [results[key].status for key in range(12)] == ["ok"] * 12


def test_ray_close_cancels_in_flight_work(ray_session):
    from qd.evaluators import RayEvaluator

    ev = RayEvaluator(ToyDomain(), timeout_s=None)
    for key in range(4):
        ev.submit(key, cfg(action="hang", delay=60.0))
    assert ev.collect(0.2) == [] and ev.pending() == 4
    ev.close()
    assert ev.pending() == 0
    with pytest.raises(RuntimeError, match="closed"):
        ev.submit(9, cfg())
    # The force-cancelled workers are gone: a new evaluator gets both CPUs straight away.
    ev2 = RayEvaluator(ToyDomain(), timeout_s=30.0)
    try:
        ev2.submit(0, cfg(0.3))
        ev2.submit(1, cfg(0.4))
        results = drain(ev2, limit_s=30.0)
    finally:
        ev2.close()
    assert results[0].fitness == 0.0 and results[1].status == "ok"


@pytest.mark.parametrize("mode", ["task", "actor"])
def test_serial_and_ray_give_the_same_results(ray_session, mode):
    from qd.evaluators import RayEvaluator

    domain = ToyDomain()
    rng = np.random.default_rng(7)
    configs = [cfg(float(x), action) for x, action in zip(rng.random(12), ["ok", "raise", "sys_exit"] * 4)]
    serial = SerialEvaluator(domain)
    ray_ev = RayEvaluator(domain, mode=mode, actor_concurrency=4, timeout_s=30.0)
    try:
        for key, config in enumerate(configs):
            serial.submit(key, config)
            ray_ev.submit(key, config)
        want, got = drain(serial), drain(ray_ev)
    finally:
        ray_ev.close()
    assert sorted(got) == list(range(len(configs)))
    for key in want:
        assert comparable(got[key]) == comparable(want[key]), key


class EmbeddedModelProbe(Domain):
    """Reports the endpoint its embedded-model client resolves to (without calling the model)."""

    name = "embedded-probe"
    space = Space({"x": Float(0.0, 1.0)})

    def __init__(self):
        from qd.llm import LLMClient

        self.client = LLMClient()  # no base_url: the embedded model

    def evaluate(self, config: dict) -> EvalResult:
        return EvalResult(fitness=0.0, metrics={"base_url": self.client.resolved_base_url(), "pid": os.getpid()})


def test_local_ray_workers_share_the_drivers_embedded_model(ray_session):
    """Shipping the domain starts the model in the driver; workers call it instead of loading their own."""
    from qd.evaluators import RayEvaluator
    from qd.llm.local import ensure_local_server, stop_local_server

    try:
        ev = RayEvaluator(EmbeddedModelProbe(), timeout_s=60.0)
        try:
            for key in range(4):
                ev.submit(key, {"x": key / 4})
            results = drain(ev)
        finally:
            ev.close()
        assert {r.status for r in results.values()} == {"ok"}
        assert {r.metrics["base_url"] for r in results.values()} == {ensure_local_server()}
        assert all(r.metrics["pid"] != os.getpid() for r in results.values())  # they ran in workers
    finally:
        stop_local_server()


# -- whole searches through the Ray evaluator -----------------------------------------------------

class FlakyDomain(Domain):
    """Two floats; small ``x`` makes an evaluation kill its process, hang, or raise."""

    name = "flaky"
    space = Space({"x": Float(0.0, 1.0), "y": Float(0.0, 1.0)})
    default_measures = ("x", "y")
    default_ranges = ((0.0, 1.0), (0.0, 1.0))

    @staticmethod
    def action(config: dict) -> str:
        x = config["x"]
        return "exit" if x < 0.04 else "hang" if x < 0.08 else "raise" if x < 0.2 else "ok"

    def evaluate(self, config: dict) -> EvalResult:
        action = self.action(config)
        if action == "exit":
            os._exit(1)
        if action == "hang":
            time.sleep(120.0)
        if action == "raise":
            raise ValueError(f"boom at x={config['x']:.3f}")
        x, y = config["x"], config["y"]
        return EvalResult(fitness=-(x - 0.6) ** 2 - (y - 0.5) ** 2, measures={"x": x, "y": y})


def _run_search(domain, evaluator, *, budget, init_random, seed, store=None, **kwargs):
    from qd.analysis.descriptors import resolve_measures
    from qd.archives import GridArchive
    from qd.operators.classic import Mutation
    from qd.search import Search

    archive = GridArchive(dims=[10, 10], ranges=domain.default_ranges, measure_names=["x", "y"])
    search = Search(domain, archive, evaluator, operators={"mutation": (Mutation(domain.space), 1.0)},
                    measures=resolve_measures(["x", "y"], domain), budget=budget, store=store,
                    init_random=init_random, seed=seed, **kwargs)
    try:
        search.run()
    finally:
        search.close()
    return search, archive


@pytest.mark.parametrize("mode", ["task", "actor"])
def test_search_on_ray_records_raise_exit_and_hang_and_completes_its_budget(ray_session, tmp_path, mode):
    """A whole Search through RayEvaluator: every failure is a stored status, never a stopped search."""
    from qd.evaluators import RayEvaluator
    from qd.store import RunStore

    domain = FlakyDomain()
    evaluator = RayEvaluator(domain, mode=mode, timeout_s=2.0, num_actors=1, actor_concurrency=2)
    with RunStore(tmp_path / "run.sqlite") as store:
        # The first init_random configurations are the seed's random samples, whatever the timing:
        # with seed 0 they hold one os._exit, one hang and two raises.
        search, archive = _run_search(domain, evaluator, budget=50, init_random=30, seed=0, store=store)
        rows = list(store.evaluations())
    assert ray_session.is_initialized()
    assert search.finished == 50 and len(rows) == 50 and {r.id for r in rows} == set(range(50))
    expected = {"ok": "ok", "raise": "error", "exit": "crash", "hang": "timeout"}
    actions = {r.id: FlakyDomain.action(r.config) for r in rows}
    assert {actions[i] for i in range(30)} == set(expected)
    for row in rows:
        action = actions[row.id]
        if mode == "actor" and row.status == "crash":
            continue  # os._exit takes the whole actor down: the calls it was running crash with it
        assert row.status == expected[action], (row.id, action, row.status, row.error)
        if action == "raise":
            assert row.error.startswith("ValueError: boom at x=")
        elif action == "hang":
            assert "timeout_s=2" in row.error
        elif action == "exit" and mode == "task":
            assert "worker process died" in row.error
    ok = sum(r.status == "ok" for r in rows)
    assert ok >= 40 and archive.stats.num_elites > 0
    assert all(FlakyDomain.action(config) == "ok" for config in archive.data()["solution"])


@pytest.mark.parametrize("mode", ["task", "actor"])
def test_serial_and_ray_searches_give_the_same_archive_in_ordered_mode(ray_session, mode):
    from qd.domains.arm import ArmDomain
    from qd.evaluators import RayEvaluator

    def snapshot(archive):
        data = archive.data()
        order = np.argsort(data["index"])
        return (data["index"][order].tolist(), data["objective"][order].tolist(),
                [json.dumps(data["solution"][i], sort_keys=True) for i in order])

    domain = ArmDomain(joints=6)
    kwargs = dict(budget=250, init_random=40, seed=5, window=4, ordered=True)
    _, serial_archive = _run_search(domain, SerialEvaluator(domain), **kwargs)
    ray_ev = RayEvaluator(domain, mode=mode, num_actors=1, actor_concurrency=2, timeout_s=60.0)
    _, ray_archive = _run_search(domain, ray_ev, **kwargs)
    assert snapshot(ray_archive) == snapshot(serial_archive)


# -- Ray actors ---------------------------------------------------------------------------------

def test_ray_actor_mode_overlaps_io_and_records_failures(ray_session):
    from qd.evaluators import RayEvaluator

    ev = RayEvaluator(ToyDomain(), mode="actor", num_actors=1, actor_concurrency=16, timeout_s=1.5)
    try:
        assert ev.slots == 16
        ev.submit(100, cfg(0.2, "raise"))
        ev.submit(101, cfg(0.3, "hang", delay=30.0))
        for key in range(12):  # 12 x 0.4 s of "I/O" at concurrency 16: all overlap
            ev.submit(key, cfg(0.05 * key, "sleep", delay=0.4))
        results = drain(ev)
        assert results[100].status == "error" and "bad x 0.200" in results[100].error
        assert results[101].status == "timeout" and results[101].metrics["lingering_threads"] >= 1
        assert all(results[key].status == "ok" for key in range(12))

        # A domain that kills its process kills the actor: in-flight calls there crash, the actor
        # restarts, and later evaluations run normally.
        ev.submit(200, cfg(0.5, "exit"))
        crashed = drain(ev)
        assert crashed[200].status == "crash"
        for key in range(300, 304):
            ev.submit(key, cfg(0.3))
        after = drain(ev)
        assert [after[key].status for key in range(300, 304)] == ["ok"] * 4
    finally:
        ev.close()


def test_calls_lost_with_a_crashed_actor_are_sent_once_more_and_only_the_culprit_is_a_crash(ray_session):
    from qd.evaluators import RayEvaluator

    ev = RayEvaluator(ToyDomain(), mode="actor", num_actors=1, actor_concurrency=4, timeout_s=30.0)
    try:
        for key in range(3):  # in flight on the actor when it dies
            ev.submit(key, cfg(0.1 * key, "sleep", delay=1.0))
        ev.submit(3, cfg(0.5, "exit"))
        for key in range(4, 7):  # queued behind them
            ev.submit(key, cfg(0.1 * key))
        results = drain(ev)
        assert results[3].status == "crash" and "crashed its actor again" in results[3].error
        assert [results[key].status for key in (0, 1, 2, 4, 5, 6)] == ["ok"] * 6
    finally:
        ev.close()


class GilDomain(ToyDomain):
    """``action == "hang"`` holds the GIL for ever (a regex that backtracks without end): the whole actor freezes."""

    def evaluate(self, config: dict) -> EvalResult:
        if config["action"] == "hang":
            re.match(r"(a+)+$", "a" * 64 + "b")
        return super().evaluate(config)


def test_an_actor_frozen_by_code_that_holds_the_gil_is_restarted_and_later_evaluations_run(ray_session):
    from qd.evaluators import RayEvaluator

    ev = RayEvaluator(GilDomain(), mode="actor", num_actors=1, actor_concurrency=4, timeout_s=1.0)
    try:
        ev.submit(0, cfg(0.5, "hang"))
        frozen = drain(ev)
        assert frozen[0].status == "timeout" and "actor did not answer" in frozen[0].error
        for key in range(1, 5):
            ev.submit(key, cfg(0.1 * key))
        after = drain(ev)
        assert [after[key].status for key in range(1, 5)] == ["ok"] * 4  # before the fix: timeouts for ever
    finally:
        ev.close()


# -- failure mapping (real Ray exception types) -------------------------------------------------

def test_ray_exceptions_map_to_statuses():
    from ray import exceptions as rex

    from qd.evaluators.ray_eval import _failure

    oom = _failure(rex.OutOfMemoryError("Task was killed due to the node running low on memory."))
    assert oom.status == "crash" and oom.error.startswith("out of memory: Task was killed")
    assert _failure(rex.WorkerCrashedError()).status == "crash"
    assert _failure(rex.NodeDiedError("node gone")).status == "crash"
    assert _failure(rex.TaskCancelledError()).status == "crash"  # ours are recorded as timeouts earlier
    task_error = rex.RayTaskError("evaluate", "Traceback ...", ValueError("no good")).as_instanceof_cause()
    mapped = _failure(task_error)
    assert mapped.status == "error" and mapped.error == "ValueError: no good"
    assert _failure(KeyError("x")).status == "error"


# -- the driver's model of running slots (deadline start estimates) -----------------------------

from hypothesis import example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=200, deadline=None)
@given(capacity=st.integers(1, 4), ops=st.lists(st.tuples(st.booleans(), st.integers(0, 50)), max_size=60))
def test_lane_model_starts_jobs_in_order_within_capacity(capacity, ops):
    """Jobs start FIFO, never before submission, never more than ``capacity`` at once."""
    from qd.evaluators.ray_eval import _Job, _Lane

    lane, jobs, now = _Lane(capacity), [], 0.0
    for submit, pick in ops:
        now += 1.0
        if submit or not jobs:
            job = _Job([(len(jobs), {})], ref=None, lane=0)
            job.key = len(jobs)
            job.submitted = now
            jobs.append(job)
            lane.admit(job, now)
        else:
            live = [j for j in jobs if not getattr(j, "done", False)]
            if not live:
                continue
            job = live[pick % len(live)]  # jobs may finish in any order, even while deemed queued
            job.done = True
            lane.release(job, now)
        live = [j for j in jobs if not getattr(j, "done", False)]
        started = [j for j in live if j.started is not None]
        assert lane.running == len(started) <= capacity
        assert len(started) == min(capacity, len(live))  # a free slot is never left idle
        assert all(j.started >= j.submitted for j in started)
        queued = [j.key for j in live if j.started is None]
        assert queued == [j.key for j in lane.waiting]  # FIFO: the queue keeps submission order
        if queued and started:
            assert max(j.key for j in started) < min(queued)  # nothing overtakes a queued job


def test_an_unreachable_ray_address_fails_at_once_naming_the_key():
    import socket

    from qd.evaluators.ray_eval import _check_reachable

    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        open_port = listening.getsockname()[1]
        _check_reachable(f"127.0.0.1:{open_port}", "evaluator.ray_address")  # a listener: left to Ray
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now
    with pytest.raises(ConnectionError, match=rf"evaluator.ray_address = '127.0.0.1:{port}': no Ray head answers "
                                              rf"at 127.0.0.1:{port} .*ray start --head --port {port}"):
        _check_reachable(f"127.0.0.1:{port}", "evaluator.ray_address")
    _check_reachable("auto", "RAY_ADDRESS (environment)")  # no port: Ray resolves it


# -- batches: several configurations per Ray call ----------------------------------------------

class MarkerDomain(ToyDomain):
    """ToyDomain that drops a ``<x>`` marker file in ``marker_dir`` when an evaluation starts, and
    reports the process and thread it ran in and how many evaluations that thread had started."""

    def __init__(self, marker_dir: str):
        self.marker_dir = marker_dir

    def evaluate(self, config: dict) -> EvalResult:
        thread = threading.get_ident()
        _STARTED[thread] = _STARTED.get(thread, 0) + 1
        with open(os.path.join(self.marker_dir, f"{config['x']!r}"), "a") as marker:
            marker.write("started\n")
        result = super().evaluate(config)
        result.metrics.update(runner=(os.getpid(), thread), seq=_STARTED[thread])
        return result


_STARTED: dict[int, int] = {}  # per thread of a worker process: evaluations MarkerDomain started there


def starts(marker_dir: str) -> dict[float, int]:
    """How many times each configuration (by ``x``) was started."""
    counts = {}
    for name in os.listdir(marker_dir):
        with open(os.path.join(marker_dir, name)) as marker:
            counts[float(name)] = marker.read().count("started")
    return counts


@pytest.mark.parametrize("mode", ["task", "actor"])
def test_a_batch_runs_its_configurations_one_after_another_in_one_call(ray_session, tmp_path, mode):
    from qd.evaluators import RayEvaluator

    ev = RayEvaluator(MarkerDomain(str(tmp_path)), mode=mode, num_actors=1, batch_size=4, timeout_s=30.0)
    try:
        assert ev.batch_size == 4
        for key in range(8):
            ev.submit(key, cfg(key / 10))
        assert ev.pending() == 8
        results = drain(ev)
    finally:
        ev.close()
    assert [results[key].status for key in range(8)] == ["ok"] * 8
    for first in (0, 4):  # keys 0-3 ran in one call, 4-7 in another: one thread, one after another
        batch = [results[first + i].metrics for i in range(4)]
        assert len({m["runner"] for m in batch}) == 1
        assert [m["seq"] - batch[0]["seq"] for m in batch] == [0, 1, 2, 3]
    assert set(starts(str(tmp_path)).values()) == {1}


def test_a_worker_starts_nothing_past_its_call_budget_so_slow_batches_are_not_run_twice(ray_session, tmp_path):
    """Eight 0.5 s evaluations in one batch would take 4 s, past the 2 s deadline (plus 2 s allowance):
    the whole call would be cancelled and every configuration run again. The worker stops starting
    them at its budget (0.4 s here) and the driver sends the rest again, so each runs once."""
    from qd.evaluators import RayEvaluator

    ev = RayEvaluator(MarkerDomain(str(tmp_path)), batch_size=8, timeout_s=2.0)
    try:
        for key in range(8):
            ev.submit(key, cfg(key / 10, "sleep", delay=0.5))
        results = drain(ev)
    finally:
        ev.close()
    assert [results[key].status for key in range(8)] == ["ok"] * 8
    assert starts(str(tmp_path)) == {key / 10: 1 for key in range(8)}


ACTION_ODDS = ["ok"] * 6 + ["sleep", "raise", "sys_exit", "unpicklable"]


@st.composite
def batch_workloads(draw):
    """Configurations under unique keys, at most one os._exit and one hang among them."""
    actions = draw(st.lists(st.sampled_from(ACTION_ODDS), min_size=1, max_size=18))
    for bad in ("exit", "hang"):
        if draw(st.booleans()):
            actions.insert(draw(st.integers(0, len(actions))), bad)
    keys = draw(st.lists(st.integers(0, 10**6), min_size=len(actions), max_size=len(actions), unique=True))
    configs = [cfg(round(0.05 + 0.9 * i / len(actions), 4), action, delay=60.0 if action == "hang" else 0.05)
               for i, action in enumerate(actions)]
    return dict(zip(keys, configs)), draw(st.integers(2, 6)), draw(st.integers(1, len(actions)))


@pytest.mark.parametrize("mode", ["task", "actor"])
@settings(max_examples=3, deadline=None)
@given(workload=batch_workloads())
@example(workload=({7: cfg(0.1), 3: cfg(0.2, "exit"), 11: cfg(0.3, "raise"), 5: cfg(0.4, "hang", delay=60.0),
                    2: cfg(0.5, "sleep", delay=0.05), 9: cfg(0.6, "unpicklable"), 4: cfg(0.7, "sys_exit")}, 3, 7))
def test_batches_keep_each_configurations_key_result_and_status(ray_session, mode, workload):
    """Whatever mix of errors, crashes and hangs a batch holds, each configuration comes back once,
    under its own key, with the result it gets when evaluated alone (a crash or a hang only for
    the configuration that does it). The deadline leaves a fresh worker process (after a crash or
    a cancel) time to start on a loaded machine."""
    from qd.evaluators import RayEvaluator

    configs, batch_size, chunk = workload
    ev = RayEvaluator(ToyDomain(), mode=mode, num_actors=1, actor_concurrency=4, batch_size=batch_size,
                      timeout_s=5.0)
    try:
        results: dict[int, EvalResult] = {}
        keys = list(configs)
        for start in range(0, len(keys), chunk):  # submissions interleaved with collects
            for key in keys[start:start + chunk]:
                ev.submit(key, configs[key])
            results.update(ev.collect(0.0))
        later = drain(ev, limit_s=120.0)
        assert not set(later) & set(results), "a key was collected twice"
        results.update(later)
        assert ev.pending() == 0
    finally:
        ev.close()
    assert sorted(results) == sorted(configs)
    alone = SerialEvaluator(ToyDomain())
    for key, config in configs.items():
        action, got = config["action"], results[key]
        if action == "exit":
            assert got.status == "crash", (action, got)
        elif action == "hang":
            assert got.status == "timeout" and "timeout_s=5" in got.error, (action, got)
        elif action == "unpicklable":
            assert got.status == "error" and "pickle" in got.error.lower(), (action, got)
        else:
            alone.submit(key, config)
            assert comparable(got) == comparable(alone.collect(10.0)[0][1]), (action, got)


def test_an_actor_frozen_inside_a_batch_is_restarted_and_only_the_culprit_times_out(ray_session):
    from qd.evaluators import RayEvaluator

    ev = RayEvaluator(GilDomain(), mode="actor", num_actors=1, actor_concurrency=2, batch_size=3, timeout_s=1.0)
    try:
        actions = ["ok", "hang", "ok", "raise", "ok", "ok"]
        for key, action in enumerate(actions):
            ev.submit(key, cfg(0.1 * (key + 1), action))
        results = drain(ev, limit_s=120.0)
    finally:
        ev.close()
    assert results[1].status == "timeout" and "actor did not answer" in results[1].error
    assert results[3].status == "error" and "bad x 0.400" in results[3].error
    assert [results[key].status for key in (0, 2, 4, 5)] == ["ok"] * 4


def test_the_automatic_batch_follows_the_measured_evaluation_time(ray_session):
    """No-op evaluations on 2 slots: a driver call per evaluation would cap throughput, so batches
    grow to the cap; once evaluations take 30 ms (2 slots need 67 calls/s, under the driver's
    250), they shrink back to one configuration per call."""
    from qd.evaluators import RayEvaluator
    from qd.evaluators.batching import BatchSizer

    ev = RayEvaluator(ToyDomain(), timeout_s=60.0)
    try:
        assert ev.batch_size == 1 and ev.eval_s is None  # nothing measured yet
        key = rounds = 0
        while ev.batch_size < BatchSizer(60.0, None).max_batch:
            rounds += 1
            assert rounds <= 10, f"batch only {ev.batch_size} with eval_s {ev.eval_s}"
            for _ in range(2 * ev.slots * ev.batch_size):
                ev.submit(key, cfg(0.5))
                key += 1
            assert {r.status for r in drain(ev).values()} == {"ok"}
        assert ev.eval_s < 0.002
        rounds = 0
        while ev.batch_size > 1:
            rounds += 1
            assert rounds <= 10, f"batch still {ev.batch_size} with eval_s {ev.eval_s}"
            for _ in range(2 * ev.slots):
                ev.submit(key, cfg(0.5, "sleep", delay=0.03))
                key += 1
            assert {r.status for r in drain(ev).values()} == {"ok"}
        assert 0.01 < ev.eval_s < 0.1  # moving toward the 0.03 s evaluations (an average still holding fast ones)
    finally:
        ev.close()


def test_a_search_keeps_twice_the_batched_slots_in_flight_up_to_a_tenth_of_its_budget_unless_ordered(ray_session):
    from qd.analysis.descriptors import resolve_measures
    from qd.archives import GridArchive
    from qd.evaluators import RayEvaluator
    from qd.operators.classic import Mutation
    from qd.search import Search

    domain = FlakyDomain()
    ev = RayEvaluator(domain, batch_size=50, timeout_s=30.0)
    try:
        def search(budget: int, **options) -> Search:
            archive = GridArchive(dims=[10, 10], ranges=domain.default_ranges, measure_names=["x", "y"])
            return Search(domain, archive, ev, operators={"mutation": (Mutation(domain.space), 1.0)},
                          measures=resolve_measures(["x", "y"], domain), budget=budget, **options)

        assert search(100_000).window == 2 * 2 * 50
        assert search(1_000).window == 100
        assert search(40).window == 4  # never below 2 x slots
        assert search(100_000, ordered=True).window == 4  # reproducible: no window that follows timing
        assert search(100_000, window=7).window == 7
    finally:
        ev.close()


@settings(max_examples=300, deadline=None)
@given(slots=st.integers(1, 5000), eval_s=st.floats(1e-6, 100.0), timeout_s=st.one_of(st.none(), st.floats(0.01, 1e4)),
       slower=st.floats(1.0, 1e3), more=st.integers(0, 5000))
def test_batch_size_rule(slots, eval_s, timeout_s, slower, more):
    """The batch keeps the driver's calls under calls_per_s where its limits allow, never makes a
    call longer than longest_call_s nor a window wider than max_in_flight, and shrinks as
    evaluations get slower (never grows) and grows with the slots (never shrinks) until a limit."""
    from qd.evaluators.batching import BatchSizer

    sizer = BatchSizer(timeout_s)
    assert sizer.size(slots) == 1  # unmeasured: one configuration per call
    sizer.observe(eval_s * 7, 7)
    assert sizer.eval_s == pytest.approx(eval_s)
    size = sizer.size(slots)
    assert 1 <= size <= sizer.max_batch
    if size > 1:
        assert size * eval_s <= sizer.longest_call_s * (1 + 1e-9)
        assert 2 * slots * size <= sizer.max_in_flight
    limit = max(1, min(sizer.max_batch, int(sizer.longest_call_s / eval_s), sizer.max_in_flight // (2 * slots)))
    assert size == limit or slots / (size * eval_s) <= sizer.calls_per_s * (1 + 1e-9)  # below its limits: enough
    assert size == 1 or slots / ((size - 1) * eval_s) > sizer.calls_per_s  # and no larger than that needs
    wider = sizer.size(slots + more)
    assert wider >= size or wider == max(1, sizer.max_in_flight // (2 * (slots + more)))
    slow = BatchSizer(timeout_s)
    slow.observe(eval_s * slower, 1)
    assert slow.size(slots) <= size


def test_batch_size_moving_average_and_fixed_sizes():
    from qd.evaluators.batching import BatchSizer

    sizer = BatchSizer(60.0)
    sizer.observe(1.0, 0)  # nothing measured: ignored
    sizer.observe(float("nan"), 3)
    assert sizer.eval_s is None
    sizer.observe(0.004, 4)  # 1 ms each
    sizer.observe(0.005, 1)  # one of 5 ms: the average moves a quarter of the way
    assert sizer.eval_s == pytest.approx(0.002)
    sizer.observe(0.004, 2)  # two of 2 ms ... no move; then two of 6 ms: 1 - 0.75 ** 2 of the way
    sizer.observe(0.012, 2)
    assert sizer.eval_s == pytest.approx(0.002 + (1 - 0.75 ** 2) * 0.004)
    assert BatchSizer(60.0, fixed=7).size(1000) == 7
    assert BatchSizer(0.5).longest_call_s == pytest.approx(0.05) and BatchSizer(None).call_budget_s == 20.0
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="batch_size must be a positive integer or None"):
            BatchSizer(60.0, fixed=bad)
