"""Ray evaluator: configurations run as Ray tasks, or as calls on async Ray actors.

Two modes, one driver-side bookkeeping:

``mode="task"`` (CPU-bound domains)
    Each call is a task with ``num_cpus=1`` and ``max_retries=0`` (in Ray 2.60
    any retry turns an out-of-memory kill into an endless retry loop). The domain is
    put in the object store once; each worker process deserializes it on first use
    and keeps it, so a domain's clients and caches live as long as the worker.

``mode="actor"`` (I/O-bound domains: LLM pipelines)
    ``num_actors`` async actors (``num_cpus=0``, ``max_concurrency=actor_concurrency``,
    spread over the nodes)
    each hold the domain (and so its HTTP clients). A call runs its evaluations one after
    another in a thread of its own, which the actor's event loop times out; one actor at
    concurrency 64 keeps 64 slow requests in flight where fractional-CPU tasks would
    need 64 worker processes.

Batches
-------
A call evaluates one configuration, or, when evaluations are short, several one after
another (:class:`~qd.evaluators.batching.BatchSizer` sizes the batch from the measured
evaluation time and the slots; ``batch_size`` fixes it). :meth:`RayEvaluator.submit`
queues a configuration and sends a call once a batch is full; :meth:`~RayEvaluator.collect`
sends a partial batch while fewer than two calls per slot are out (split over that room, so
a small window goes one configuration per call). The search keeps
``2 * slots * batch_size`` evaluations in flight. A worker starts no further evaluation of
a call past its budget (twice the expected length of a call); what it did not start is
sent again. Each evaluation's result keeps its own key, status and error, and a failure
that takes a whole call down is pinned on one configuration by sending the call's
configurations again one per call (below).

Deadlines
---------
Ray does not tell the driver when a task starts running, so the driver *estimates*
the start: it knows how many calls can run at once (a "lane" per actor, or one
lane for the cluster's CPUs in task mode) and runs its own FIFO model of the lanes
(Ray dispatches one driver's tasks of one shape in submission order). A call
is deemed started when it is submitted to a lane with a free slot, or when the
driver sees an earlier one finish and free its slot. As long as the lane capacity
is right, a queued call is never timed out for time spent waiting in the
queue. The estimate can be late (the driver notices a free slot at its next
:meth:`collect`), which only makes the deadline lenient; it is early by Ray's
dispatch latency and by the start-up of a fresh worker process (importing qd,
unpickling the domain: a second or two, more on a loaded machine), which follows
every crash and every force-cancel. Task mode therefore adds an allowance of
``min(10 s, timeout_s)`` to each deadline: an evaluation is timed out at least
``timeout_s`` after its real start (unless Ray took longer than the allowance to
start it) and at most ``timeout_s`` + allowance after it. The task-mode
capacity is re-read from ``ray.cluster_resources()`` every few seconds, so it follows
nodes joining and leaving; on a cluster shared with other jobs it is an
over-estimate and queued evaluations may be timed out early.

Past the deadline a task is cancelled with ``ray.cancel(ref, force=True)`` (a soft
cancel does not interrupt blocking calls; ``force`` kills the worker process). A
one-configuration task is recorded as ``"timeout"``; a batch's deadline is that of one
evaluation too (a batch is expected to last a small share of it, and its worker stops
starting evaluations well before it), so an overdue batch holds one evaluation that
overran, which one unknown: its configurations are sent again one per task, and the
culprit times out alone. Actor calls cannot be force-cancelled: the actor itself stops
waiting for an evaluation at its deadline (measured from the evaluation's real start)
and returns ``"timeout"`` for it (and, in a batch, leaves the rest to be sent again),
but the evaluation's thread keeps running until it returns on its own (Python cannot
stop a thread). Those lingering threads are counted in
``result.metrics["lingering_threads"]``; a domain that hangs for ever leaks one
thread per timeout in its actor. The driver also keeps a backstop deadline (estimated
start + timeout + grace) for an actor that stops answering (code holding the GIL):
it kills and restarts the actor.

Failures
--------
``WorkerCrashedError`` (the domain called ``os._exit``, segfaulted), a dead actor,
a dead node, and ``OutOfMemoryError`` come back as ``"crash"``; a task we cancelled
as ``"timeout"``; any other ``RayTaskError`` as ``"error"`` with the exception
message. A batch that fails as a whole (its worker crashed, its results could not be
pickled) is sent again one configuration per call, so that only the culprit is
recorded with the failure. An actor that crashes takes every call on it down, queued
ones included; those are sent once more, one call at a time among them, a batch that
crashes again split into single configurations. :meth:`RayEvaluator.collect` never
raises for a failed evaluation.
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import importlib
import logging
import os
import sys
import threading
import time
from typing import Any

import ray
from ray import exceptions as rex

from qd.domain import Domain
from qd.evaluation import evaluate_config
from qd.evaluators.batching import BatchSizer
from qd.evaluators.outcomes import cancelled, clip_error, crashed, failed, raised, timed_out
from qd.result import EvalResult

__all__ = ["RayEvaluator"]

log = logging.getLogger(__name__)

_CAPACITY_REFRESH_S = 5.0  # how often task mode re-reads the cluster's CPU count
_RESTART_TIMEOUT_S = 120.0
_GET_TIMEOUT_S = 30.0
_TASK_START_GRACE_S = 10.0  # task mode: deadline slack for worker start-up, at most timeout_s

# -- worker side ---------------------------------------------------------------------------------

_DOMAINS: dict[bytes, Domain] = {}  # per worker process: object id -> deserialized domain
_WARM: list[bool] = []  # per worker process: not empty once it has run an evaluation


def _domain_of(holder: list) -> Domain:
    """The domain behind ``holder[0]`` (an ObjectRef), deserialized once per worker process.

    The ref travels inside a list so Ray does not resolve (and deserialize) it on every call.
    """
    ref = holder[0]
    key = ref.binary()
    domain = _DOMAINS.get(key)
    if domain is None:
        if len(_DOMAINS) >= 4:  # a worker serving many short-lived evaluators
            _DOMAINS.clear()
        domain = _DOMAINS[key] = ray.get(ref)
    return domain


def _evaluate(domain: Domain, config: dict) -> EvalResult:
    try:
        return evaluate_config(domain, config)
    except SystemExit as exc:  # as in the serial evaluator; Ray would otherwise retire the worker
        return raised(exc)


def _run_task(holder: list, configs: list[dict], budget_s: float) -> tuple[list[EvalResult], float, int]:
    """Evaluate ``configs`` in order, starting none past ``budget_s``.

    Returns the results (a prefix of ``configs``), and the seconds the evaluations took and how
    many they are (without the first of a fresh worker process, which imports and connects).
    """
    domain = _domain_of(holder)
    start = measured = time.perf_counter()
    results = []
    for config in configs:
        results.append(_evaluate(domain, config))
        if not _WARM:  # a fresh process's first evaluation imports and connects: not its speed
            _WARM.append(True)
            measured = time.perf_counter()
        if time.perf_counter() - start >= budget_s:
            break
    return results, time.perf_counter() - measured, len(results) - (measured != start)


class _EvalActor:
    """Holds a domain and runs its evaluations concurrently, each call's in a thread of its own."""

    def __init__(self, domain: Domain):
        self.domain = domain
        self._lingering: list[threading.Thread] = []
        self._warm = False

    def ready(self) -> bool:
        return True

    async def evaluate(self, configs: list[dict], timeout_s: float | None,
                       budget_s: float) -> tuple[list[EvalResult], float, int]:
        """Evaluate ``configs`` in order, each within ``timeout_s``, starting none past ``budget_s``.

        Returns the results (a prefix of ``configs``: an evaluation that times out ends the call),
        and the seconds the evaluations that returned by themselves took and how many they are
        (without the actor's first, which imports and connects).
        """
        # A thread per call rather than asyncio.to_thread: the default executor holds
        # min(32, cpus + 4) threads, which would cap an actor's concurrency at 6 on a
        # 2-core node, and a hung evaluation would hold a pool thread for ever.
        loop = asyncio.get_running_loop()
        finished = loop.create_future()
        results: list[EvalResult] = []
        took = [0.0, 0]  # seconds and count of the evaluations measured
        running = [(0, time.perf_counter())]  # (index, start) of the evaluation in progress, replaced whole
        stop = threading.Event()  # set when the caller stopped waiting: record and start nothing more

        def end() -> None:
            if not finished.done():
                finished.set_result(None)

        def run() -> None:
            start = time.perf_counter()
            try:
                for index, config in enumerate(configs):
                    began = time.perf_counter()
                    running[0] = (index, began)
                    try:
                        result = evaluate_config(self.domain, config)
                    except BaseException as exc:  # evaluate_config catches Exception; this is SystemExit & co.
                        result = raised(exc)
                    if stop.is_set():
                        return
                    results.append(result)
                    if self._warm:  # the actor's first evaluation imports and connects: not its speed
                        took[1] += 1
                        took[0] += time.perf_counter() - began
                    self._warm = True
                    if time.perf_counter() - start >= budget_s:
                        return  # what was not started is sent again
            finally:
                try:
                    loop.call_soon_threadsafe(end)
                except RuntimeError:  # the loop closed while we ran (actor shutting down)
                    pass

        thread = threading.Thread(target=run, name="qd-actor-eval", daemon=True)
        thread.start()
        while True:
            # One wake-up per deadline, not per evaluation: at the deadline of the evaluation that
            # was running, either it is still the one running (a timeout) or the wait starts over.
            index, began = running[0]
            wait = None if timeout_s is None else max(0.0, began + timeout_s - time.perf_counter())
            try:
                await asyncio.wait_for(asyncio.shield(finished), wait)
                return results, took[0], took[1]
            except TimeoutError:
                if running[0] != (index, began) or len(results) > index:
                    continue
            stop.set()
            self._lingering = [t for t in self._lingering if t.is_alive()] + [thread]
            result = timed_out(timeout_s)
            result.metrics["lingering_threads"] = len(self._lingering)
            return [*results[:index], result], took[0], min(took[1], index)


