"""The steady-state MAP-Elites driver: evaluator window, batches, LLM threads, listeners.

:class:`Search` keeps a window of evaluations in flight (``2 × evaluator.slots`` times the
larger of two batch sizes: the driver's ``batch`` and the evaluator's ``batch_size``, see
:attr:`Search.window`), tells the results to the :class:`~qd.scheduler.Scheduler` as they land
(all those one ``collect`` returns at once), and asks it for as many new candidates meanwhile.
``batch`` is 1 for evaluations that take long (steady state: every result is told before the next
candidate is made) and grows when they are cheap, so that the engine's cost per evaluation is
paid once per batch (``SearchOptions.batch``); ``batch_size`` is how many configurations one Ray
call evaluates (:mod:`qd.evaluators.batching`). LLM operators generate in a thread pool so that
waiting on a model never leaves evaluation workers idle: an LLM operator drawn while every LLM
thread is busy yields its turn to a classic operator (unless ``wait_for_llm``), so both the
evaluators and the LLM threads stay busy. What the run reports (the run store, the archive
history, the progress bar) are listeners
(:mod:`qd.listeners`). See docs/architecture.md for the data flow of one evaluation.
"""
from __future__ import annotations

import collections
import concurrent.futures as cf
import dataclasses
import gc
import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from qd.analysis.measuring import measure_result
from qd.archive_store import load_archive, replay, write_archive
from qd.domain import Domain
from qd.evaluation import with_draw
from qd.failure_watch import FailureWatch
from qd.keyset import KeySet
from qd.listeners import Evaluated, ProgressBar, SearchListener, StoreRecorder
from qd.measure_range import RangeWatch
from qd.noise import RULE as NOISE_RULE
from qd.prefilter import MAX_HISTORY
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
from qd.space import Layout
from qd.totals import TOTALS_META, RunTotals

if TYPE_CHECKING:
    from qd.operators.base import Operator
    from qd.store import RunStore

__all__ = ["Search", "SearchOptions", "OperatorStats", "replay", "SEED", "RANDOM", "FALLBACK", "CHEAP_EVAL_S",
           "MAX_BATCH", "BATCH_SHARE"]

CHEAP_EVAL_S = 0.001  # on several slots, evaluations quicker than this on average are told in batches
MAX_BATCH = 256       # of at most this many candidates
BATCH_SHARE = 32      # and at most one per this many results told so far
_GC_YOUNG = 20_000  # net container allocations between collections of the youngest generation in a run


