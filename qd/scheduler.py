"""Ask/tell scheduling of MAP-Elites offspring, after pyribs's ``Scheduler``.

:class:`Scheduler` decides what to evaluate next and what to make of results: it draws an
operator by its (adaptive) weight, selects parents from the archive, validates and dedups the
children, hands out seed and random configurations first, and inserts results into the archive.
It knows nothing about evaluators, threads, run stores or progress bars; the search driver
(:class:`qd.search.Search`) owns those. See docs/architecture.md for how the two fit together.

Used alone it is a plain ask/tell loop::

    scheduler = Scheduler(archive, domain.space, {"iso_line_dd": (IsoLineDD(domain.space), 1.0)})
    for _ in range(1000):
        candidate = scheduler.ask()
        result = domain.evaluate(candidate.config)
        scheduler.tell(candidate, result.objective, [result.measures["x"], result.measures["y"]])

Every selection of an operator costs exactly one evaluation: its own child, or, when an LLM
operator's call fails or its output is invalid or a duplicate, a classic child made in its place
(operator ``fallback``). That is the denominator of the adaptive operator weights
(:mod:`qd.bandit`), so an operator pays for the offspring it wastes.

With ``filter``, every operator proposes ``proposals`` children per draw and the pre-evaluation
filter (:mod:`qd.prefilter`) keeps the one predicted to land where it helps most; the others are
counted (``filtered``) and never evaluated.

A space can run out of configurations that have not been evaluated. Random draws that keep
repeating evaluated ones are not taken for that: a finite space of at most ``ENUMERATE_LIMIT``
configurations is then listed (:meth:`qd.space.Space.value_at`) and a configuration drawn from
its unseen ones, so it is exhausted exactly when every configuration has been evaluated; any other
space goes on with the operators, and is given up only after ``MAX_MISSES`` rounds in a row of
random draws and operator children that all repeated. Then :attr:`Scheduler.exhausted` says why,
:meth:`Scheduler.propose` returns None and :meth:`Scheduler.ask` raises :class:`SpaceExhausted`.
"""
from __future__ import annotations

import collections
import hashlib
import math
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from qd.archives import AddStatus
from qd.bandit import BanditSettings, Judgement, adapt_shares
from qd.keyset import KeySet, key_of, key_of_bytes
from qd.noise import MAX_RESAMPLE_SHARE, RESAMPLE, Resample, insert_usable, make_handler
from qd.operators.base import Generation, Operator, Parent
from qd.operators.classic import Mutation
from qd.prefilter import CellFilter, MeasurePredictor
from qd.space import Layout, Param, Seq, Space, Text

__all__ = ["Scheduler", "SchedulerOptions", "Candidate", "GenerationJob", "OperatorStats", "SpaceExhausted",
           "SEED", "RANDOM", "FALLBACK", "ENUMERATE_LIMIT", "MAX_MISSES"]

_OPERATORS = object()  # _early_candidate: an operator's turn
SEED = "seed"          # a configuration given by the user (``seeds``), evaluated before anything else
RANDOM = "random"      # initial population, and the last resort when operators keep repeating configs
FALLBACK = "fallback"  # classic offspring in place of an LLM one (failed, invalid, duplicate, or LLM busy)
_MISSED = object()  # a try of Scheduler.propose that found no new configuration
_MAX_DUPLICATE_TRIES = 8
ENUMERATE_LIMIT = 100_000  # a finite space up to this size is listed when random draws keep repeating
MAX_MISSES = 8  # rounds in a row that found nothing new before a larger space is given up


class SpaceExhausted(RuntimeError):
    """No configuration that has not been evaluated can be made (the message says why)."""


@dataclass
class OperatorStats:
    """Counters of one operator (shown by ``qd status``)."""

    offspring: int = 0     # candidates the operator wrote (LLM: answers parsed, valid or not)
    valid: int = 0         # ... that passed Space.validate (after repair)
    duplicates: int = 0    # ... valid ones that repeated a config already seen (not evaluated)
    evaluated: int = 0     # offspring evaluated under this operator's name
    gains: int = 0         # evaluations that added a new cell or improved one
    spent: int = 0         # evaluations spent because this operator was chosen (own or fallback child)
    filtered: int = 0      # valid new candidates the pre-evaluation filter did not choose (not evaluated)
    llm_failures: int = 0  # LLM calls that failed after retries (or generations that raised)
    tokens: int = 0        # LLM tokens spent (in + out)
    time_s: float = 0.0    # wall time spent generating

    def as_dict(self) -> dict[str, float]:
        """The counters as a plain dict."""
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, fields: Mapping[str, Any]) -> OperatorStats:
        """Counters read back from :meth:`as_dict` (unknown keys, such as ``share``, are ignored)."""
        defaults = cls()
        return cls(**{k: type(getattr(defaults, k))(v) for k, v in fields.items() if hasattr(defaults, k)})