def _can_import(module: str) -> bool:
    try:
        importlib.import_module(module)
        return True
    except Exception:
        return False


_REMOTE: dict[str, Any] = {}


def _remote(name: str) -> Any:
    """The Ray-decorated task / actor class (decorated once, on first use)."""
    if not _REMOTE:
        _REMOTE["task"] = ray.remote(max_retries=0)(_run_task)
        _REMOTE["actor"] = ray.remote(_EvalActor)
        _REMOTE["probe"] = ray.remote(num_cpus=0, max_retries=0)(_can_import)
    return _REMOTE[name]


_SHIPPED: set[str] = set()  # modules already checked in this driver process


def _ship_domain_code(domain: Domain) -> None:
    """Make sure workers can unpickle ``domain``: send its module's code along if they cannot import it.

    Classes pickle by reference (module + name), so a domain defined in a module that
    only the driver can import (a test file, a script's sibling module, a notebook
    helper) would fail on every worker. One probe task checks; if the import fails
    there, the module is pickled by value instead. Modules workers can import (an
    installed package, ``pip install -e .`` on every node, ``ray job submit
    --working-dir``) keep the cheaper by-reference pickling.
    """
    # The class's module, and modules the domain names as its code (a FunctionDomain's score function).
    for module in (type(domain).__module__, *getattr(domain, "source_modules", ())):
        if module == "__main__" or module in _SHIPPED or module not in sys.modules:
            continue  # __main__ is pickled by value already
        _SHIPPED.add(module)
        try:
            importable = ray.get(_remote("probe").remote(module), timeout=120)
        except Exception:
            importable = False
        if not importable:
            # By value from the top package down, so sibling modules it imports travel too.
            top = module.split(".")[0]
            log.info("workers cannot import %s; shipping the code of %s with the domain", module, top)
            ray.cloudpickle.register_pickle_by_value(sys.modules[top])