@dataclass
class SearchOptions(SchedulerOptions):
    """Options of a :class:`Search`: the scheduler's (:class:`~qd.scheduler.SchedulerOptions`) and these.

    Attributes
    ----------
    llm_threads : int
        LLM operator calls generated concurrently.
    window : int or None
        Evaluations kept in flight (default :attr:`Search.window`: ``2 × evaluator.slots`` times
        the larger of ``batch`` and the evaluator's ``batch_size``, the latter's share at most a
        tenth of the budget; re-read as they change: nodes joining or leaving a Ray cluster, Ray
        batches sized from the measured evaluation time).
    batch : int
        Candidates asked and results told at once. 0 (default): one per :data:`BATCH_SHARE`
        results told so far, at most :data:`MAX_BATCH`, when evaluations run one at a time (one
        slot: the serial backend) or when, on several slots, the first :data:`BATCH_SHARE`
        evaluations took under :data:`CHEAP_EVAL_S` each on average; otherwise 1 (plain steady
        state: each result is told before the next candidate is made), and always 1 with LLM
        operators or ``ordered``. The schedule depends on counts only, so a serial run stays the
        same run for a seed.
    ordered : bool
        Tell results in submission order rather than as they land, in batches of exactly
        ``batch``. With a fixed ``window`` this makes the archive independent of evaluation
        timing, so serial and Ray runs with the same seed give the same archive (at some cost in
        idle time).
    history_every : int or None
        Record archive stats in the store every this many evaluations (default: budget / 200).
    drain_s : float
        At the budget, how long to wait for LLM calls still running so that their tokens and
        failures are counted.
    progress : bool
        Show a tqdm progress bar.
    commit_s : float
        Seconds between group commits to the run store at most while results arrive (0: one
        commit per batch); see :class:`~qd.listeners.StoreRecorder`.
    filter : bool or "auto"
        The scheduler's pre-evaluation filter; ``"auto"`` (default) is on for a domain that makes
        calls (LLMs, tools: ``Domain.makes_calls``, true unless the domain says otherwise) and off
        for a computation-only one (the arm), whose evaluations cost less than predicting where
        candidates land.
    """

    filter: bool | str = "auto"
    llm_threads: int = 4
    window: int | None = None
    batch: int = 0
    ordered: bool = False
    history_every: int | None = None
    drain_s: float = 30.0
    progress: bool = False
    commit_s: float = 0.2

    def scheduler_options(self) -> SchedulerOptions:
        """The part of these options the scheduler reads."""
        return SchedulerOptions(**{f.name: getattr(self, f.name) for f in dataclasses.fields(SchedulerOptions)})


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
        Where every evaluation is committed, in groups (a :class:`~qd.listeners.StoreRecorder`);
        a store that holds evaluations already is resumed: archive, dedup keys and counters are
        read from it (a version 1 store is converted first, :meth:`qd.store.RunStore.migrate`).
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
        if scheduler_options.filter == "auto":  # a computation-only domain evaluates faster than one predicts
            scheduler_options.filter = bool(getattr(domain, "makes_calls", True))
        saved = dict(store.get_meta("noise") or {}) if store is not None else {}
        earlier_rule = bool(saved) and saved.pop("noise_rule", None) != NOISE_RULE
        if saved:  # a resumed run keeps the noise policy it started with, so replay rebuilds its state
            scheduler_options = dataclasses.replace(scheduler_options, **saved)
        else:
            scheduler_options.noise_budget = self.budget
        self.scheduler = Scheduler(archive, domain.space, operators, scheduler_options,
                                   predict=getattr(domain, "predict_measures", None))
        noise = self.scheduler.noise
        if store is not None and noise is not None and (not saved or earlier_rule):  # resumes rebuild this policy
            store.set_meta("noise", {"noise": noise.policy, "noise_samples": noise.max_samples,
                                     "noise_probes": noise.probes, "noise_top": noise.top,
                                     "noise_share": noise.share, "noise_rule": NOISE_RULE})
        self.finished = 0
        self.stopped: str | None = None  # why the search stopped before its budget (the space ran out)
        self._next_id = 0
        self._eval_s: list[float] = []  # the first evaluations' own times (batch sizing)
        self._cheap = False
        self._inflight: dict[int, Candidate] = {}  # by key; keys increase, so the first is the oldest
        self._landed: dict[int, EvalResult] = {}
        self._ready: collections.deque[Candidate] = collections.deque()
        self._llm_threads = int(self.options.llm_threads)
        self._llm_pool = cf.ThreadPoolExecutor(max_workers=self._llm_threads, thread_name_prefix="qd-llm")
        self._llm_jobs: dict[cf.Future, GenerationJob] = {}
        self._llm_ops = any(op.uses_llm for op in self.scheduler.operators.values())
        self._started = time.perf_counter()
        self.llm_client = llm_client
        self.range_watch = RangeWatch()  # counts measure values outside the archive's ranges; warns once
        self.failure_watch = FailureWatch()  # warns once at the first failure (evaluation, or every example)
        self.listeners: list[SearchListener] = [self.range_watch, self.failure_watch]
        if store is not None:
            self.listeners.append(StoreRecorder(store, llm_client, self.options.history_every, self.options.commit_s))
            self.finished = self._resume(store)
            if earlier_rule and noise is not None and noise.active:
                warnings.warn(f"{store.path} was written by an earlier qd, whose noise policy settled contests "
                              "by re-evaluation; resuming replays its samples with posterior means "
                              "(docs/noise.md), so some cells may change elite", stacklevel=2)
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
    def batch(self) -> int:
        """Candidates asked and results told at once (see :class:`SearchOptions`)."""
        if self.options.batch:
            return int(self.options.batch)
        if self.options.ordered or self._llm_ops or (self.evaluator.slots > 1 and not self._cheap):
            return 1
        # Candidates of a batch come from an archive that misses the results still in flight (up to
        # two batches): keep those a small share of the results told so far.
        return max(1, min(MAX_BATCH, self.finished // BATCH_SHARE))

    @property
    def window(self) -> int:
        """Evaluations kept in flight: ``options.window``, else by the two batch sizes.

        Two batches per slot of the driver's :attr:`batch` (candidates asked and results told at
        once), or of the evaluator's ``batch_size`` (configurations per Ray call; an evaluator
        without one counts 1), whichever asks more. The evaluator's share stops at a tenth of the
        budget (offspring bred while the whole window is out see none of its results, so a short
        run must not send most of its budget blind); the driver's batch needs no such cap, being
        at most a share of the results told so far. ``ordered`` runs leave ``batch_size`` out: it
        follows measured times, and the window must not, for the run to be reproducible.
        """
        if self.options.window:
            return self.options.window
        slots = self.evaluator.slots
        driver = slots * self.batch
        if self.options.ordered:
            return 2 * driver
        ray = min(slots * getattr(self.evaluator, "batch_size", 1), self.budget // 20)
        return 2 * max(driver, ray)

    @property
    def elapsed_s(self) -> float:
        """Seconds since the search was built."""
        return time.perf_counter() - self._started

    # -- public --------------------------------------------------------------------------------
    def run(self) -> Any:
        """Run until ``budget`` evaluations have finished; returns the archive.

        The search stops earlier, with :attr:`stopped` saying why, when no configuration that has
        not been evaluated can be made any more (:attr:`Scheduler.exhausted
        <qd.scheduler.Scheduler.exhausted>`: every configuration of a small space is evaluated).
        Interrupting (Ctrl-C) loses the evaluations in flight only (what finished is committed as
        the search stops); killing the process (SIGKILL) also loses the group of finished
        evaluations not yet committed (at most ``commit_s`` of results).
        """
        for listener in self.listeners:
            listener.on_start(self)
        # one slot: whole batches, so that the run never depends on how long collect() ran
        in_order = self.options.ordered or self.evaluator.slots == 1
        thresholds = gc.get_threshold()
        try:
            # What exists now (modules, the domain, the archive so far) lives as long as the search: out
            # of the collector's sight, the full collections that the search's allocations trigger stay short.
            gc.freeze()
            # Each evaluation allocates a few dozen containers that die young (a candidate, its result, a
            # store row): at the default threshold the youngest generation is collected every few
            # evaluations. (A threshold of 0, collection turned off, stays off.)
            if thresholds[0]:
                gc.set_threshold(max(thresholds[0], _GC_YOUNG), *thresholds[1:])
            while self.finished < self.budget:
                self._harvest_llm()
                self._stop_if_llm_unusable()
                self._fill()
                waiting_on_llm = bool(self._llm_jobs)
                if not self._inflight:
                    if not waiting_on_llm:
                        if self.scheduler.exhausted:
                            self.stopped = self.scheduler.exhausted
                            break
                        raise RuntimeError("search stalled: nothing in flight and no offspring could be made")
                    cf.wait(self._llm_jobs, timeout=1.0, return_when=cf.FIRST_COMPLETED)
                    self._idle()
                    continue
                landed = self.evaluator.collect(0.02 if waiting_on_llm else 1.0)
                if not landed:
                    self._idle()
                elif not in_order:
                    self._tell(landed)
                else:
                    self._tell_in_order(landed)
            self._drain_llm()
            noise = self.scheduler.noise
            if noise is not None and noise.active:
                noise.refresh()  # the map a run ends with shows the posterior means of its last prior
        finally:
            gc.set_threshold(*thresholds)
            gc.unfreeze()
            for listener in self.listeners:
                listener.on_end(self)
        return self.archive

    def _tell_in_order(self, landed: list[tuple[int, EvalResult]]) -> None:
        """Tell results in submission order, in batches of exactly ``batch``, refilling after each.

        Offspring then depend on the order of submissions only, not on how results land or batch.
        """
        self._landed.update(landed)
        ready: list[tuple[int, EvalResult]] = []
        for key in self._inflight:
            if key not in self._landed:
                break
            ready.append((key, self._landed.pop(key)))
        batch = self.batch
        while len(ready) >= batch or (ready and len(ready) == len(self._inflight)):
            self._tell(ready[:batch])
            ready = ready[batch:]
            self._fill()
        for key, result in ready:  # not yet a whole batch: wait for the rest
            self._landed[key] = result

    def _idle(self) -> None:
        for listener in self.listeners:
            listener.on_idle(self)

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
        """Read the archive, the dedup keys and the counters of the evaluations stored so far.

        A run made with a noise policy is replayed through it (the policy's samples and waiting challengers are
        rebuilt, and the archive with them); otherwise the stored archive is read as it stands. A
        version 1 store is converted first, in one transaction with what it lacked (the archive as
        it stands, the running totals). A learned measure predictor sees every stored result again.
        """
        self.scheduler.use_layout(_stored_layout(store, self.scheduler.layout))
        noise = self.scheduler.noise
        if store.version < 2:
            store.migrate(lambda converted: self._rebuild(converted, noise))
        elif noise is not None:
            with store.transaction():
                replay(store, self.archive, noise)
                write_archive(store, self.archive)
        else:
            load_archive(store, self.archive)
        if self.scheduler.predictor_learns:  # the most recent results, as many as the predictor keeps
            for row in store.evaluations("ok", after=store.max_id() - MAX_HISTORY):
                if math.isfinite(row.fitness):
                    self.scheduler.learn(row.config, [row.measures[n] for n in self.measure_names])
        self._next_id = store.max_id() + 1
        self.scheduler.resume(KeySet(store.keys()), store.counters("operators"))
        return store.count()  # re-evaluations (qd.noise) are evaluations of the budget too

    def _rebuild(self, store: RunStore, noise: Any) -> None:
        """Replay a converted version 1 store and write the archive and the totals it did not keep."""
        replay(store, self.archive, noise)
        write_archive(store, self.archive)
        totals = RunTotals(self.measure_names, self.archive.lower_bounds, self.archive.upper_bounds)
        store.set_meta(TOTALS_META, totals.add_rows(store.evaluations()).as_dict())

    def _fill(self) -> None:
        gap = min(self.window - len(self._inflight), self.budget - self.finished - len(self._inflight))
        if gap <= 0:
            return
        children: list[Candidate] = []
        while self._ready and len(children) < gap:
            children.append(self._ready.popleft())
        if self._llm_ops:
            while len(children) < gap:
                child = self._next_candidate()
                if child is None:
                    break
                children.append(child)
        elif len(children) < gap:
            children.extend(self.scheduler.ask_many(gap - len(children)))
        if not children:
            return
        now = time.time()
        items = []
        for child in children:
            child.submitted_at = now
            key = self._next_id
            self._next_id += 1
            self._inflight[key] = child
            items.append((key, with_draw(child.config, child.draw) if child.draw else child.config))
        submit_many = getattr(self.evaluator, "submit_many", None)
        if submit_many is not None:
            submit_many(items)
        else:
            for key, config in items:
                self.evaluator.submit(key, config)

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
            child = self.scheduler.complete(job, future.result())
            if child is not None:  # None: nothing new can be made any more (scheduler.exhausted)
                self._ready.append(child)

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

    def _tell(self, landed: list[tuple[int, EvalResult]]) -> None:
        """Tell a batch of results to the scheduler, then to the listeners."""
        children = [self._inflight.pop(key) for key, _ in landed]
        self.finished += len(landed)
        measures, objectives, values = [], [], []
        for child, (_, result) in zip(children, landed):
            m = measure_result(child.config, result, self.measure_fns, self.measure_names)
            measures.append(m)
            usable = result.usable
            objectives.append(result.objective if usable else None)
            values.append([m[n] for n in self.measure_names] if usable else None)
        statuses, seqs = self.scheduler.tell_many(children, objectives, values, ids=[key for key, _ in landed],
                                                  feedback=[result.feedback for _, result in landed])
        events = [Evaluated(key, child, result, m, status, seq) for (key, result), child, m, status, seq
                  in zip(landed, children, measures, statuses, seqs)]
        for listener in self.listeners:
            listener.on_results(self, events)
        if len(self._eval_s) < BATCH_SHARE:  # decide once whether evaluations are cheap enough to batch
            self._eval_s += [t for _, r in landed if isinstance(t := r.metrics.get("eval_s"), float)]
            if len(self._eval_s) >= BATCH_SHARE:
                self._cheap = sum(self._eval_s) / len(self._eval_s) < CHEAP_EVAL_S


def _stored_layout(store: RunStore, layout: Layout | None) -> Layout | None:
    """How the run in ``store`` identifies configurations: ``layout``'s bytes, or (None) their canonical JSON.

    A store written before configurations of numeric spaces were identified by bytes keeps the
    JSON identity, so that its dedup keys stay those of its evaluations.

    Raises
    ------
    ValueError
        When the store's configurations were written for another space than the domain's.
    """
    stored = store.config_layout()
    if stored is None:
        return layout if store.max_id() < 0 else None
    if stored != layout:
        raise ValueError(f"{store.path} holds configurations of another space ({stored.to_list()}) than the "
                         f"domain's ({'not a numeric space' if layout is None else layout.to_list()}): resume it "
                         "with the domain it was run with")
    return stored