@dataclass
class SchedulerOptions:
    """How a :class:`Scheduler` chooses what to evaluate.

    Attributes
    ----------
    seed : int
        Seeds the scheduler's random generator (operator draws, parents, children).
    seeds : sequence of dict
        Configurations evaluated first, in order (e.g. the domain's default configuration).
    init_random : int
        Random configurations evaluated after the seeds, before operators start (may be 0).
    adaptive : bool
        Shift operator weights toward the best archive gain per evaluation and per 1k tokens,
        every ``adapt_every`` results; an operator that does not pay is held at ``bandit.floor``
        of the draws (:mod:`qd.bandit`).
    adapt_every : int
        Results between adaptive weight updates.
    target_rate : float
        Probability that an operator declaring ``accepts_target`` is asked to reach an empty
        archive region near its parent instead of only a higher objective.
    wait_for_llm : bool
        When an LLM operator is drawn while no LLM thread is free: ``False`` draws a classic
        operator instead, so evaluations never wait on the model; ``True`` keeps the draw until
        a thread frees, so every operator gets exactly its weight's share of evaluations.
    filter : bool or "auto"
        Propose several, evaluate one: every operator (classic or LLM) writes ``proposals``
        candidates per draw and :class:`~qd.prefilter.CellFilter` keeps the one predicted to fill
        an empty cell (the target's first), else the one predicted into the weakest elite's cell.
        ``"auto"`` is on here; a :class:`~qd.search.Search` settles it from the domain first (off
        for one that makes no calls, ``Domain.makes_calls = False``).
    proposals : int
        Candidates per draw under ``filter``.
    bandit : BanditSettings
        How the adaptive weights judge operators (floor, evaluations before judging, token price).
    noise : {"none", "auto", "adaptive"}
        Noise handling (``qd.noise``): results go through a
        :class:`~qd.noise.NoiseHandler`, and the re-evaluations it asks for come before new
        offspring (candidates of operator ``resample``).
    noise_samples : int
        Evaluations per configuration at most under the adaptive policy.
    noise_budget : int or None
        Evaluations the run will make (``Search`` sets its budget): sizes the noise probe and the
        verified top elites (:func:`qd.noise.probe_count`, :func:`qd.noise.top_count`); without
        one both take their largest size.
    noise_probes : int or None
        Configurations ``auto`` evaluates twice (default: sized by ``noise_budget``).
    noise_top : int or None
        Top elites verified with twice ``noise_samples`` (default: sized by ``noise_budget``).
    noise_share : float
        Re-evaluations at most per result recorded (``[archive] noise_share``; see :mod:`qd.noise`).
    """

    seed: int = 0
    seeds: Sequence[dict] = ()
    init_random: int = 100
    noise: str = "none"
    noise_samples: int = 5
    noise_budget: int | None = None
    noise_probes: int | None = None
    noise_top: int | None = None
    noise_share: float = MAX_RESAMPLE_SHARE
    adaptive: bool = False
    adapt_every: int = 20
    target_rate: float = 0.5
    wait_for_llm: bool = False
    filter: bool | str = False
    proposals: int = 4
    bandit: BanditSettings = field(default_factory=BanditSettings)


@dataclass
class Candidate:
    """A configuration (solution) the scheduler asks to have evaluated.

    Attributes
    ----------
    config : dict
        The configuration, valid for the space.
    key : int
        Its 64-bit dedup key (:mod:`qd.keyset`): of its canonical JSON, or of its :attr:`packed`
        bytes in a flat numeric space (:mod:`qd.space.packing`).
    operator : str
        What made it: an operator name, ``seed``, ``random`` or ``fallback``.
    parent_ids : list of int
        Evaluation ids of its parents (lineage).
    chosen_by : str
        The operator whose draw this evaluation is charged to (adaptive weights).
    packed : bytes or None
        Its bytes in a flat numeric space (:class:`qd.space.Layout`), which the run store keeps;
        None where the canonical JSON identifies it.
    canonical : str
        Its canonical JSON (made when first read where :attr:`packed` identifies it).
    hash : str
        The sha256 hex digest of :attr:`canonical` (likewise).
    """

    config: dict
    key: int
    operator: str
    parent_ids: list[int]
    chosen_by: str = ""
    submitted_at: float = 0.0
    draw: int = 0  # > 0: a re-evaluation on fresh instances or seeds (``qd.evaluation.with_draw``)
    packed: bytes | None = None
    space: Space | None = field(default=None, repr=False)  # makes canonical when it was not given
    _canonical: str | None = field(default=None, repr=False)
    _hash: str | None = field(default=None, repr=False)

    @property
    def canonical(self) -> str:
        """The canonical JSON (:meth:`qd.space.Space.canonical`)."""
        if self._canonical is None:
            assert self.space is not None, "a candidate needs its canonical JSON or its space"
            self._canonical = self.space.canonical(self.config)
        return self._canonical

    @property
    def hash(self) -> str:
        """The sha256 hex digest of :attr:`canonical` (:meth:`qd.space.Space.hash`)."""
        if self._hash is None:
            self._hash = Space.digest(self.canonical)
        return self._hash


