"""The steady-state MAP-Elites driver: evaluator window, LLM threads, listeners.

:class:`Search` keeps ``2 × evaluator.slots`` evaluations in flight, tells each result to the
:class:`~qd.scheduler.Scheduler` as it lands, and asks it for the next candidate meanwhile. LLM
operators generate in a thread pool so that waiting on a model never leaves evaluation workers
idle: an LLM operator drawn while every LLM thread is busy yields its turn to a classic operator
(unless ``wait_for_llm``), so both the evaluators and the LLM threads stay busy. What the run
reports (the run store, the archive history, the progress bar) are listeners
(:mod:`qd.listeners`). See docs/architecture.md for the data flow of one evaluation.
"""
from __future__ import annotations

import collections
import concurrent.futures as cf
import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from qd.analysis.measuring import measure_result
from qd.domain import Domain
from qd.evaluation import with_draw
from qd.failure_watch import FailureWatch
from qd.listeners import Evaluated, ProgressBar, SearchListener, StoreRecorder
from qd.measure_range import RangeWatch
from qd.noise import make_handler
from qd.result import EvalResult
from qd.scheduler import (
    FALLBACK,
    RANDOM,
    SEED,
    Candidate,
    GenerationJob,
    OperatorStats,
    Scheduler,
    SchedulerOptions,
)

if TYPE_CHECKING:
    from qd.noise import NoiseHandler
    from qd.operators.base import Operator
    from qd.store import RunStore

__all__ = ["Search", "SearchOptions", "OperatorStats", "replay", "SEED", "RANDOM", "FALLBACK"]


@dataclass
class SearchOptions(SchedulerOptions):
    """Options of a :class:`Search`: the scheduler's (:class:`~qd.scheduler.SchedulerOptions`) and these.

    Attributes
    ----------
    llm_threads : int
        LLM operator calls generated concurrently.
    window : int or None
        Evaluations kept in flight (default ``2 × evaluator.slots``, re-read as the slots change:
        nodes joining or leaving a Ray cluster).
    ordered : bool
        Tell results in submission order rather than as they land. With a fixed ``window`` this
        makes the archive independent of evaluation timing, so serial and Ray runs with the same
        seed give the same archive (at some cost in idle time).
    history_every : int or None
        Record archive stats in the store every this many evaluations (default: budget / 200).
    drain_s : float
        At the budget, how long to wait for LLM calls still running so that their tokens and
        failures are counted.
    progress : bool
        Show a tqdm progress bar.
    """

    llm_threads: int = 4
    window: int | None = None
    ordered: bool = False
    history_every: int | None = None
    drain_s: float = 30.0
    progress: bool = False

    def scheduler_options(self) -> SchedulerOptions:
        """The part of these options the scheduler reads."""
        return SchedulerOptions(**{f.name: getattr(self, f.name) for f in dataclasses.fields(SchedulerOptions)})


def replay(store: RunStore, archive: Any, noise: NoiseHandler | None = None) -> set[str]:
    """Insert every stored usable evaluation into ``archive`` in id order; returns all config hashes.

    Replaying in the original order rebuilds exactly the archive the run had, because
    insertion is deterministic. With a noise handler, results go through it in the order it
    recorded them (:meth:`qd.noise.NoiseHandler.replay`), which rebuilds every sample too.
    """
    saved = store.get_meta("noise") if noise is None else None
    if saved:  # a run made with a noise policy is rebuilt by that policy
        noise = make_handler(archive, saved["noise"], samples=saved["noise_samples"], probes=saved["noise_probes"],
                             top=saved.get("noise_top"))
    if noise is not None:
        return noise.replay(store.evaluations(), store.samples(), archive.measure_names)
    seen: set[str] = set()
    names = archive.measure_names
    for row in store.evaluations():
        seen.add(row.hash)
        if row.status == "ok" and math.isfinite(row.fitness):
            values = [row.measures[name] for name in names]
            archive.add_single(row.config, row.fitness, values, id=row.id, feedback=row.feedback)
    return seen


