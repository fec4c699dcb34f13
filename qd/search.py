"""The steady-state MAP-Elites loop (DESIGN.md, The loop).

The search keeps ``2 × evaluator.slots`` evaluations in flight, inserts each
result into the archive as it lands, commits it to the run store, and keeps
generating offspring meanwhile. LLM operators run in a thread pool so that
waiting on a model never leaves evaluation workers idle: an LLM operator drawn
while every LLM thread is busy yields its turn to a classic operator (unless
``wait_for_llm``), so both the evaluators and the LLM threads stay busy and the
LLM operators write as many offspring as the model can produce, up to their weight.

Every selection of an operator costs exactly one evaluation: its own child, or,
when an LLM operator's call fails or its output is invalid or a duplicate, a
classic child made in its place (operator ``fallback``). That is the denominator
of the adaptive operator weights, so an operator pays for the offspring it
wastes.
"""
from __future__ import annotations

import collections
import concurrent.futures as cf
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qd.domain import Domain
from qd.result import EvalResult
from qd.store import RunStore

__all__ = ["Search", "OperatorStats", "replay"]

RANDOM = "random"      # initial population, and the last resort when operators keep repeating configs
FALLBACK = "fallback"  # classic offspring in place of an LLM one (failed, invalid, duplicate, or LLM busy)
_MAX_DUPLICATE_TRIES = 8


@dataclass
class OperatorStats:
    """Counters of one operator (shown by ``qd status``)."""

    offspring: int = 0     # candidates the operator wrote (LLM: answers parsed, valid or not)
    valid: int = 0         # ... that passed Space.validate (after repair)
    duplicates: int = 0    # ... valid ones that repeated a config already seen (not evaluated)
    evaluated: int = 0     # offspring evaluated under this operator's name
    gains: int = 0         # evaluations that added a new cell or improved one
    spent: int = 0         # evaluations spent because this operator was chosen (own or fallback child)
    llm_failures: int = 0  # LLM calls that failed after retries (or generations that raised)
    tokens: int = 0        # LLM tokens spent (in + out)
    time_s: float = 0.0    # wall time spent generating

    def as_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


@dataclass
class _Child:
    config: dict
    canonical: str
    hash: str
    operator: str
    parent_ids: list[int]
    submitted_at: float = 0.0
    chosen_by: str = ""  # operator whose selection this evaluation is charged to (adaptive weights)


@dataclass
class _LLMJob:
    operator: str
    parents: list
    started: float = field(default_factory=time.perf_counter)


def _generate(op: Any, parents: list, rng: np.random.Generator, target: Any) -> Any:
    """Run one LLM operator call in a pool thread: ``op.generate`` when it has one, else ``vary``."""
    generate = getattr(op, "generate", None)
    if generate is None:
        return op.vary(parents, rng)
    return generate(parents, rng) if target is None else generate(parents, rng, target)