@dataclass
class GenerationJob:
    """A call of an operator that waits on a language model, to run away from the scheduler.

    :meth:`run` may run in any thread; its :class:`~qd.operators.base.Generation` goes back to
    :meth:`Scheduler.complete`.
    """

    operator: str
    op: Operator
    parents: list[Parent]
    rng: np.random.Generator
    target: dict[str, float] | None = None
    proposals: int = 1
    started: float = field(default_factory=time.perf_counter)

    def run(self) -> Generation:
        """Call the operator; an exception (a bug, an unreachable model) is a failed generation."""
        try:
            if self.proposals > 1:
                return self.op.propose(self.parents, self.rng, self.proposals, self.target)
            if self.target is None:
                return self.op.generate(self.parents, self.rng)
            return self.op.generate(self.parents, self.rng, self.target)
        except Exception as exc:  # an operator failure costs one evaluation, not the run
            return Generation([], failed=True, error=f"{type(exc).__name__}: {exc}")


_STATUSES = {int(s): s for s in AddStatus}  # AddStatus by value, without the enum's call
_Identity = tuple[int, "bytes | None", "str | None", "str | None"]  # Scheduler._identity


def _has_text(param: Param) -> bool:
    """Whether a Text parameter is anywhere in ``param`` (inside Spaces and Seq items too)."""
    if isinstance(param, Space):
        return any(_has_text(p) for p in param.params.values())
    if isinstance(param, Seq):
        return _has_text(param.item)
    return isinstance(param, Text)