class Search:
    """Steady-state MAP-Elites over a domain's configuration space.

    Parameters
    ----------
    domain : Domain
        Supplies the space and (through the evaluator) the evaluations.
    archive : GridArchive or CVTArchive
        Receives every usable result; its ``measure_names`` must match ``measures``.
    evaluator : Evaluator
        Serial or Ray evaluator (``qd.evaluators``).
    operators : mapping of str to (Operator, float)
        Operator instances with their selection weights.
    measures : sequence of callable
        Descriptor functions ``f(config, result) -> float`` in archive order
        (``qd.analysis.resolve_measures``).
    budget : int
        Number of finished evaluations to reach.
    store : RunStore, optional
        Where every evaluation is committed as it lands (a :class:`~qd.listeners.StoreRecorder`);
        a store that holds evaluations already is resumed: archive, dedup set and counters are
        rebuilt from it.
    llm_client : LLMClient, optional
        Its usage is saved in the store's ``llm`` counters.
    options : SearchOptions, optional
        Seeds, random samples, adaptive weights, window, LLM threads, progress bar.
    listeners : sequence of SearchListener
        Further listeners, called after the store and the progress bar.
    **overrides
        Fields of :class:`SearchOptions` given directly (``init_random=50, seed=3``).
    """

    def __init__(self, domain: Domain, archive: Any, evaluator: Any, *,
                 operators: Mapping[str, tuple[Operator, float]],
                 measures: Sequence[Callable[[dict, EvalResult], float]], budget: int,
                 store: RunStore | None = None, llm_client: Any = None, options: SearchOptions | None = None,
                 listeners: Sequence[SearchListener] = (), **overrides: Any):
        self.options = dataclasses.replace(options or SearchOptions(), **overrides)
        self.domain, self.space, self.archive, self.evaluator = domain, domain.space, archive, evaluator
        self.store, self.budget = store, int(budget)
        self.measure_fns = list(measures)
        self.measure_names = list(archive.measure_names)
        scheduler_options = self.options.scheduler_options()
        saved = store.get_meta("noise") if store is not None else None
        if saved:  # a resumed run keeps the noise policy it started with, so replay rebuilds its state
            scheduler_options = dataclasses.replace(scheduler_options, **saved)
        else:
            scheduler_options.noise_budget = self.budget
        self.scheduler = Scheduler(archive, domain.space, operators, scheduler_options,
                                   predict=getattr(domain, "predict_measures", None))
        noise = self.scheduler.noise
        if store is not None and noise is not None and not saved:  # its resumes rebuild the same policy
            store.set_meta("noise", {"noise": noise.policy, "noise_samples": noise.max_samples,
                                     "noise_probes": noise.probes, "noise_top": noise.top})
        self.finished = 0
        self._next_id = 0
        self._inflight: dict[int, Candidate] = {}
        self._landed: dict[int, EvalResult] = {}
        self._ready: collections.deque[Candidate] = collections.deque()
        self._llm_threads = int(self.options.llm_threads)
        self._llm_pool = cf.ThreadPoolExecutor(max_workers=self._llm_threads, thread_name_prefix="qd-llm")
        self._llm_jobs: dict[cf.Future, GenerationJob] = {}
        self._started = time.perf_counter()
        self.llm_client = llm_client
        self.range_watch = RangeWatch()  # counts measure values outside the archive's ranges; warns once
        self.failure_watch = FailureWatch()  # warns once at the first failure (evaluation, or every example)
        self.listeners: list[SearchListener] = [self.range_watch, self.failure_watch]
        if store is not None:
            self.listeners.append(StoreRecorder(store, llm_client, self.options.history_every))
            self.finished = self._resume(store)
        if self.options.progress:
            self.listeners.append(ProgressBar())
        self.listeners.extend(listeners)

    # -- the scheduler's state, under the names the search has always had -----------------------
    @property
    def stats(self) -> dict[str, OperatorStats]:
        """Counters per operator (and ``seed``, ``random``, ``fallback``)."""
        return self.scheduler.stats

    @property
    def weights(self) -> dict[str, float]:
        """Current operator weights (they move in adaptive mode)."""
        return self.scheduler.weights

    @property
    def window(self) -> int:
        """Evaluations kept in flight."""
        return self.options.window or 2 * self.evaluator.slots

    @property
    def elapsed_s(self) -> float:
        """Seconds since the search was built."""
        return time.perf_counter() - self._started

    # -- public --------------------------------------------------------------------------------
    def run(self) -> Any:
        """Run until ``budget`` evaluations have finished; returns the archive.

        Interrupting (Ctrl-C) or killing the process loses at most the evaluations in
        flight: everything finished is already committed to the store.
        """
        for listener in self.listeners:
            listener.on_start(self)
        try:
            while self.finished < self.budget:
                self._harvest_llm()
                self._stop_if_llm_unusable()
                self._fill()
                waiting_on_llm = bool(self._llm_jobs)
                if not self._inflight:
                    if not waiting_on_llm:
                        raise RuntimeError("search stalled: nothing in flight and no offspring could be made")
                    cf.wait(self._llm_jobs, timeout=1.0, return_when=cf.FIRST_COMPLETED)
                    continue
                for key, result in self.evaluator.collect(0.02 if waiting_on_llm else 1.0):
                    if not self.options.ordered:
                        self._tell(key, result)
                        continue
                    self._landed[key] = result
                    while self._inflight and min(self._inflight) in self._landed:
                        first = min(self._inflight)
                        self._tell(first, self._landed.pop(first))
                        self._fill()  # refill per result: offspring must not depend on how results batch
            self._drain_llm()
        finally:
            for listener in self.listeners:
                listener.on_end(self)
        return self.archive

    def _stop_if_llm_unusable(self) -> None:
        """Raise the client's :attr:`~qd.llm.LLMClient.fatal` error (its first calls all failed alike).

        Raises
        ------
        LLMError
            With the endpoint's own message and the config key to fix.
        """
        fatal = getattr(self.llm_client, "fatal", None)
        if fatal is not None:
            raise fatal

    def close(self) -> None:
        """Stop LLM generation threads and the evaluator."""
        for future in self._llm_jobs:
            future.cancel()
        self._llm_pool.shutdown(wait=False, cancel_futures=True)
        self.evaluator.close()

    def __enter__(self) -> Search:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals -----------------------------------------------------------------------------
    def _resume(self, store: RunStore) -> int:
        """Rebuild the archive, dedup set and counters by replaying the store in id order."""
        seen = replay(store, self.archive, self.scheduler.noise)
        if self.scheduler.predictor_learns:  # the learned predictor sees every stored result again
            for row in store.evaluations():
                if row.status == "ok" and math.isfinite(row.fitness):
                    self.scheduler.learn(row.config, [row.measures[n] for n in self.measure_names])
        self._next_id = store.max_id() + 1
        self.scheduler.resume(seen, store.counters("operators"))
        return store.count()  # re-evaluations (qd.noise) are evaluations of the budget too

    def _fill(self) -> None:
        while len(self._inflight) < self.window and self.finished + len(self._inflight) < self.budget:
            child = self._ready.popleft() if self._ready else self._next_candidate()
            if child is None:
                return
            child.submitted_at = time.time()
            key = self._next_id
            self._next_id += 1
            self._inflight[key] = child
            self.evaluator.submit(key, with_draw(child.config, child.draw) if child.draw else child.config)

    def _next_candidate(self) -> Candidate | None:
        """A candidate ready to evaluate, or None while the scheduler waits (on LLMs or results)."""
        while True:
            item = self.scheduler.propose(llm_free=len(self._llm_jobs) < self._llm_threads)
            if not isinstance(item, GenerationJob):
                return item
            self._llm_jobs[self._llm_pool.submit(item.run)] = item

    def _harvest_llm(self) -> None:
        """Move finished LLM generations to the ready queue (the scheduler replaces failures)."""
        for future in [f for f in self._llm_jobs if f.done()]:
            job = self._llm_jobs.pop(future)
            self._ready.append(self.scheduler.complete(job, future.result()))

    def _drain_llm(self) -> None:
        """At the budget: wait (up to ``drain_s``) for LLM calls already running and count them.

        LLM generation runs ahead of evaluation, so calls are still in flight when the budget is
        reached; their tokens and failures are real spend, so they are counted (their children
        are not evaluated). Calls not yet started are cancelled.
        """
        for future in list(self._llm_jobs):
            if future.cancel():
                del self._llm_jobs[future]
        if self._llm_jobs:
            cf.wait(list(self._llm_jobs), timeout=self.options.drain_s)
            for future in [f for f in self._llm_jobs if f.done()]:
                self.scheduler.discard(self._llm_jobs.pop(future), future.result())

    def _tell(self, key: int, result: EvalResult) -> None:
        child = self._inflight.pop(key)
        self.finished += 1
        measures = measure_result(child.config, result, self.measure_fns, self.measure_names)
        values = [measures[n] for n in self.measure_names] if result.usable else None
        status = self.scheduler.tell(child, result.fitness if values is not None else None, values, id=key,
                                     feedback=result.feedback)
        event = Evaluated(key, child, result, measures, status)
        for listener in self.listeners:
            listener.on_result(self, event)