# -- driver side ---------------------------------------------------------------------------------

def _check_reachable(address: str, source: str, timeout_s: float = 10.0) -> None:
    """Raise ``ConnectionError`` naming ``source`` when a ``host:port`` Ray address does not answer.

    ``auto`` and addresses without a port are left to Ray.
    """
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ConnectionError(f"{source} = {address!r}: no Ray head answers at {host}:{port} ({exc}); start one "
                              f"there (ray start --head --port {port}) or leave the address empty for a local "
                              "runtime") from None


@dataclasses.dataclass(eq=False)
class _Job:
    """One Ray call in flight: the ``(key, config)`` pairs it evaluates, in order."""

    items: list[tuple[int, dict]]
    ref: Any
    lane: int
    started: float | None = None  # estimated start (time.monotonic), None while deemed queued
    retried: bool = False         # actor mode: sent once more after a crash (one such call at a time)


class _Lane:
    """Driver-side FIFO model of a set of slots (the cluster's CPUs, or one actor)."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.running = 0
        self.waiting: collections.deque[_Job] = collections.deque()

    def admit(self, job: _Job, now: float) -> None:
        self.waiting.append(job)
        self.promote(now)

    def release(self, job: _Job, now: float) -> None:
        if job.started is not None:
            self.running -= 1
        else:  # finished before the model thought it started: the model was pessimistic
            self.waiting.remove(job)
        self.promote(now)

    def promote(self, now: float) -> None:
        while self.waiting and self.running < self.capacity:
            self.waiting.popleft().started = now
            self.running += 1

    @property
    def load(self) -> int:
        return self.running + len(self.waiting)


def _failure(exc: BaseException) -> EvalResult:
    """Map a Ray exception for one evaluation to a failed EvalResult.

    Evaluations the driver cancels at their deadline are recorded as ``"timeout"``
    when cancelled (see ``_expire``) and never reach this function, so a
    ``TaskCancelledError`` here came from outside qd (``ray.cancel`` by hand, ``ray stop``).
    """
    name = type(exc).__name__
    if isinstance(exc, rex.TaskCancelledError):
        return cancelled(str(exc))
    if isinstance(exc, rex.OutOfMemoryError):
        return crashed(f"out of memory: {exc}")
    if isinstance(exc, rex.RayTaskError):
        cause = getattr(exc, "cause", None)
        if isinstance(cause, BaseException):
            return raised(cause)
        return failed(str(exc))
    if isinstance(exc, rex.WorkerCrashedError):
        return crashed("worker process died during the evaluation (os._exit, segfault, or killed)")
    if isinstance(exc, rex.RayError):  # dead actor or node, lost object, ...
        return crashed(f"{name}: {exc}")
    return raised(exc)


class RayEvaluator:
    """Evaluate configurations on Ray: a local runtime or a cluster.

    Parameters
    ----------
    domain : Domain
        The domain to evaluate; it must pickle (it is shipped to workers once).
    workers : int or None
        Task mode: evaluations run at once (``slots``); default the cluster's CPU
        count. In both modes, the CPU count of the local runtime this evaluator starts
        when Ray is not initialized (default: all cores). On a runtime it joins (a
        cluster, or a ``ray.init`` of the caller) ``workers`` does not resize anything:
        a value below the cluster's CPU count leaves CPUs unused, with a warning.
    timeout_s : float or None
        Per-evaluation deadline in seconds, from the (estimated) start of the
        evaluation; ``None`` waits for ever. See the module docstring.
    address : str or None
        ``None`` (or ``""``): ``RAY_ADDRESS`` if set, else a new local runtime.
        ``"auto"`` joins the cluster running on this machine; ``"host:port"`` a remote
        one. Ignored when Ray is already initialized in this process (it is reused).
    mode : {"task", "actor"}
        Ray tasks (CPU-bound domains) or async actors (I/O-bound domains).
    actor_concurrency : int
        Actor mode: evaluations one actor runs at once.
    num_actors : int or None
        Actor mode: number of actors (default: one per alive node, spread over nodes).
    num_cpus : float
        Task mode: CPUs reserved per evaluation task.
    batch_size : int or None
        Configurations per Ray call: ``None`` chooses it from the measured evaluation time
        and the slots (:class:`~qd.evaluators.batching.BatchSizer`; 1 for evaluations slower
        than a few milliseconds per slot); 1 sends every configuration in a call of its own.

    Attributes
    ----------
    slots : int
        Evaluations that run at once: ``workers``, else the cluster's CPUs now (tasks: it
        follows nodes that join or leave), or ``num_actors * actor_concurrency`` (actors).
    batch_size : int
        Configurations per call now; the search keeps ``2 * slots * batch_size`` in flight.
    """

    def __init__(self, domain: Domain, *, workers: int | None = None, timeout_s: float | None = 60.0,
                 address: str | None = None, mode: str = "task", actor_concurrency: int = 64,
                 num_actors: int | None = None, num_cpus: float = 1.0, batch_size: int | None = None):
        if mode not in ("task", "actor"):
            raise ValueError(f"mode must be 'task' or 'actor', got {mode!r}")
        for name, value in (("workers", workers), ("num_actors", num_actors)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
        if not isinstance(actor_concurrency, int) or actor_concurrency < 1:
            raise ValueError(f"actor_concurrency must be a positive integer, got {actor_concurrency!r}")
        if timeout_s is not None and not timeout_s > 0:
            raise ValueError(f"timeout_s must be a positive number of seconds or None, got {timeout_s!r}")
        if not num_cpus > 0:
            raise ValueError(f"num_cpus must be positive, got {num_cpus!r}")
        self._sizer = BatchSizer(timeout_s, fixed=batch_size)  # checks batch_size
        self.domain = domain
        self.mode = mode
        self.timeout_s = timeout_s
        self.num_cpus = float(num_cpus)
        self._owns_runtime = False
        self._closed = False
        self._jobs: dict[Any, _Job] = {}  # ObjectRef -> call in flight
        self._keys: set[int] = set()      # every key submitted and not yet collected
        self._buffer: list[tuple[int, dict]] = []  # submitted, not yet sent: the next batch
        # Actor mode: calls lost with a crashed actor, sent once more one at a time.
        self._again: collections.deque[list[tuple[int, dict]]] = collections.deque()
        self._connect(workers, address)
        try:
            _ship_domain_code(domain)
            self._domain_ref = ray.put(domain)
        except Exception as exc:
            self._shutdown_if_owned()
            raise ValueError(f"domain {type(domain).__name__} cannot be sent to Ray workers "
                             f"({type(exc).__name__}: {exc}); use the serial backend or make it picklable") from exc
        self._holder = [self._domain_ref]
        self._capacity_checked = time.monotonic()
        if mode == "task":
            self._task = _remote("task").options(num_cpus=self.num_cpus)
            self._actors: list[Any] = []
            self._lanes = [_Lane(self._cluster_capacity())]
            self._fixed_slots = workers
            # Start-up allowance: the estimate cannot see a fresh worker process (after a crash or
            # a force-cancel) import qd and unpickle the domain inside the deadline.
            self._grace_s = 0.0 if timeout_s is None else min(_TASK_START_GRACE_S, float(timeout_s))
            if not self._owns_runtime and self.slots < self._lanes[0].capacity:
                # e.g. `qd run --workers 8` joining a 64-CPU cluster (the default, 0, takes them all).
                log.warning("Ray evaluator: workers = %d leaves %d of the cluster's %d CPUs unused; set "
                            "evaluator.workers (qd run --workers) to use them all", self.slots,
                            self._lanes[0].capacity - self.slots, self._lanes[0].capacity)
        else:
            alive = sum(1 for node in ray.nodes() if node.get("Alive"))
            count = num_actors or max(1, alive)
            # SPREAD leaves actors that ask for no resource at all where it likes (two or three
            # of three on one node, measured); a byte of memory, which no task asks for, makes it
            # spread them, and takes no CPU from tasks.
            actor_cls = _remote("actor").options(
                num_cpus=0, memory=1, max_concurrency=actor_concurrency, max_restarts=-1, max_task_retries=0,
                scheduling_strategy="SPREAD")
            # The domain travels by value in the creation task (inlined when small): an
            # object-store argument would make Ray warn that restarts depend on it.
            self._actors = [actor_cls.remote(domain) for _ in range(count)]
            try:
                ray.get([actor.ready.remote() for actor in self._actors], timeout=300)
            except Exception as exc:
                self.close()
                raise RuntimeError(f"Ray evaluation actors did not start: {type(exc).__name__}: {exc}") from exc
            self._lanes = [_Lane(actor_concurrency) for _ in self._actors]
            self._fixed_slots = count * actor_concurrency
            # The actor enforces the deadline itself; the driver's backstop only catches a stuck actor.
            self._grace_s = 0.0 if timeout_s is None else max(5.0, 0.25 * timeout_s)
        self._batch = self._sizer.size(self.slots)

    @property
    def slots(self) -> int:
        """Evaluations that run at once (see the class docstring)."""
        return self._fixed_slots or self._lanes[0].capacity

    @property
    def batch_size(self) -> int:
        """Configurations per Ray call now (see :class:`~qd.evaluators.batching.BatchSizer`)."""
        return self._batch

    @property
    def eval_s(self) -> float | None:
        """Seconds per evaluation measured on the workers (moving average; ``None`` before the first)."""
        return self._sizer.eval_s

    # -- runtime -------------------------------------------------------------------------------
    def _connect(self, workers: int | None, address: str | None) -> None:
        if ray.is_initialized():
            return  # one runtime per process: reuse it (tests, notebooks, a caller's own ray.init)
        source = "evaluator.ray_address" if address else "RAY_ADDRESS (environment)"
        address = address or os.environ.get("RAY_ADDRESS") or None
        if address is None or address == "local":
            # "local" forces a fresh runtime even when a `ray start` cluster runs on this machine.
            ray.init(address="local", num_cpus=workers, include_dashboard=False)
        else:
            _check_reachable(address, source)  # ray.init retries an unreachable head for ever
            ray.init(address=address)
        self._owns_runtime = True

    def _shutdown_if_owned(self) -> None:
        if self._owns_runtime and ray.is_initialized():
            ray.shutdown()
        self._owns_runtime = False

    def _cluster_capacity(self) -> int:
        cpus = ray.cluster_resources().get("CPU", 0.0)
        return max(1, int(cpus // self.num_cpus))

    def _refresh_capacity(self, now: float) -> None:
        if self.mode != "task" or now - self._capacity_checked < _CAPACITY_REFRESH_S:
            return
        self._capacity_checked = now
        lane = self._lanes[0]
        lane.capacity = self._cluster_capacity()
        lane.promote(now)
        self._batch = self._sizer.size(self.slots)

    # -- protocol ------------------------------------------------------------------------------
    def submit(self, key: int, config: dict) -> None:
        """Queue ``config`` under ``key``; a call goes out once :attr:`batch_size` are queued."""
        if self._closed:
            raise RuntimeError("RayEvaluator is closed")
        if key in self._keys:
            raise ValueError(f"key {key!r} is already pending")
        self._keys.add(key)
        self._buffer.append((key, config))
        if len(self._buffer) >= self._batch:  # more than one batch when the batch size just shrank
            for start in range(0, len(self._buffer), self._batch):
                self._send(self._buffer[start:start + self._batch])
            self._buffer = []

    def _send(self, items: list[tuple[int, dict]], retried: bool = False) -> None:
        """Start one call evaluating ``items`` in order."""
        configs = [config for _, config in items]
        if self.mode == "task":
            lane = 0
            ref = self._task.remote(self._holder, configs, self._sizer.call_budget_s)
        else:
            lane = min(range(len(self._lanes)), key=lambda i: self._lanes[i].load)
            ref = self._actors[lane].evaluate.remote(configs, self.timeout_s, self._sizer.call_budget_s)
        job = _Job(items, ref, lane, retried=retried)
        self._jobs[ref] = job
        self._lanes[lane].admit(job, time.monotonic())

    def _send_buffer(self) -> None:
        """Send the partial batch queued by :meth:`submit` while fewer than two calls per slot are out.

        It is split into as many calls as that leaves room for, so a window too small to fill
        batches (a short run, ``ordered``) is sent one configuration per call, as unbatched.
        """
        room = 2 * sum(lane.capacity for lane in self._lanes) - len(self._jobs)
        if not self._buffer or room <= 0:
            return  # every slot has a call running and one queued: the batch may still fill up
        count = min(room, len(self._buffer))
        size = -(-len(self._buffer) // count)
        for start in range(0, len(self._buffer), size):
            self._send(self._buffer[start:start + size])
        self._buffer = []

    def _send_again(self) -> None:
        """Send the next call lost with a crashed actor, one at a time, so no two of them share an actor."""
        if self._again and not any(job.retried for job in self._jobs.values()):
            self._send(self._again.popleft(), retried=True)

    def collect(self, timeout: float) -> list[tuple[int, EvalResult]]:
        """Wait up to ``timeout`` seconds for evaluations; return those that finished or timed out."""
        self._send_again()
        self._send_buffer()
        if not self._jobs:
            return []
        now = time.monotonic()
        self._refresh_capacity(now)
        wait_s = max(0.0, min(timeout, self._next_deadline() - now))
        refs = list(self._jobs)
        ready, rest = ray.wait(refs, num_returns=1, timeout=wait_s)
        if ready and rest:
            more, _ = ray.wait(rest, num_returns=len(rest), timeout=0)
            ready += more
        done = self._finish(ready)
        done += self._expire(time.monotonic())
        self._send_again()
        self._send_buffer()
        return done

    def pending(self) -> int:
        """Evaluations submitted and not yet collected."""
        return len(self._keys)

    def close(self) -> None:
        """Cancel in-flight evaluations; shut Ray down if this evaluator started it."""
        if self._closed:
            return
        self._closed = True
        if ray.is_initialized():
            if self.mode == "task":
                for ref in self._jobs:
                    self._cancel(ref, force=True)
            for actor in self._actors:  # also ends the threads of hung evaluations
                try:
                    ray.kill(actor)
                except Exception:  # already dead
                    pass
        self._jobs.clear()
        self._again.clear()
        self._buffer = []
        self._keys.clear()
        self._actors = []
        self._holder = []
        self._domain_ref = None
        self._shutdown_if_owned()

    def __enter__(self) -> RayEvaluator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals -----------------------------------------------------------------------------
    def _deadline(self, job: _Job) -> float:
        if self.timeout_s is None or job.started is None:
            return float("inf")
        return job.started + self.timeout_s + self._grace_s

    def _next_deadline(self) -> float:
        if self.timeout_s is None:
            return float("inf")
        return min((self._deadline(job) for job in self._jobs.values()), default=float("inf"))

    def _pop(self, ref: Any, now: float) -> _Job:
        job = self._jobs.pop(ref)
        self._lanes[job.lane].release(job, now)
        return job

    def _result(self, key: int, result: EvalResult) -> tuple[int, EvalResult]:
        self._keys.discard(key)
        return key, result

    def _finish(self, refs: list) -> list[tuple[int, EvalResult]]:
        if not refs:
            return []
        # The refs are ready and fetched (ray.wait's fetch_local), so the timeout only guards
        # against an object lost between wait and get; that becomes a crash, not a hang.
        try:
            values = ray.get(refs, timeout=_GET_TIMEOUT_S)
        except Exception:  # at least one failed: resolve them one by one
            values = []
            for ref in refs:
                try:
                    values.append(ray.get(ref, timeout=_GET_TIMEOUT_S))
                except Exception as exc:
                    values.append(_failure(exc))
        now = time.monotonic()
        done: list[tuple[int, EvalResult]] = []
        crashed_lanes = set()
        for ref, value in zip(refs, values):
            job = self._pop(ref, now)
            if isinstance(value, EvalResult):  # the call failed as a whole
                if value.status == "crash" and self.mode == "actor":
                    crashed_lanes.add(job.lane)
                done += self._call_failed(job, value)
                continue
            results, seconds, measured = value
            self._sizer.observe(seconds, measured)
            for (key, _), result in zip(job.items, results):
                if not isinstance(result, EvalResult):  # cannot happen through evaluate_config; be safe
                    result = failed(f"evaluation returned {type(result).__name__}, not EvalResult")
                done.append(self._result(key, result))
            rest = job.items[len(results):]
            if rest:  # the worker passed its budget (or an actor's evaluation timed out) before these
                if job.retried:
                    self._again.appendleft(rest)
                else:
                    self._send(rest)
        self._batch = self._sizer.size(self.slots)
        for lane in crashed_lanes:
            self._await_restart(lane)
        return done

    def _call_failed(self, job: _Job, failure: EvalResult) -> list[tuple[int, EvalResult]]:
        """Results for a call that failed as a whole: its configurations' own, or sent again."""
        if failure.status == "crash" and self.mode == "actor":
            # One evaluation took its actor down, and with it every call there, queued ones
            # included: none can be told from the culprit, so each call is sent once more, alone
            # among those (_send_again), and a batch that crashes again one configuration per
            # call. The culprit crashes again; the others come back with their own results.
            if not job.retried:
                self._again.append(job.items)
                return []
            if len(job.items) > 1:
                self._again.extendleft([item] for item in reversed(job.items))
                return []
            failure.error += " (it crashed its actor again when sent once more)"
        elif len(job.items) > 1:
            # A batch whose worker crashed or whose results failed to pickle: which configuration
            # did it is unknown, so each is sent again alone and gets its own result.
            for item in job.items:
                self._send([item])
            return []
        return [self._result(job.items[0][0], failure)]

    def _await_restart(self, lane: int) -> None:
        """Block until a crashed actor is back, so that later submissions reach a live actor.

        Calls submitted while Ray restarts an actor fail as unavailable; on a busy machine the
        restart (a fresh process that imports qd and the domain) takes seconds.
        """
        end = time.monotonic() + _RESTART_TIMEOUT_S
        while True:
            try:
                ray.get(self._actors[lane].ready.remote(), timeout=max(0.1, end - time.monotonic()))
                return
            except rex.ActorUnavailableError as exc:  # Ray answers at once while the actor restarts
                if time.monotonic() >= end:
                    error = exc
                    break
                time.sleep(0.05)
            except Exception as exc:  # still down: later calls on it come back as crashes
                error = exc
                break
        log.warning("Ray evaluation actor %d did not come back after a crash: %s", lane, clip_error(str(error)))

    def _expire(self, now: float) -> list[tuple[int, EvalResult]]:
        overdue = [ref for ref, job in self._jobs.items() if now >= self._deadline(job)]
        if not overdue:
            return []
        # Some may have finished since the last wait: those keep their real result.
        landed, late = ray.wait(overdue, num_returns=len(overdue), timeout=0)
        done = self._finish(landed)
        frozen: set[int] = set()
        for ref in late:
            self._cancel(ref, force=self.mode == "task")
            job = self._pop(ref, now)
            if self.mode == "actor":
                frozen.add(job.lane)
            if len(job.items) > 1:
                # One of them overran (a batch lasts a small share of the deadline); which one is
                # unknown, so each is sent again alone: the culprit times out by itself. On an actor
                # it froze the whole process, so they go one at a time.
                for item in job.items:
                    if self.mode == "task":
                        self._send([item])
                    else:
                        self._again.append([item])
                continue
            result = timed_out(self.timeout_s, "actor did not answer" if self.mode == "actor" else "")
            done.append(self._result(job.items[0][0], result))
        for lane in frozen:
            # Its own timeout could not fire: code holding the GIL (a regex that backtracks for
            # ever, a C extension) froze the whole actor. Restart it, or every later call on it
            # would time out too.
            log.warning("Ray evaluation actor %d did not answer past timeout_s; restarting it", lane)
            try:
                ray.kill(self._actors[lane], no_restart=False)
            except Exception:  # already gone: Ray restarts it anyway
                pass
            self._await_restart(lane)
        return done

    def _cancel(self, ref: Any, force: bool) -> None:
        try:
            ray.cancel(ref, force=force)
        except Exception:  # already finished, or its worker is gone
            pass