def replay(store: RunStore, archive: Any) -> set[str]:
    """Insert every stored usable evaluation into ``archive`` in id order; returns all config hashes.

    Replaying in the original order rebuilds exactly the archive the run had, because
    insertion is deterministic.
    """
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
        Where every evaluation is committed as it lands.
    init_random : int
        Random configurations evaluated before operators start.
    seed : int
        Seeds the search's random generator.
    adaptive : bool
        Shift operator weights toward the best archive gain per evaluation and per 1k tokens
        (see :meth:`_adapt_weights`), every ``adapt_every`` evaluations.
    llm_threads : int
        LLM operator calls generated concurrently.
    progress : bool
        Show a tqdm progress bar.
    llm_client : LLMClient, optional
        Its usage is saved in the store's ``llm`` counters.
    history_every : int, optional
        Record archive stats every this many evaluations (default: budget / 200).
    window : int, optional
        Evaluations kept in flight (default ``2 × evaluator.slots``, re-read as the slots change:
        nodes joining or leaving a Ray cluster).
    ordered : bool
        Insert results in submission order rather than as they land. With a fixed
        ``window`` this makes the archive independent of evaluation timing, so serial
        and Ray runs with the same seed give the same archive (at some cost in idle time).
    target_rate : float
        Probability that an LLM operator which accepts targets (``accepts_target``, e.g.
        ``LLMMutation``) is asked to reach an empty region of the archive near its parent
        instead of only a higher objective.
    adapt_every : int
        Evaluations between adaptive weight updates.
    drain_s : float
        At the budget, how long to wait for LLM calls still running so that their tokens and
        failures are counted.
    wait_for_llm : bool
        When an LLM operator is drawn while all ``llm_threads`` are busy: ``False`` (default)
        draws a classic operator instead, so evaluation slots never wait on the model; ``True``
        keeps the draw and leaves the slot empty until a thread frees, so every operator gets
        exactly its weight's share of evaluations (for comparing operator sets per evaluation).
    """

    def __init__(self, domain: Domain, archive: Any, evaluator: Any, *,
                 operators: Mapping[str, tuple[Any, float]], measures: Sequence[Callable[[dict, EvalResult], float]],
                 budget: int, store: RunStore | None = None, init_random: int = 100, seed: int = 0,
                 adaptive: bool = False, llm_threads: int = 4, progress: bool = False,
                 llm_client: Any = None, history_every: int | None = None, window: int | None = None,
                 ordered: bool = False, target_rate: float = 0.5, adapt_every: int = 20,
                 drain_s: float = 30.0, wait_for_llm: bool = False):
        from qd.operators.classic import Mutation

        if not operators:
            raise ValueError("at least one operator with a positive weight is needed")
        if any(w < 0 for _, w in operators.values()) or sum(w for _, w in operators.values()) <= 0:
            raise ValueError("operator weights must be non-negative with a positive sum")
        self.domain, self.space, self.archive, self.evaluator = domain, domain.space, archive, evaluator
        self.store, self.budget, self.init_random = store, int(budget), int(init_random)
        self.measure_fns = list(measures)
        self.measure_names = list(archive.measure_names)
        self.rng = np.random.default_rng(seed)
        self.adaptive, self.llm_client, self.progress = adaptive, llm_client, progress
        self.operators = {name: op for name, (op, _) in operators.items()}
        self.base_weights = {name: float(w) for name, (_, w) in operators.items()}
        self.weights = dict(self.base_weights)
        self._classic_names = [n for n, op in self.operators.items() if not getattr(op, "uses_llm", False)]
        self._fallback = self.operators[self._classic_names[0]] if self._classic_names else Mutation(self.space)
        self.stats: dict[str, OperatorStats] = collections.defaultdict(OperatorStats)
        self.finished = 0
        self._next_id = 0
        self._seen: set[str] = set()
        self._inflight: dict[int, _Child] = {}
        self._ready: collections.deque[_Child] = collections.deque()
        self._llm_pool = cf.ThreadPoolExecutor(max_workers=llm_threads, thread_name_prefix="qd-llm")
        self._llm_jobs: dict[cf.Future, _LLMJob] = {}
        self._llm_threads = llm_threads
        self._history_every = history_every or max(1, self.budget // 200)
        self._started = time.perf_counter()
        self._bar = None
        self._window = window
        self.ordered = ordered
        self.target_rate = float(target_rate)
        self.adapt_every = max(1, int(adapt_every))
        self.drain_s = float(drain_s)
        self.wait_for_llm = bool(wait_for_llm)
        self._landed: dict[int, EvalResult] = {}
        self._llm_base: dict[str, dict[str, float]] = {}  # LLM usage of earlier sessions of a resumed run
        self._pending: str | None = None  # an LLM operator drawn while every LLM thread was busy
        if store is not None:
            self._restore(store)
            if adaptive:
                self._adapt_weights()  # resume with the weights the counters imply

    @property
    def window(self) -> int:
        """Evaluations kept in flight."""
        return self._window or 2 * self.evaluator.slots

    # -- public --------------------------------------------------------------------------------
    def run(self) -> Any:
        """Run until ``budget`` evaluations have finished; returns the archive.

        Interrupting (Ctrl-C) or killing the process loses at most the evaluations in
        flight: everything finished is already committed to the store.
        """
        self._open_progress()
        try:
            while self.finished < self.budget:
                self._harvest_llm()
                self._fill()
                waiting_on_llm = bool(self._llm_jobs)
                if not self._inflight:
                    if not waiting_on_llm:
                        raise RuntimeError("search stalled: nothing in flight and no offspring could be made")
                    cf.wait(self._llm_jobs, timeout=1.0, return_when=cf.FIRST_COMPLETED)
                    continue
                for key, result in self.evaluator.collect(0.02 if waiting_on_llm else 1.0):
                    if not self.ordered:
                        self._tell(key, result)
                        continue
                    self._landed[key] = result
                    while self._inflight and min(self._inflight) in self._landed:
                        first = min(self._inflight)
                        self._tell(first, self._landed.pop(first))
                        self._fill()  # refill per result: offspring must not depend on how results batch
            self._drain_llm()
        finally:
            self._save_counters()
            if self._bar is not None:
                self._bar.close()
        return self.archive

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

    # -- restore -------------------------------------------------------------------------------
    def _restore(self, store: RunStore) -> None:
        """Rebuild the archive, dedup set and counters by replaying the store in id order."""
        self._seen = replay(store, self.archive)
        self.finished = len(self._seen)
        self._next_id = store.max_id() + 1
        self._llm_base = store.counters("llm")
        for name, fields in store.counters("operators").items():
            self.stats[name] = OperatorStats(**{k: type(getattr(OperatorStats(), k))(v) for k, v in fields.items()
                                                if hasattr(OperatorStats, k)})

    # -- offspring -----------------------------------------------------------------------------
    def _fill(self) -> None:
        while len(self._inflight) < self.window and self.finished + len(self._inflight) < self.budget:
            child = self._ready.popleft() if self._ready else self._make_offspring()
            if child is None:
                return
            child.submitted_at = time.time()
            key = self._next_id
            self._next_id += 1
            self._inflight[key] = child
            self.evaluator.submit(key, child.config)

    def _make_offspring(self) -> _Child | None:
        """One child ready to evaluate, or None while LLM operators are busy."""
        if self.finished + len(self._inflight) < self.init_random or len(self.archive) == 0:
            return self._random_child()
        while True:
            name = self._pending or self._choose_operator()
            op = self.operators[name]
            if getattr(op, "uses_llm", False) and len(self._llm_jobs) >= self._llm_threads:
                if self.wait_for_llm:
                    # Keep the draw until an LLM thread is free: drawing again would hand the slot to
                    # a (fast) classic operator, and LLM operators would get less than their weight.
                    self._pending = name
                    return None
                name, op = self._classic_standin()
            self._pending = None
            parents = self._select_parents(op.num_parents)
            if getattr(op, "uses_llm", False):
                child_rng = np.random.default_rng(self.rng.integers(2**63))
                target = None
                if getattr(op, "accepts_target", False) and self.rng.random() < self.target_rate:
                    target = self._target_region(parents[0])
                future = self._llm_pool.submit(_generate, op, parents, child_rng, target)
                self._llm_jobs[future] = _LLMJob(name, parents)
                continue
            child = self._classic_child(name, op, parents)
            child.chosen_by = name
            return child

    def _classic_standin(self) -> tuple[str, Any]:
        """A classic operator drawn by the classic weights, for a slot no LLM thread can fill now.

        With no classic operator configured, the fallback mutation stands in (as ``fallback``).
        """
        names = [n for n in self._classic_names if self.weights[n] > 0]
        if not names:
            return FALLBACK, self._fallback
        name = self._choose_operator(names)
        return name, self.operators[name]

    def _target_region(self, parent: Any) -> dict[str, float] | None:
        """Measures of an empty cell near ``parent``'s: where an LLM mutation should try to land.

        Steps of ~15% of each range keep the goal reachable by editing a few fields; None when
        the neighbourhood is full (the operator then just aims for a higher objective).
        """
        low, high = self.archive.lower_bounds, self.archive.upper_bounds
        try:
            center = np.array([float(parent.measures[n]) for n in self.measure_names])
        except (KeyError, TypeError, ValueError):
            return None
        for _ in range(8):
            point = np.clip(center + self.rng.normal(0.0, 0.15, size=len(center)) * (high - low), low, high)
            occupied, _ = self.archive.retrieve_single(point)
            if not occupied:
                return dict(zip(self.measure_names, map(float, point)))
        return None

    def _classic_child(self, name: str, op: Any, parents: list) -> _Child:
        start = time.perf_counter()
        stats = self.stats[name]
        for _ in range(_MAX_DUPLICATE_TRIES):
            configs = op.vary(parents, self.rng)
            stats.offspring += len(configs)
            for config in configs:
                child = self._admit(name, config, parents)
                if child is not None:
                    stats.time_s += time.perf_counter() - start
                    return child
        stats.time_s += time.perf_counter() - start
        return self._random_child()

    def _admit(self, name: str, config: dict, parents: list) -> _Child | None:
        """Validate and dedup one candidate; count what happened to it."""
        stats = self.stats[name]
        if self.space.validate(config):
            return None
        stats.valid += 1
        canonical = self.space.canonical(config)
        digest = self.space.hash(config)
        if digest in self._seen:
            stats.duplicates += 1
            return None
        self._seen.add(digest)
        return _Child(config, canonical, digest, name, [p.id for p in parents if p.id is not None])

    def _random_child(self) -> _Child:
        stats = self.stats[RANDOM]
        for _ in range(10 * _MAX_DUPLICATE_TRIES):
            stats.offspring += 1
            child = self._admit(RANDOM, self.space.sample(self.rng), [])
            if child is not None:
                child.chosen_by = RANDOM
                return child
        raise RuntimeError("could not sample a configuration that has not been evaluated yet: "
                           "the space looks exhausted")

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
            cf.wait(list(self._llm_jobs), timeout=self.drain_s)
            for future in [f for f in self._llm_jobs if f.done()]:
                job = self._llm_jobs.pop(future)
                for config in self._account_llm(job, future):
                    self._admit(job.operator, config, job.parents)  # validity and duplicates, counted

    def _account_llm(self, job: _LLMJob, future: cf.Future) -> list[dict]:
        """Count one finished LLM generation; returns its candidate configs.

        A failed call (``Generation.failed``, or an exception from the operator) is an LLM failure,
        not an offspring; an answer with no valid configuration is an invalid offspring.
        """
        stats = self.stats[job.operator]
        stats.time_s += time.perf_counter() - job.started
        try:
            out = future.result()
        except Exception:  # an operator failure (LLM down, a bug) costs one evaluation, not the run
            configs, failed, tokens = [], True, 0
        else:
            if isinstance(out, list):  # a plain Operator.vary result
                configs, failed, tokens = out, False, 0
            else:
                configs, failed, tokens = list(out.configs), bool(out.failed), int(out.tokens)
        stats.tokens += tokens
        if failed:
            stats.llm_failures += 1
        else:
            stats.offspring += max(1, len(configs))
        return configs

    def _harvest_llm(self) -> None:
        """Move finished LLM generations to the ready queue; replace failures by classic offspring."""
        done = [f for f in self._llm_jobs if f.done()]
        for future in done:
            job = self._llm_jobs.pop(future)
            configs = self._account_llm(job, future)
            child = next((c for c in (self._admit(job.operator, cfg, job.parents) for cfg in configs)
                          if c is not None), None)
            if child is None:
                child = self._classic_child(FALLBACK, self._fallback, job.parents)
            child.chosen_by = job.operator
            self._ready.append(child)

    def _choose_operator(self, names: list[str] | None = None) -> str:
        """An operator name drawn by the current weights (among ``names``, default all)."""
        names = list(self.weights) if names is None else names
        weights = np.array([self.weights[n] for n in names])
        return names[int(self.rng.choice(len(names), p=weights / weights.sum()))] if len(names) > 1 else names[0]

    def _select_parents(self, k: int) -> list:
        from qd.operators.base import Parent

        elites = self.archive.sample_elites(k, rng=self.rng)
        parents = []
        for i in range(k):
            measures = dict(zip(self.measure_names, map(float, elites["measures"][i])))
            parents.append(Parent(config=elites["solution"][i], fitness=float(elites["objective"][i]),
                                  measures=measures, feedback=str(elites["feedback"][i]),
                                  id=int(elites["id"][i])))
        return parents

    # -- results -------------------------------------------------------------------------------
    def _tell(self, key: int, result: EvalResult) -> None:
        child = self._inflight.pop(key)
        self.finished += 1
        measures: dict[str, float] = dict(result.measures)
        archive_status = 0
        if result.usable:
            try:
                values = [float(f(child.config, result)) for f in self.measure_fns]
            except Exception as exc:
                result.status, result.error = "error", f"descriptor failed: {type(exc).__name__}: {exc}"
            else:
                measures.update(zip(self.measure_names, values))
                bad = [n for n, v in zip(self.measure_names, values) if not math.isfinite(v)]
                if bad:
                    result.status, result.error = "invalid", f"non-finite measures: {', '.join(bad)}"
                else:
                    out = self.archive.add_single(child.config, result.fitness, values, id=key,
                                                  feedback=result.feedback)
                    archive_status = int(out["status"])
        stats = self.stats[child.operator]
        stats.evaluated += 1
        stats.gains += archive_status > 0
        self.stats[child.chosen_by or child.operator].spent += 1
        if self.store is not None:
            from qd.analysis.descriptors import summarize

            self.store.add_evaluation(
                id=key, hash=child.hash, config_json=child.canonical, status=result.status,
                fitness=result.fitness, measures=measures, error=result.error, feedback=result.feedback,
                operator=child.operator, parent_ids=child.parent_ids, trace_summary=summarize(result.trace),
                metrics={k: v for k, v in result.metrics.items() if k != "traceback"},
                archive_status=archive_status, submitted_at=child.submitted_at)
        if self.finished % self._history_every == 0 or self.finished == self.budget:
            self._record_history()
        if self.adaptive and self.finished % self.adapt_every == 0:
            self._adapt_weights()
        if self._bar is not None:
            self._bar.update(1)
            if self.finished % 25 == 0 or self.finished == self.budget:
                s = self.archive.stats
                self._bar.set_postfix(elites=s.num_elites, coverage=f"{s.coverage:.1%}",
                                      best=f"{s.obj_max:.4g}" if s.num_elites else "-", refresh=False)

    def _adapt_weights(self) -> None:
        """Weight ∝ base weight × gains per evaluation ÷ (1 + thousands of tokens per evaluation).

        Evaluations are those charged to the operator (``spent``: its own children plus the
        fallbacks that replaced its invalid, duplicate or failed ones), with a Laplace prior so
        untried operators keep being tried. For an operator that spends ≫1k tokens per
        evaluation the score tends to its archive gains per 1k tokens; for classic operators it
        is the plain gain rate. A floor of 2% of the base weight keeps every operator alive.
        """
        for name, base in self.base_weights.items():
            s = self.stats[name]
            gain_rate = (s.gains + 1) / (s.spent + 2)
            kilo_tokens = s.tokens / max(s.spent, 1) / 1000.0
            self.weights[name] = base * max(gain_rate / (1.0 + kilo_tokens), 0.02)

    def _record_history(self) -> None:
        if self.store is None:
            return
        s = self.archive.stats
        self.store.add_history(self.finished, s.num_elites, s.coverage, s.qd_score,
                               s.obj_max if s.num_elites else math.nan, time.perf_counter() - self._started)
        self._save_counters()

    def _save_counters(self) -> None:
        if self.store is None:
            return
        total = sum(self.weights.values())
        # "share": the current probability of choosing the operator (moves in adaptive mode).
        shares = {n: {"share": w / total} for n, w in self.weights.items()}
        self.store.set_counters("operators", {n: {**s.as_dict(), **shares.get(n, {})} for n, s in self.stats.items()})
        if self.llm_client is not None:
            usage = {tag: dict(fields) for tag, fields in self._llm_base.items()}
            current = {"total": dict(self.llm_client.usage)}
            current.update({tag: dict(u) for tag, u in getattr(self.llm_client, "usage_by_tag", {}).items()})
            for tag, fields in current.items():  # a resumed run adds to what earlier sessions used
                merged = usage.setdefault(tag, {})
                for key, value in fields.items():
                    merged[key] = merged.get(key, 0) + value
            self.store.set_counters("llm", usage)

    def _open_progress(self) -> None:
        if not self.progress:
            return
        from tqdm.auto import tqdm

        self._bar = tqdm(total=self.budget, initial=self.finished, unit="eval", dynamic_ncols=True,
                         mininterval=0.5)