class Scheduler:
    """Ask/tell MAP-Elites over a configuration space.

    Parameters
    ----------
    archive : GridArchive or CVTArchive
        Receives every result told; parents are sampled from it.
    space : Space
        The configurations: children are validated, canonicalised and hashed with it.
    operators : mapping of str to (Operator, float)
        Operator instances (:class:`qd.operators.Operator` subclasses) with their weights.
    options : SchedulerOptions, optional
        Seeds, random initial samples, adaptive weights and the rest.
    predict : callable, optional
        The domain's static cost model, ``predict_measures(config) -> {measure: value}``: where
        the filter and the operators that ask for predictions (``uses_predictor``) get measures
        before evaluating; measures it does not give are learned from the run's results.
    """

    def __init__(self, archive: Any, space: Space, operators: Mapping[str, tuple[Operator, float]],
                 options: SchedulerOptions | None = None,
                 predict: Callable[[dict], Mapping[str, float] | None] | None = None):
        if not operators:
            raise ValueError("at least one operator with a positive weight is needed")
        for name, (op, _) in operators.items():
            if not isinstance(op, Operator):
                raise TypeError(f"operator {name!r} is a {type(op).__name__}; operators must subclass "
                                "qd.operators.Operator")
        weights = [w for _, w in operators.values()]
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError("operator weights must be non-negative with a positive sum")
        self.archive, self.space = archive, space
        self.options = options or SchedulerOptions()
        self.rng = np.random.default_rng(self.options.seed)
        self.measure_names = list(archive.measure_names)
        self.operators = {name: op for name, (op, _) in operators.items()}
        self.base_weights = {name: float(w) for name, (_, w) in operators.items()}
        self.weights = dict(self.base_weights)
        self._classic_names = [n for n, op in self.operators.items() if not op.uses_llm]
        self._fallback = self.operators[self._classic_names[0]] if self._classic_names else Mutation(space)
        self.stats: dict[str, OperatorStats] = collections.defaultdict(OperatorStats)
        self._seeds = collections.deque(self._check_seeds(self.options.seeds))
        self.layout = Layout.of(space)  # None: configurations are identified by their canonical JSON
        distinct_seeds = len({self.dedup_key(config) for config in self._seeds})
        self._random_until = distinct_seeds + int(self.options.init_random)
        self._seen = KeySet()  # dedup keys (Candidate.key) of every configuration handed out
        self._asked = 0
        self._told = 0
        self._pending: str | None = None  # an LLM operator drawn while every LLM thread was busy
        o = self.options
        self.noise = make_handler(archive, o.noise, samples=o.noise_samples, probes=o.noise_probes, top=o.noise_top,
                                  budget=o.noise_budget, share=o.noise_share)
        self._resampled = 0  # re-evaluations asked (they take no seed's or random sample's turn)
        self._raised: set[str] = set()  # operators whose exception was reported
        self.exhausted: str | None = None  # why no new configuration can be made, once that is so
        self._misses = 0  # rounds in a row in which random draws and operators found nothing new
        self._space_size = space.cardinality()
        self._all_keys: np.ndarray | None = None  # every configuration's dedup key (a small finite space)
        if self.options.filter and int(self.options.proposals) < 1:
            raise ValueError(f"proposals must be >= 1, got {self.options.proposals}")
        self.predictor = MeasurePredictor(space, self.measure_names, predict)
        self.prefilter = CellFilter(archive, self.predictor) if self.options.filter else None  # "auto": on
        self._uses_predictor = False  # an operator reads predictions: results teach the predictor however filtered
        for op in self.operators.values():
            if getattr(op, "uses_predictor", False):
                op.predict_measures = self.predict_measures
                self._uses_predictor = True
        self.judgements: dict[str, Judgement] = {}  # the adaptive weights' verdicts (qd status)

    # -- state ---------------------------------------------------------------------------------
    @property
    def told(self) -> int:
        """Results told so far (including those of earlier sessions given to :meth:`resume`)."""
        return self._told

    @property
    def in_flight(self) -> int:
        """Candidates handed out and not told yet."""
        return self._asked - self._told

    def predict_measures(self, config: dict) -> dict[str, float] | None:
        """Measures ``config`` is predicted to get (by name), or None while they cannot be predicted."""
        values = self.predictor.predict(config)
        return None if values is None else dict(zip(self.measure_names, values))

    @property
    def predictor_learns(self) -> bool:
        """Whether results teach the measure predictor (the filter or an operator uses it)."""
        return self.prefilter is not None or self._uses_predictor

    def learn(self, config: dict, measures: Sequence[float]) -> None:
        """Let the learned predictor see one result (``tell`` does; a resume replays the stored ones)."""
        if self.predictor_learns:
            self.predictor.learn(config, measures)

    def resume(self, seen: KeySet | Iterable[str], stats: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        """Continue after earlier evaluations: their dedup keys (or config hashes), and the operator counters saved.

        Given hashes (:meth:`qd.space.Space.hash`), the scheduler identifies configurations by their
        canonical JSON from then on, as those hashes do.

        The archive must already hold their results (``qd.archive_store``). Seeds already
        evaluated are not asked again. The random generator continues on a fresh stream derived
        from ``seed`` and the stored history (so a resumed session never re-draws the samples of
        the first one, and resuming the same store twice continues the same way).
        """
        if not isinstance(seen, KeySet):  # hashes identify configurations by their canonical JSON
            self.layout = None
            seen = KeySet(key_of(h) for h in seen)
        seen.update(self._seen.array())
        self._seen = seen
        self._asked = self._told = len(seen)
        if len(seen):  # a fresh store keeps the stream of ``seed``: same run with or without a store
            history = hashlib.sha256(seen.array().tobytes()).digest()
            self.rng = np.random.default_rng([int(self.options.seed) % 2**64, len(seen),
                                              int.from_bytes(history[:8], "little")])
        for name, fields in (stats or {}).items():
            self.stats[name] = OperatorStats.from_dict(fields)
        self._seeds = collections.deque(s for s in self._seeds if self.dedup_key(s) not in self._seen)
        if self.options.adaptive:
            self._adapt_weights()  # resume with the weights the counters imply

    # -- ask -----------------------------------------------------------------------------------
    def ask(self) -> Candidate:
        """The next candidate to evaluate; LLM operators generate in the caller's thread.

        Raises
        ------
        SpaceExhausted
            When no configuration that has not been evaluated can be made (:attr:`exhausted`).
        """
        item = self.propose()
        if isinstance(item, GenerationJob):
            item = self.complete(item, item.run())
        while item is None and not self.exhausted:  # a plain loop does not wait for results: sample
            item = self._random_candidate()
        if item is None:
            raise SpaceExhausted(self.exhausted)
        return item

    def propose(self, llm_free: bool = True) -> Candidate | GenerationJob | None:
        """The next candidate, or a generation for the caller to run, or None to wait.

        Parameters
        ----------
        llm_free : bool
            Whether a thread is free for an LLM operator's generation. When none is, the draw
            goes to a classic operator, or (``wait_for_llm``) is kept and None returned.

        Returns
        -------
        Candidate or GenerationJob or None
            A :class:`GenerationJob` when an operator that uses an LLM was drawn: run it and
            give its result to :meth:`complete`. None when nothing can be made until results
            (or a free LLM thread) arrive, or when nothing new can be made at all
            (:attr:`exhausted`; re-evaluations asked by the noise policy still come).
        """
        early = self._early_candidate()
        if early is not _OPERATORS:
            return early
        while not self.exhausted:
            item = self._propose_offspring(llm_free)
            if item is not _MISSED:
                return item
        return None

    def _propose_offspring(self, llm_free: bool) -> Candidate | GenerationJob | None | object:
        """One try of :meth:`propose` after seeds and random samples; ``_MISSED`` when it found nothing new."""
        if len(self.archive) == 0:
            # Operators need an elite: wait for the seeds and samples in flight, else sample more.
            if self.in_flight > 0:
                return None
            return self._random_candidate() or _MISSED
        name = self._pending or self._choose_operator()
        op = self.operators[name]
        if op.uses_llm and not llm_free:
            if self.options.wait_for_llm:
                # Keep the draw until an LLM thread is free: drawing again would hand the slot to
                # a (fast) classic operator, and LLM operators would get less than their weight.
                self._pending = name
                return None
            name, op = self._classic_standin()
        self._pending = None
        parents = self._select_parents(op.num_parents)
        if op.uses_llm:
            child_rng = np.random.default_rng(self.rng.integers(2**63))
            target = None
            if op.accepts_target and self.rng.random() < self.options.target_rate:
                target = self.target_region(parents[0])
            if getattr(op, "parents_near_target", False):
                # the target first, then its neighbourhood as the context (or the first parent's)
                parents = self.neighbours(target or parents[0].measures, op.num_parents, parents[0])
            return GenerationJob(name, op, parents, child_rng, target, self._proposals())
        child = self._classic_child(name, op, parents)
        if child is None:
            return _MISSED
        child.chosen_by = name
        return child

    def _early_candidate(self) -> Candidate | object:
        """What comes before operators: a re-evaluation, a seed, an initial random sample.

        :data:`_OPERATORS` when it is an operator's turn (also when random draws keep repeating
        evaluated configurations: operators take over).
        """
        if self.noise is not None:
            job = self.noise.ask()
            if job is not None:
                return self._resample_candidate(job)
        while self._seeds:
            child = self._admit(SEED, self._seeds.popleft(), [])
            if child is not None:
                child.chosen_by = SEED
                return child
        if self._asked - self._resampled < self._random_until:
            child = self._random_candidate()
            if child is not None:
                return child
            self._random_until = self._asked - self._resampled  # random draws repeat: operators take over
        return _OPERATORS

    def ask_many(self, n: int) -> list[Candidate]:
        """Up to ``n`` candidates at once (fewer while results must come back first), for classic operators.

        The batch form of :meth:`propose`: re-evaluations, seeds and initial samples first, then
        operator children, whose operators are drawn together and whose parents are sampled in
        one call, each operator making all its children in one :meth:`Operator.generate_many`
        (vectorized by Gaussian and Iso+LineDD).

        Fewer than ``n`` also when the space runs out (none once :attr:`exhausted`; re-evaluations
        asked by the noise policy still come).

        Raises
        ------
        TypeError
            When an operator uses an LLM (its generations run in the driver's threads: use
            :meth:`propose`).
        """
        if any(op.uses_llm for op in self.operators.values()):
            raise TypeError("ask_many() is for classic operators; with LLM operators use propose()")
        out: list[Candidate] = []
        while len(out) < n:
            early = self._early_candidate()
            if early is not _OPERATORS:
                out.append(early)  # type: ignore[arg-type]
                continue
            if self.exhausted:
                break
            if len(self.archive) == 0:
                # Operators need an elite: wait for the seeds and samples in flight, else sample more.
                if self.in_flight > 0:
                    break
                child = self._random_candidate()  # None: a miss, counted towards exhausted
                if child is not None:
                    out.append(child)
                continue
            children = self._operator_children(n - len(out))
            out.extend(children)
            if len(out) < n and not self.exhausted:
                continue  # some children found nothing new: draw again, as propose() would
            break
        return out

    def _operator_children(self, n: int) -> list[Candidate]:
        """``n`` operator children: operators drawn by weight, each making its children in one call."""
        names = self._choose_operators(n)
        out: list[Candidate] = []
        if self.prefilter is not None:  # each draw proposes several for the filter: one at a time
            for name in names:
                op = self.operators[name]
                child = self._classic_child(name, op, self._select_parents(op.num_parents))
                if child is not None:
                    child.chosen_by = name
                    out.append(child)
            return out
        for name in dict.fromkeys(names):
            op = self.operators[name]
            count = names.count(name)
            start = time.perf_counter()
            groups = self._select_parent_groups(op.num_parents, count)
            stats = self.stats[name]
            for parents, configs in zip(groups, op.generate_many(groups, self.rng)):
                stats.offspring += len(configs)
                child = self._pick(name, configs, parents)
                if child is None:  # every child invalid or seen: try again as one call would
                    stats.time_s += time.perf_counter() - start
                    start = time.perf_counter()
                    child = self._classic_child(name, op, parents)
                if child is None:  # nothing new (a miss, counted towards exhausted)
                    continue
                child.chosen_by = name
                out.append(child)
            stats.time_s += time.perf_counter() - start
        return out

    def complete(self, job: GenerationJob, generation: Generation) -> Candidate | None:
        """The candidate a finished generation gives: its first new valid child, else a classic one.

        Under ``filter`` the child is the filter's choice among the generation's new valid ones.
        None when no new configuration can be made any more (:attr:`exhausted`).
        """
        configs = self.account(job, generation)
        child = self._pick(job.operator, configs, job.parents, job.target)
        while child is None and not self.exhausted:
            child = self._classic_child(FALLBACK, self._fallback, job.parents)
        if child is not None:
            child.chosen_by = job.operator
        return child

    def account(self, job: GenerationJob, generation: Generation) -> list[dict]:
        """Count one finished generation (time, tokens, failure or offspring); returns its configs.

        A failed call is an LLM failure, not an offspring; an answer with no valid configuration
        is an invalid offspring.
        """
        stats = self.stats[job.operator]
        stats.time_s += time.perf_counter() - job.started
        stats.tokens += int(generation.tokens)
        configs = list(generation.configs)
        if generation.failed:
            stats.llm_failures += 1
            if generation.error and job.operator not in self._raised:  # a bug, not a model's failure: say so once
                self._raised.add(job.operator)
                tqdm.write(f"qd: warning: operator {job.operator!r} raised {generation.error[:500]}; its "
                           "generations count as failed", file=sys.stderr)
        else:
            stats.offspring += max(1, len(configs))
        return configs

    def discard(self, job: GenerationJob, generation: Generation) -> None:
        """Count a generation that finished after the budget: validity and duplicates, no child."""
        for config in self.account(job, generation):
            self._admit(job.operator, config, job.parents, mark_seen=False)

    # -- tell ----------------------------------------------------------------------------------
    def tell(self, candidate: Candidate, objective: float | None, measures: Sequence[float] | None, *,
             id: int | None = None, feedback: str = "") -> AddStatus:
        """Insert one result into the archive and update the operator counters and weights.

        Parameters
        ----------
        candidate : Candidate
            What :meth:`ask` or :meth:`complete` returned.
        objective : float or None
            Objective value; None for an evaluation without a usable result (counted, not inserted).
        measures : sequence of float or None
            Measure values in the archive's order; None as for ``objective``.
        id : int, optional
            Evaluation id stored with the elite (default: the number of results told before).
        feedback : str
            The evaluation's text feedback, stored with the elite.

        Returns
        -------
        AddStatus
            What the archive did with the result (``NOT_ADDED`` for one without a usable result).
        """
        statuses, _ = self.tell_many([candidate], [objective], [measures], ids=None if id is None else [id],
                                     feedback=[feedback])
        return statuses[0]

    def tell_many(self, candidates: Sequence[Candidate], objectives: Sequence[float | None],
                  measures: Sequence[Sequence[float] | None], *, ids: Sequence[int] | None = None,
                  feedback: Sequence[str] | None = None) -> tuple[list[AddStatus], list[int | None]]:
        """Insert many results, exactly as :meth:`tell` one after another would.

        Without a noise policy (or once ``auto`` found no noise) the usable results enter the
        archive in one ``add_in_order``. Arguments are :meth:`tell`'s, one entry per result.

        Returns
        -------
        statuses : list of AddStatus
            What the archive did with each result.
        seqs : list of int or None
            The noise policy's count of recorded results after each one (None without a policy):
            the order a replay follows (``RunStore.add_sample``).
        """
        n = len(candidates)
        if ids is None:  # a plain ask/tell loop: ids number the results from 0
            ids = range(self._told, self._told + n)
        feedback = [""] * n if feedback is None else feedback
        if self.noise is not None:
            statuses, seqs = self.noise.record_many(
                [c.config for c in candidates], objectives, measures, hash_of=lambda j: candidates[j].hash, ids=ids,
                feedback=feedback, draws=[c.draw for c in candidates],
                resampled=[c.operator == RESAMPLE for c in candidates])
        else:
            statuses = insert_usable(self.archive, [c.config for c in candidates], objectives, measures, ids=ids,
                                     feedback=feedback)
            seqs = [None] * n
        adapt_every = max(1, int(self.options.adapt_every))
        learns = self.predictor_learns
        every_result = learns or self.options.adaptive
        all_stats = self.stats
        for j, c in enumerate(candidates):
            stats = all_stats[c.operator]
            stats.evaluated += 1
            if statuses[j] > 0:
                stats.gains += 1
            all_stats[c.chosen_by or c.operator].spent += 1
            if every_result:
                self._told += 1
                if learns and objectives[j] is not None and measures[j] is not None:
                    self.predictor.learn(c.config, measures[j])  # type: ignore[arg-type]
                if self.options.adaptive and self._told % adapt_every == 0:
                    self._adapt_weights()
        if not every_result:
            self._told += n
        return [_STATUSES[s] for s in statuses], seqs

    def shares(self) -> dict[str, float]:
        """The current probability of drawing each operator (moves in adaptive mode)."""
        total = sum(self.weights.values())
        return {n: w / total for n, w in self.weights.items()}

    # -- internals -----------------------------------------------------------------------------
    def _check_seeds(self, seeds: Sequence[dict]) -> list[dict]:
        checked = []
        for i, config in enumerate(seeds):
            problems = self.space.validate(config)
            if problems:
                raise ValueError(f"seed {i} is not a valid configuration: {'; '.join(problems)}")
            checked.append(config)
        return checked

    def _resample_candidate(self, job: Resample) -> Candidate:
        """A re-evaluation the noise handler asked for (operator ``resample``, lineage: the config's first id)."""
        self._asked += 1
        self._resampled += 1
        key, packed, canonical, _ = self._identity(job.config)
        return Candidate(job.config, key, RESAMPLE, [job.id], chosen_by=RESAMPLE, draw=job.draw, packed=packed,
                         space=self.space, _canonical=canonical, _hash=job.hash)

    def _random_candidate(self) -> Candidate | None:
        """A random configuration not evaluated yet; None when draws keep repeating (see :meth:`_unseen_candidate`)."""
        if self.exhausted:
            return None
        stats = self.stats[RANDOM]
        for _ in range(10 * _MAX_DUPLICATE_TRIES):
            stats.offspring += 1
            child = self._admit(RANDOM, self.space.sample(self.rng), [])
            if child is not None:
                child.chosen_by = RANDOM
                return child
        return self._unseen_candidate()

    def _unseen_candidate(self) -> Candidate | None:
        """After random draws that all repeated: one drawn from a small space's unseen configurations, listed.

        None when there is none (the space is exhausted: :attr:`exhausted` says so) or when the
        space is too large to list (a miss: :attr:`exhausted` is set after ``MAX_MISSES`` in a row).
        """
        size = self._space_size
        if size <= ENUMERATE_LIMIT:
            if self._all_keys is None:
                self._all_keys = np.fromiter((self.dedup_key(self.space.value_at(i)) for i in range(size)),
                                             dtype=np.int64, count=int(size))
            unseen = np.flatnonzero(~self._seen.contains_many(self._all_keys)).tolist()
            if not unseen:
                self.exhausted = f"all {size} configurations of the space have been evaluated"
                return None
            child = self._admit(RANDOM, self.space.value_at(unseen[int(self.rng.integers(len(unseen)))]), [])
            if child is not None:
                child.chosen_by = RANDOM
            return child
        self._misses += 1
        if self._misses >= MAX_MISSES:
            count = "infinitely many" if size == math.inf else str(size)
            hint = ("; random draws leave Text parameters at their default: an operator that edits text (mutation, "
                    "llm_mutation) reaches more" if _has_text(self.space) else "")
            self.exhausted = (f"no configuration that has not been evaluated could be found: random draws and the "
                              f"operators' children repeated evaluated ones {MAX_MISSES} times in a row "
                              f"({len(self._seen)} evaluated of {count}){hint}")
        return None

    def _classic_standin(self) -> tuple[str, Operator]:
        """A classic operator drawn by the classic weights, for a slot no LLM thread can fill now.

        With no classic operator configured, the fallback mutation stands in (as ``fallback``).
        """
        names = [n for n in self._classic_names if self.weights[n] > 0]
        if not names:
            return FALLBACK, self._fallback
        name = self._choose_operator(names)
        return name, self.operators[name]

    def _proposals(self) -> int:
        """Candidates an operator writes per draw: ``proposals`` under ``filter``, else one."""
        return int(self.options.proposals) if self.prefilter is not None else 1

    def _classic_child(self, name: str, op: Operator, parents: list[Parent]) -> Candidate | None:
        start = time.perf_counter()
        stats = self.stats[name]
        for _ in range(_MAX_DUPLICATE_TRIES):
            n = self._proposals()
            configs = (op.propose(parents, self.rng, n) if n > 1 else op.generate(parents, self.rng)).configs
            stats.offspring += len(configs)
            child = self._pick(name, configs, parents)
            if child is not None:
                stats.time_s += time.perf_counter() - start
                return child
        stats.time_s += time.perf_counter() - start
        return self._random_candidate()

    def _pick(self, name: str, configs: Sequence[dict], parents: Sequence[Parent],
              target: Mapping[str, float] | None = None) -> Candidate | None:
        """The candidate to evaluate among ``configs``: the first new valid one, or the filter's choice.

        Every config is counted (valid, duplicate); under ``filter`` the new valid ones the
        filter does not choose are counted as ``filtered`` and stay unseen (never evaluated).
        """
        if self.prefilter is None:
            return next((c for c in (self._admit(name, cfg, parents) for cfg in configs) if c is not None), None)
        fresh: dict[int, tuple[dict, _Identity]] = {}
        for config in configs:
            screened = self._screen(name, config)
            if screened is None:
                continue
            if screened[0] in fresh:  # the operator wrote it twice in one go
                self.stats[name].duplicates += 1
                continue
            fresh[screened[0]] = (config, screened)
        if not fresh:
            return None
        choices = list(fresh.values())
        config, screened = choices[self.prefilter.choose([c for c, _ in choices], target)]
        self.stats[name].filtered += len(choices) - 1
        return self._take(name, config, screened, parents)

    def dedup_key(self, config: dict) -> int:
        """The dedup key of a valid configuration (:attr:`Candidate.key`)."""
        return self._identity(config)[0]

    def use_layout(self, layout: Layout | None) -> None:
        """Identify configurations by ``layout``'s bytes, or by their canonical JSON (None).

        A resumed run keeps the identity its store was written with (``qd.search``); call it
        before :meth:`resume` and before anything is asked.
        """
        self.layout = layout

    def _identity(self, config: dict) -> _Identity:
        """``(key, packed bytes, canonical JSON, hash)`` of a valid configuration (what is not made is None)."""
        if self.layout is not None:
            packed = self.layout.pack(config)
            return key_of_bytes(packed), packed, None, None
        canonical = self.space.canonical(config)
        digest = self.space.digest(canonical)
        return key_of(digest), None, canonical, digest

    def _screen(self, name: str, config: dict) -> _Identity | None:
        """The identity of a valid configuration not seen before; counts valid and duplicates."""
        stats = self.stats[name]
        if self.space.validate(config):
            return None
        stats.valid += 1
        identity = self._identity(config)
        if identity[0] in self._seen:
            stats.duplicates += 1
            return None
        return identity

    def _take(self, name: str, config: dict, identity: _Identity, parents: Sequence[Parent]) -> Candidate:
        """Mark a screened configuration seen and asked; its candidate."""
        key, packed, canonical, digest = identity
        self._seen.add_unseen(key)  # _screen found it missing
        self._asked += 1
        self._misses = 0
        return Candidate(config, key, name, [p.id for p in parents if p.id is not None], packed=packed,
                         space=self.space, _canonical=canonical, _hash=digest)

    def _admit(self, name: str, config: dict, parents: Sequence[Parent], mark_seen: bool = True) -> Candidate | None:
        """Validate and dedup one candidate; count what happened to it.

        Returns the candidate, now asked (or None, also when ``mark_seen`` is false: counting only).
        """
        screened = self._screen(name, config)
        if screened is None or not mark_seen:
            return None
        return self._take(name, config, screened, parents)

    def _choose_operator(self, names: list[str] | None = None) -> str:
        """An operator name drawn by the current weights (among ``names``, default all)."""
        names = list(self.weights) if names is None else names
        if len(names) == 1:
            return names[0]
        weights = np.array([self.weights[n] for n in names])
        return names[int(self.rng.choice(len(names), p=weights / weights.sum()))]

    def _choose_operators(self, n: int) -> list[str]:
        """``n`` operator names drawn by the current weights, in one draw."""
        names = list(self.weights)
        if len(names) == 1:
            return names * n
        weights = np.array([self.weights[name] for name in names])
        return [names[i] for i in self.rng.choice(len(names), size=n, p=weights / weights.sum()).tolist()]

    def _select_parent_groups(self, k: int, groups: int) -> list[list[Parent]]:
        """``groups`` lists of ``k`` parents, sampled in one call."""
        parents = self._parents(self.archive.sample_elites(k * groups, rng=self.rng))
        return [parents[g * k:(g + 1) * k] for g in range(groups)]

    def _select_parents(self, k: int) -> list[Parent]:
        """``k`` elites as parents."""
        return self._select_parent_groups(k, 1)[0]

    def _parents(self, elites: Mapping[str, Any], rows: Sequence[int] | None = None) -> list[Parent]:
        """Rows of an archive's fields (every row without ``rows``) as parents.

        An archive filled by plain ``add`` has no ``feedback`` or ``id`` field (a warm start): its
        parents have none (an id of -1, an elite added without one, is none too).
        """
        index = np.arange(len(elites["objective"])) if rows is None else np.asarray(rows, dtype=np.intp)
        solutions, feedback, ids = elites["solution"], elites.get("feedback"), elites.get("id")
        objectives = np.asarray(elites["objective"], dtype=float)[index].tolist()
        measures = np.asarray(elites["measures"], dtype=float)[index].tolist()
        texts = [None] * len(index) if feedback is None else np.asarray(feedback, dtype=object)[index].tolist()
        numbers = [-1] * len(index) if ids is None else np.asarray(ids)[index].tolist()
        return [Parent(solutions[i], objective, dict(zip(self.measure_names, m)),
                       feedback="" if text is None else str(text), id=None if number < 0 else int(number))
                for i, objective, m, text, number in zip(index.tolist(), objectives, measures, texts, numbers)]

    def neighbours(self, point: Mapping[str, float], k: int, first: Parent) -> list[Parent]:
        """The ``k`` elites nearest ``point`` in measure space (ranges scaled to 1), nearest first.

        ``first`` (the elite the point was drawn near) is always one of them: the context is its
        neighbourhood even where elites crowd elsewhere.
        """
        elites = self.archive.data([f for f in ("solution", "objective", "measures", "feedback", "id")
                                    if f in self.archive.field_list])
        span = np.where(self.archive.interval_size > 0, self.archive.interval_size, 1.0)
        goal = np.array([float(point[n]) for n in self.measure_names])
        distance = np.max(np.abs((elites["measures"] - goal) / span), axis=1)
        order = [int(i) for i in np.argsort(distance, kind="stable")]
        rows = [i for i in order if first.id is None or int(elites["id"][i]) != first.id][: max(k - 1, 0)]
        return [first, *self._parents(elites, rows)]

    def target_region(self, parent: Parent) -> dict[str, float] | None:
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

    def _adapt_weights(self) -> None:
        """Weights from :func:`qd.bandit.adapt_shares`: gains per evaluation charged and per 1k tokens.

        Evaluations are those charged to the operator (``spent``: its own children plus the
        fallbacks that replaced its invalid, duplicate or failed ones); an operator that does not
        pay keeps the floor share only (:attr:`judgements` says which).
        """
        self.judgements = adapt_shares(self.base_weights, self.stats, self.options.bandit)
        self.weights = {name: j.share for name, j in self.judgements.items()}
