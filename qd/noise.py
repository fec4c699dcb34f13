"""Scores you can trust under noise: repeated evaluation and adaptive sampling of elites.

An evaluation of a noisy domain (an LLM pipeline scored on a few questions, a seeded
simulation) is one draw of a random score. Plain MAP-Elites keeps whatever scored
best once, so a configuration that got lucky holds its cell for ever. This module
decides, per result, what enters the archive and which configurations must be
evaluated again on fresh instances or seeds (draw ``k`` of the domain, see
:func:`qd.domain.evaluate_draw`); see ``docs/noise.md``.

Policies (``[archive] noise``):

``"none"``
    Plain MAP-Elites: one evaluation per configuration (no :class:`NoiseHandler`).
``"adaptive"``
    Adaptive sampling (after Justesen et al. 2019), from the first evaluation:

    - every configuration keeps its number of evaluations ``n``, mean objective, standard
      error and mean measures (:class:`SampleStats`); its cell is the one of its mean measures
      and the archive shows its posterior mean (:meth:`NoiseHandler.shown`; its mean until the
      run has a prior), written again under the current prior as results double and when the
      search ends (:meth:`NoiseHandler.refresh`);
    - a candidate whose cell is taken takes it when its **posterior mean** is higher than the
      incumbent's (:func:`decide`): each mean shrunk towards the mean of the run's first
      evaluations by its standard error (empirical Bayes, :func:`posterior_mean`), so one lucky
      evaluation does not displace an elite whose score several evaluations established, and
      among configurations with as many evaluations the higher mean wins, as in plain
      MAP-Elites. A challenger whose mean is higher but whose posterior mean is not is
      evaluated again (one per cell at a time, up to ``samples``) and decided again; contests
      settled by re-evaluating both sides cost more coverage and elite quality than they
      bought (``docs/noise.md``);
    - every configuration enters with one evaluation (coverage costs no more than plain
      MAP-Elites), but an elite whose mean is among the archive's ``top`` best (one per 100
      evaluations of the budget, 1 to 10) is evaluated again up to ``top_samples`` times (twice
      ``samples``), so the elites a user reads first are the ones whose scores are best
      established.
``"auto"`` (default)
    Starts as plain MAP-Elites and evaluates the first few configurations (2% of the budget,
    at least 1, at most 8) a second time on a fresh draw; when a repeated objective or measure
    differs, the ``adaptive`` policy takes over from the archive as it is, otherwise the run
    stays plain.

Every re-evaluation is an evaluation of the budget, and at most about half of the budget goes
to them (:data:`MAX_RESAMPLE_SHARE`), less while new configurations still find empty cells: each
result adds ``MAX_RESAMPLE_SHARE`` times the share of recent new configurations that did *not*
land in an empty cell to the re-evaluations allowed, so a search re-evaluates in proportion to
how little exploring still pays. Wanted re-evaluations wait while the allowance is spent.
Standard errors use a pooled
within-configuration variance (shrunk towards each configuration's own; :meth:`NoiseHandler._pool`
says which draws pool), so one evaluation already has an error estimate once the noise is known.
"""
from __future__ import annotations

import collections
import heapq
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["POLICIES", "RESAMPLE", "MAX_RESAMPLE_SHARE", "SampleStats", "Resample", "Prior", "NoiseHandler",
           "decide", "posterior_mean", "probe_count", "top_count", "make_handler", "insert_usable", "TAKE", "REJECT",
           "SAMPLE_CHALLENGER", "RULE"]

POLICIES: tuple[str, ...] = ("auto", "none", "adaptive")
RESAMPLE = "resample"  # operator name of re-evaluations (store rows, counters)

TAKE, REJECT, SAMPLE_CHALLENGER = "take", "reject", "sample_challenger"
RULE = "posterior"  # the decision rule a run's store records: an earlier qd settled contests by re-evaluation

_PRIOR_DOF = 2.0        # pseudo degrees of freedom of the pooled variance in each configuration's estimate
_MAX_FAILURES = 2       # failed re-evaluations of one configuration before it is sampled no more
_TOP_REFRESH = 32       # records between recomputations of the top-elite cut
MAX_RESAMPLE_SHARE = 0.5  # re-evaluations handed out at most per result recorded: the search keeps exploring
_NEW_CELL_WINDOW = 50    # first evaluations over which the share that found an empty cell is averaged
_MIN_PRIOR = 8           # first evaluations before their spread is trusted as a prior
_FIRST_REFRESH = 16      # results before the elites are first written again under the current prior


@dataclass
class SampleStats:
    """Running statistics of one configuration's evaluations (Welford).

    Attributes
    ----------
    n : int
        Usable evaluations.
    mean : float
        Mean objective.
    m2 : float
        Sum of squared deviations from the mean.
    measures : list of float
        Mean measures (archive order).
    draws : int
        Draws handed out so far; the next re-evaluation uses draw ``draws``.
    failures : int
        Re-evaluations that returned no usable result.
    """

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0
    measures: list[float] = field(default_factory=list)
    draws: int = 0
    failures: int = 0

    def add(self, objective: float, measures: Sequence[float]) -> float:
        """Add one evaluation; returns the increase of ``m2`` (for a pooled variance)."""
        self.n += 1
        delta = objective - self.mean
        self.mean += delta / self.n
        increase = delta * (objective - self.mean)
        self.m2 += increase
        if self.n == 1:
            self.measures = [float(m) for m in measures]
        else:
            self.measures = [m + (float(v) - m) / self.n for m, v in zip(self.measures, measures)]
        return increase

    @property
    def variance(self) -> float:
        """Sample variance of the objective (NaN below two evaluations)."""
        return self.m2 / (self.n - 1) if self.n > 1 else math.nan


@dataclass(frozen=True)
class Prior:
    """What the run knows of its configurations' true objectives before evaluating one more time.

    Attributes
    ----------
    mean : float
        Mean first objective of the run's configurations.
    spread : float
        Variance of their true objectives: that of the first objectives less ``noise``.
    noise : float
        Objective variance of one evaluation, pooled over configurations evaluated more than once.
    """

    mean: float
    spread: float
    noise: float


@dataclass
class Resample:
    """A re-evaluation the search should run: ``config`` on draw ``draw`` (see ``qd.evaluation.with_draw``)."""

    hash: str
    config: dict
    draw: int
    id: int  # evaluation id of the configuration's first evaluation (its identity as an elite)


def probe_count(budget: int | None) -> int:
    """Configurations ``auto`` evaluates twice: 2% of the budget, at least 1, at most 8 (8 without a budget)."""
    return 8 if budget is None else max(1, min(8, int(budget) // 50))


def top_count(budget: int | None) -> int:
    """Top elites verified up to ``top_samples``: 1 per 100 evaluations of the budget, 1 to 10 (10 without one).

    Verification is for the few elites a user reads first; with a fixed count a small run
    (the 40-evaluation demo, 10 elites) would spend most of its budget re-evaluating.
    """
    return 10 if budget is None else max(1, min(10, int(budget) // 100))


def make_handler(archive: Any, policy: str, *, samples: int = 5, probes: int | None = None,
                 top: int | None = None, budget: int | None = None,
                 share: float = MAX_RESAMPLE_SHARE) -> NoiseHandler | None:
    """The handler of ``[archive] noise = policy`` (None for ``"none"``).

    Raises
    ------
    ValueError
        For an unknown policy name.
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown noise policy {policy!r}; allowed: {', '.join(POLICIES)}")
    if policy == "none":
        return None
    return NoiseHandler(archive, policy, budget=budget, samples=samples, probes=probes, top=top, share=share)


def posterior_mean(stats: SampleStats, prior: Prior) -> float:
    """Expected true objective of a configuration given its evaluations (empirical Bayes).

    Its mean shrunk towards ``prior.mean`` by the share of its spread that noise explains:
    ``prior.mean + (mean - prior.mean) * prior.spread / (prior.spread + prior.noise / n)``.

    Parameters
    ----------
    stats : SampleStats
        The configuration's evaluations (``n >= 1``).
    prior : Prior
        The run's spread of true objectives and its noise.
    """
    error = prior.noise / stats.n
    if error <= 0:
        return stats.mean
    return prior.mean + (stats.mean - prior.mean) * prior.spread / (prior.spread + error)


def decide(challenger: SampleStats, incumbent: SampleStats, *, prior: Prior | None, max_samples: int) -> str:
    """What to do with a challenger for an occupied cell.

    Parameters
    ----------
    challenger, incumbent : SampleStats
        Their evaluations so far.
    prior : Prior or None
        The run's spread of true objectives and its noise; None while the noise is not known
        yet (then the means are compared, as plain MAP-Elites compares objectives).
    max_samples : int
        Evaluations of a challenger at most.

    Returns
    -------
    str
        :data:`TAKE` when the challenger's posterior mean (:func:`posterior_mean`) is higher
        than the incumbent's; :data:`SAMPLE_CHALLENGER` (evaluate it again, then decide again)
        when only its mean is higher and it has fewer than ``max_samples`` evaluations; else
        :data:`REJECT`.

    Notes
    -----
    The higher posterior mean is the higher expected true objective given every evaluation
    made. Between configurations with as many evaluations it is the higher mean (one noise
    level serves all: a configuration's own variance from a few evaluations is itself mostly
    noise); a mean of many evaluations is shrunk less than a single one, so one lucky draw
    does not displace an elite that several evaluations established, but earns another look.
    """
    if prior is None:
        return TAKE if challenger.mean > incumbent.mean else REJECT
    if posterior_mean(challenger, prior) > posterior_mean(incumbent, prior):
        return TAKE
    if challenger.mean > incumbent.mean and challenger.n < max_samples:
        return SAMPLE_CHALLENGER
    return REJECT


def _differs(a: float, b: float) -> bool:
    return abs(a - b) > 1e-9 * max(1.0, abs(a), abs(b))


def insert_usable(archive: Any, configs: Sequence[dict], objectives: Sequence[float | None],
                  measures: Sequence[Sequence[float] | None], *, ids: Sequence[int],
                  feedback: Sequence[str]) -> list[int]:
    """Insert the usable results (objective and measures given) into ``archive`` in one ``add_in_order``.

    Returns each result's archive gain: 0 none (and for an unusable result), 1 a cell improved,
    2 a new cell.
    """
    rows = [j for j in range(len(configs)) if objectives[j] is not None and measures[j] is not None]
    statuses = [0] * len(configs)
    if rows:
        gained = archive.add_in_order([configs[j] for j in rows], [objectives[j] for j in rows],
                                      [list(measures[j]) for j in rows],  # type: ignore[arg-type]
                                      id=[ids[j] for j in rows], feedback=[feedback[j] for j in rows]).tolist()
        for j, status in zip(rows, gained):
            statuses[j] = int(status)
    return statuses


class NoiseHandler:
    """Decides what enters the archive under noise and which configurations to evaluate again.

    The scheduler gives it every usable result (:meth:`record`) instead of inserting into the
    archive itself, reports re-evaluations that failed (:meth:`failed`), and runs the
    re-evaluations :meth:`ask` returns before making new offspring.

    Parameters
    ----------
    archive : ArchiveBase
        The search's archive (plain MAP-Elites thresholds: ``learning_rate`` 1).
    policy : {"auto", "adaptive"}
        See the module docstring (``"none"`` needs no handler).
    budget : int, optional
        Evaluations of the run: sizes the ``auto`` probe and the top elites (without one, as an
        ask/tell loop has none, both take their largest size).
    samples : int
        Evaluations per configuration at most (adaptive policy).
    top : int, optional
        Elites with the best means that are evaluated up to ``top_samples`` times (default
        :func:`top_count` of ``budget``).
    top_samples : int, optional
        Evaluations of a top elite at most (default ``2 * samples``): the elites a user reads
        first carry the least selection bias (winner's curse).
    probes : int, optional
        Configurations ``auto`` evaluates twice (default :func:`probe_count`).
    share : float
        Re-evaluations allowed at most per result recorded (default :data:`MAX_RESAMPLE_SHARE`),
        less while new configurations still find empty cells (the module docstring).
    """

    def __init__(self, archive: Any, policy: str = "auto", *, budget: int | None = None, samples: int = 5,
                 top: int | None = None, top_samples: int | None = None, probes: int | None = None,
                 share: float = MAX_RESAMPLE_SHARE):
        if policy not in ("auto", "adaptive"):
            raise ValueError(f"noise policy must be 'auto' or 'adaptive' for a NoiseHandler, got {policy!r} "
                             f"(allowed values of archive.noise: {', '.join(POLICIES)})")
        if int(samples) < 1:
            raise ValueError(f"noise samples must be >= 1, got {samples!r}")
        if not 0 < float(share) <= 1:
            raise ValueError(f"noise share must be in (0, 1], got {share!r}")
        self.share = float(share)
        if getattr(archive, "learning_rate", 1.0) != 1.0:
            raise ValueError("archive.noise needs plain MAP-Elites thresholds: remove archive.learning_rate "
                             "or set archive.noise = \"none\"")
        self.archive = archive
        self.policy = policy
        self.max_samples = int(samples)
        self.top = top_count(budget) if top is None else max(0, int(top))
        self.top_samples = max(self.max_samples, 2 * self.max_samples if top_samples is None else int(top_samples))
        self.mode = "on" if policy == "adaptive" else "probing"
        self.probes = probe_count(budget) if probes is None else max(0, int(probes))
        self.stats: dict[str, SampleStats] = {}
        self.configs: dict[str, dict] = {}
        self.ids: dict[str, int] = {}
        self.feedback: dict[str, str] = {}
        self.holder: dict[int, str] = {}
        self.cell_of: dict[str, int] = {}
        self._elite_n: dict[str, int] = {}  # evaluations of each elite when it was last written
        self._elite_n_sum = 0               # their sum: counters() stays O(1) (it runs per evaluation)
        self._wanted: dict[str, None] = {}  # ordered set: configurations to evaluate again
        self._inflight: collections.Counter[str] = collections.Counter()
        self._probed: list[str] = []
        self._probe_first: dict[str, tuple[float, list[float]]] = {}
        self._probes_back = 0
        self._pooled_m2, self._pooled_dof = 0.0, 0
        self._later: dict[str, SampleStats] = {}  # re-evaluations of configurations chosen on their draws
        self._first_objectives = SampleStats()  # the first objective of every configuration recorded (Prior)
        self._next_refresh = _FIRST_REFRESH
        self._waiting: dict[int, str] = {}       # cell -> the challenger to evaluate again before deciding
        self._waiting_cell: dict[str, int] = {}  # its inverse
        self._top_cut = -math.inf
        self._since_top = 0
        self.seq = 0              # results recorded (the order a replay must follow)
        self.resamples = 0        # re-evaluations handed out (probes included)
        self._touched: set[str] = set()  # configurations whose part may have ended in this call (see _prune)
        self.allowance = self.share  # re-evaluations allowed so far (see the module docstring)
        self.new_cell_rate = 1.0  # recent share of first evaluations that landed in an empty cell
        self._firsts = 0          # first evaluations recorded
        if self.mode == "probing" and self.probes == 0:
            self.mode = "off"

    # -- state ---------------------------------------------------------------------------------
    @property
    def plain(self) -> bool:
        """True once ``auto`` found no noise: results go straight into the archive (:meth:`record_plain`)."""
        return self.mode == "off"

    @property
    def active(self) -> bool:
        """True while the adaptive policy decides (``auto`` after detecting noise)."""
        return self.mode == "on"

    def counters(self) -> dict[str, float]:
        """Numbers for ``qd status`` (store counters scope ``noise``)."""
        return {"active": float(self.active), "probing": float(self.mode == "probing"),
                "resamples": float(self.resamples), "probes": float(len(self._probed)),
                "samples_max": float(self.max_samples),
                "elite_samples_mean": self._elite_n_sum / len(self.cell_of) if self.cell_of else 0.0,
                "noise_sd": math.sqrt(self.pooled_variance) if math.isfinite(self.pooled_variance) else -1.0}

    @property
    def pooled_variance(self) -> float:
        """Within-configuration variance of one evaluation, pooled over configurations (inf if unknown)."""
        return self._pooled_m2 / self._pooled_dof if self._pooled_dof else math.inf

    def variance(self, stats: SampleStats) -> float:
        """Variance of one evaluation of this configuration: its own, shrunk towards the pooled one."""
        pooled = self.pooled_variance
        if not math.isfinite(pooled):
            return math.inf
        return (stats.m2 + _PRIOR_DOF * pooled) / (stats.n - 1 + _PRIOR_DOF)

    @property
    def prior(self) -> Prior | None:
        """The run's spread of true objectives and its noise (None while the noise is unknown).

        The spread is the variance of the first objectives less the noise, at least a thousandth
        of the noise. The noise is known once a probe was evaluated twice or another
        configuration three times (:meth:`_pool`).
        """
        first, noise = self._first_objectives, self.pooled_variance
        if first.n < _MIN_PRIOR or not math.isfinite(noise):
            return None
        return Prior(first.mean, max(first.variance - noise, 1e-3 * noise), noise)

    def sem(self, hash: str) -> float:
        """Standard error of the mean objective of configuration ``hash``."""
        s = self.stats[hash]
        return math.sqrt(self.variance(s) / s.n) if s.n else math.inf

    def elite_stats(self) -> dict[int, tuple[int, float, float]]:
        """Per elite, by the evaluation id of its first evaluation: ``(n, mean, standard error)``."""
        return {self.ids[h]: (self.stats[h].n, self.stats[h].mean, self.sem(h)) for h in self.cell_of}

    # -- the scheduler's calls -----------------------------------------------------------------
    def ask(self) -> Resample | None:
        """The next re-evaluation to run, or None.

        None also while the re-evaluations handed out reach :attr:`allowance`: the wanted ones wait,
        and the search makes new configurations meanwhile, so at most about half of any budget goes
        to re-evaluation, and less while new configurations keep finding empty cells.
        """
        if self.resamples >= self.allowance:
            return None
        while self._wanted:
            h = next(iter(self._wanted))
            del self._wanted[h]
            if self._inflight[h] or not self._needs_sample(h):
                self._touched.add(h)  # no longer wanted: it may no longer matter
                self._prune()
                continue
            s = self.stats[h]
            self._inflight[h] += 1
            draw = max(s.draws, 1)
            s.draws = draw + 1
            self.resamples += 1
            return Resample(h, self.configs[h], draw, self.ids[h])
        return None

    def record(self, hash: str, config: dict, objective: float, measures: Sequence[float], *, id: int,
               feedback: str = "", draw: int = 0) -> int:
        """One usable evaluation of ``config`` (its first, or a re-evaluation on ``draw``).

        Returns
        -------
        int
            The archive gain it caused: 0 none, 1 a cell improved (or taken from an incumbent),
            2 a new cell.
        """
        if not math.isfinite(objective) or not all(math.isfinite(m) for m in measures):
            raise ValueError(f"a usable result needs a finite objective and measures, got {objective!r} and "
                             f"{list(measures)!r}")
        status = self._record_one(hash, config, objective, measures, id, feedback, draw)
        if draw == 0:  # a new configuration: did exploring find an empty cell?
            self._firsts += 1
            self.new_cell_rate += (float(status == 2) - self.new_cell_rate) / min(self._firsts, _NEW_CELL_WINDOW)
        self.allowance += self.share * (1.0 - self.new_cell_rate)
        return status

    def _record_one(self, hash: str, config: dict, objective: float, measures: Sequence[float], id: int,
                    feedback: str, draw: int) -> int:
        self.seq += 1
        if self.mode == "off":
            return self._plain(hash, config, objective, measures, id, feedback)
        self._landed(hash)
        self._wanted.pop(hash, None)  # a replayed re-evaluation fulfils the request it answered
        self._touched.add(hash)
        try:
            status = self._record(hash, config, objective, measures, id, feedback, draw)
            if self.mode == "on" and self.seq >= self._next_refresh:  # doubling: O(elites × log results) in all
                self._next_refresh = 2 * self.seq
                self.refresh()
            return status
        finally:
            self._prune()

    def _record(self, hash: str, config: dict, objective: float, measures: Sequence[float], id: int, feedback: str,
                draw: int) -> int:
        s = self.stats.get(hash)
        first = s is None
        if first:
            s = self.stats[hash] = SampleStats()
            self.configs[hash], self.ids[hash], self.feedback[hash] = config, int(id), feedback
            self._first_objectives.add(float(objective), ())
        s.draws = max(s.draws, int(draw) + 1)
        increase = s.add(float(objective), measures)
        if s.n > 1:
            self._pool(hash, float(objective), increase)
        if self.mode == "probing":
            return self._probe(hash, objective, measures, first, id, feedback)
        return self._settle(hash)

    def record_plain(self, configs: Sequence[dict], objectives: Sequence[float | None],
                     measures: Sequence[Sequence[float] | None], *, ids: Sequence[int],
                     feedback: Sequence[str]) -> list[int]:
        """First evaluations while :attr:`plain`, the usable ones inserted at once; each one's archive gain.

        What :meth:`record` does for each usable one in turn (:func:`insert_usable`).
        """
        if not self.plain:
            raise RuntimeError("record_plain() is for a policy that found no noise (mode off)")
        statuses = insert_usable(self.archive, configs, objectives, measures, ids=ids, feedback=feedback)
        self.seq += sum(objectives[j] is not None and measures[j] is not None for j in range(len(configs)))
        return statuses

    def record_many(self, configs: Sequence[dict], objectives: Sequence[float | None],
                    measures: Sequence[Sequence[float] | None], *, hash_of: Callable[[int], str], ids: Sequence[int],
                    feedback: Sequence[str], draws: Sequence[int],
                    resampled: Sequence[bool]) -> tuple[list[int], list[int]]:
        """Results in order, as :meth:`record` and :meth:`failed` would take them one after another.

        A usable result is recorded, an unusable re-evaluation failed; any other unusable result
        changes nothing. While :attr:`plain` and none is a re-evaluation, the usable ones enter the archive in one
        ``add_in_order`` (:meth:`record_plain`) and no hash is asked for.

        Parameters
        ----------
        hash_of : callable
            Result ``j``'s configuration hash (asked only when the policy keeps state).
        resampled : sequence of bool
            Whether result ``j`` is a re-evaluation the policy asked for.

        Returns
        -------
        statuses : list of int
            Each result's archive gain (0 for an unusable one).
        seqs : list of int
            :attr:`seq` after each result: the order a replay follows.
        """
        n = len(configs)
        statuses, seqs = [0] * n, [0] * n
        usable = [objectives[j] is not None and measures[j] is not None for j in range(n)]
        if self.plain and not any(resampled):
            seq = self.seq
            statuses = self.record_plain(configs, objectives, measures, ids=ids, feedback=feedback)
            for j in range(n):
                seq += usable[j]
                seqs[j] = seq
            return statuses, seqs
        for j in range(n):
            if usable[j]:
                statuses[j] = self.record(hash_of(j), configs[j], objectives[j], list(measures[j]),  # type: ignore
                                          id=ids[j], feedback=feedback[j], draw=draws[j])
            elif resampled[j]:
                self.failed(hash_of(j))
            seqs[j] = self.seq
        return statuses, seqs

    def failed(self, hash: str) -> None:
        """A re-evaluation of ``hash`` returned no usable result (error, timeout, bad measures)."""
        self.seq += 1
        self.allowance += self.share * (1.0 - self.new_cell_rate)
        self._landed(hash)
        s = self.stats.get(hash)
        if s is None:
            return
        self._touched.add(hash)
        try:
            self._failed(hash, s)
        finally:
            self._prune()

    def _failed(self, hash: str, s: SampleStats) -> None:
        s.failures += 1
        if self.mode == "probing" and hash in self._probe_first:
            self._probe_back(differs=False)
        elif self.mode == "on" and s.failures <= _MAX_FAILURES:
            self._want(hash)
        else:  # sampled no more; a replay (no asks) still holds it as wanted: drop it as the run did
            self._unwait(hash)
            self._wanted.pop(hash, None)

    def _landed(self, hash: str) -> None:
        """A re-evaluation of ``hash`` that was handed out came back (or one replayed)."""
        if self._inflight[hash]:
            self._inflight[hash] -= 1
            if not self._inflight[hash]:
                del self._inflight[hash]

    def _prune(self) -> None:
        """Forget the configurations touched by this call that can no longer matter.

        One matters while it holds a cell, waits to challenge one, is wanted or being re-evaluated, or is
        a probe not yet back; anything else is never evaluated again, so the policy keeps state for
        about as many configurations as the archive has cells, not one per evaluation. A replay
        prunes at the same points: a re-evaluation still out in the live run is still wanted in
        the replay (:meth:`ask` never runs there), so no pruned configuration ever comes back.
        """
        for h in self._touched:
            if (h in self.cell_of or h in self._waiting_cell or h in self._wanted or self._inflight[h]
                    or h in self._probe_first):
                continue
            self.stats.pop(h, None)
            self._later.pop(h, None)
            self.configs.pop(h, None)
            self.ids.pop(h, None)
            self.feedback.pop(h, None)
        self._touched.clear()

    # -- auto: probing -------------------------------------------------------------------------
    def _probe(self, hash: str, objective: float, measures: Sequence[float], first: bool, id: int,
               feedback: str) -> int:
        if first:
            status = self._plain(hash, self.configs[hash], objective, measures, id, feedback)
            if len(self._probed) < self.probes:
                self._probed.append(hash)
                self._probe_first[hash] = (float(objective), [float(m) for m in measures])
                self._want(hash)
            return status
        before = self._probe_first.get(hash)
        differs = before is not None and (_differs(before[0], objective)
                                          or any(_differs(a, b) for a, b in zip(before[1], measures)))
        self._probe_back(differs)
        if self.mode == "on":
            return self._settle(hash)
        return 0

    def _probe_back(self, differs: bool) -> None:
        self._probes_back += 1
        if differs:
            self.mode = "on"  # the archive as plain MAP-Elites left it is the policy's starting point
            self.refresh()
        elif self._probes_back >= len(self._probed) and len(self._probed) >= self.probes:
            self.mode = "off"
            self._wanted.clear()
            self.stats.clear()  # a deterministic run needs no statistics
            self._later.clear()
            self.configs.clear()
            self.holder.clear()
            self.cell_of.clear()
            self._elite_n.clear()
            self._elite_n_sum = 0

    def _plain(self, hash: str, config: dict, objective: float, measures: Sequence[float], id: int,
               feedback: str) -> int:
        """Plain MAP-Elites insertion (bookkeeping of holders kept while probing)."""
        out = self.archive.add_single(config, objective, list(measures), id=id, feedback=feedback)
        status = int(out["status"])
        if status > 0 and self.mode == "probing":
            cell = self.archive.index_of_single(list(measures))
            old = self.holder.get(cell)
            if old is not None:
                self._touched.add(old)
                self.cell_of.pop(old, None)
                self._untrack(old)
            self.holder[cell], self.cell_of[hash] = hash, cell
            self._track(hash)
        return status

    def _pool(self, hash: str, objective: float, increase: float) -> None:
        """Add a re-evaluation of ``hash`` to the pooled noise (``increase``: the rise of its ``m2``).

        A probe was re-evaluated whatever it scored, so all its draws pool. Any other configuration
        is evaluated again because its draws ranked it high (an elite, a challenger), which makes
        its first draw a lucky one: only its later draws pool, around their own mean (pooled with
        the first they overstated the noise by a third on the arm's 10×10 map). Who gets a further
        draw still depends on the draws before it, so on large maps the estimate still runs high,
        less so. When no configuration can get two later draws (``top_samples`` < 3) all draws pool.
        """
        if hash in self._probe_first or self.top_samples < 3:
            self._pooled_m2 += increase
            self._pooled_dof += 1
            return
        later = self._later.get(hash)
        if later is None:
            later = self._later[hash] = SampleStats()
        rise = later.add(objective, ())
        if later.n > 1:
            self._pooled_m2 += rise
            self._pooled_dof += 1

    # -- adaptive sampling ---------------------------------------------------------------------
    def _cell(self, hash: str) -> int:
        return int(self.archive.index_of_single(self.stats[hash].measures))

    def _settle(self, hash: str) -> int:
        """Place configuration ``hash`` after a new evaluation of it."""
        cell = self._cell(hash)
        old = self.cell_of.get(hash)
        if old is not None:
            if old == cell:
                self._put(cell, hash)
                self._verify_top(hash)
                return 0
            self._vacate(old)
        return self._contest(hash, cell)

    def _contest(self, hash: str, cell: int) -> int:
        self._touched.add(hash)
        self._unwait(hash)
        incumbent = self.holder.get(cell)
        if incumbent is None:
            self._put(cell, hash)
            self._verify_top(hash)
            return 2
        s, t = self.stats[hash], self.stats[incumbent]
        action = decide(s, t, prior=self.prior, max_samples=self.max_samples)
        if action == SAMPLE_CHALLENGER:
            self._wait(hash, cell)
        if action != TAKE:
            return 0
        self._vacate(cell)
        self._put(cell, hash)
        self._verify_top(hash)
        return 1

    def shown(self, hash: str) -> float:
        """The objective the archive shows for configuration ``hash``: its posterior mean (its mean without a prior)."""
        s, prior = self.stats[hash], self.prior
        return s.mean if prior is None else posterior_mean(s, prior)

    def _put(self, cell: int, hash: str) -> None:
        """Write configuration ``hash`` into ``cell`` with its shown objective and mean measures."""
        s = self.stats[hash]
        if self.holder.get(cell) is not None:
            self.archive.remove_single(cell)
        self.archive.add_single(self.configs[hash], self.shown(hash), s.measures, id=self.ids[hash],
                                feedback=self.feedback[hash])
        self.holder[cell], self.cell_of[hash] = hash, cell
        self._track(hash)

    def refresh(self) -> None:
        """Write every elite again under the current prior (it moves as the run learns its spread).

        The policy does so as its results double; a search does so once more when it ends.
        """
        for cell, hash in list(self.holder.items()):
            self._put(cell, hash)

    def _track(self, hash: str) -> None:
        n = self.stats[hash].n
        self._elite_n_sum += n - self._elite_n.get(hash, 0)
        self._elite_n[hash] = n

    def _untrack(self, hash: str) -> None:
        self._elite_n_sum -= self._elite_n.pop(hash, 0)

    def _vacate(self, cell: int) -> None:
        """Empty ``cell``; its holder leaves the archive for good (it is sampled no more)."""
        h = self.holder.pop(cell, None)
        if h is not None:
            self._touched.add(h)
            self.cell_of.pop(h, None)
            self._untrack(h)
            self.archive.remove_single(cell)

    def _wait(self, hash: str, cell: int) -> None:
        """Evaluate challenger ``hash`` of ``cell`` again, then decide again.

        One challenger waits per cell at a time (a later one is dropped), so the policy's memory
        follows the archive however many challengers a cell draws.
        """
        if cell not in self._waiting:
            self._waiting[cell], self._waiting_cell[hash] = hash, cell
            self._want(hash)

    def _unwait(self, hash: str) -> None:
        cell = self._waiting_cell.pop(hash, None)
        if cell is not None:
            del self._waiting[cell]

    def _limit_of(self, hash: str) -> int:
        """Evaluations ``hash`` may get: ``top_samples`` while it is a top elite, else ``samples``."""
        if hash in self.cell_of and self.stats[hash].mean >= self._top_cut:
            return self.top_samples
        return self.max_samples

    def _want(self, hash: str) -> None:
        if not self._inflight[hash] and self.stats[hash].n < self._limit_of(hash):
            self._wanted[hash] = None

    def _needs_sample(self, hash: str) -> bool:
        s = self.stats.get(hash)
        if s is None or s.n >= self._limit_of(hash) or s.failures > _MAX_FAILURES:
            return False
        if self.mode == "probing":
            return hash in self._probe_first and s.n == 1
        return hash in self.cell_of or hash in self._waiting_cell

    def _verify_top(self, hash: str) -> None:
        """Evaluate an elite again while its mean is among the ``top`` best and it has fewer than ``top_samples``."""
        if not self.top or self.stats[hash].n >= self.top_samples:
            return
        self._since_top += 1
        if self._since_top >= _TOP_REFRESH or len(self.cell_of) <= self.top:
            self._since_top = 0
            means = (self.stats[h].mean for h in self.cell_of)
            best = heapq.nlargest(self.top, means)
            self._top_cut = best[-1] if len(best) >= self.top else -math.inf
        if self.stats[hash].mean >= self._top_cut:
            self._want(hash)

    # -- resume --------------------------------------------------------------------------------
    def replay(self, rows: Iterable[tuple[Any, tuple[int, int] | None]], measure_names: Sequence[str]) -> None:
        """Rebuild the state (and the archive) from stored evaluations.

        Parameters
        ----------
        rows : iterable of (EvaluationRow, (draw, seq) or None)
            Every stored evaluation in the order the handler recorded them, with its sample
            (``RunStore.evaluations_in_seq_order()``); read as it is consumed.
        measure_names : sequence of str
            The archive's measures, in order.

        Notes
        -----
        Results are replayed in the order the handler recorded them, so the archive, every
        configuration's samples, and the prior are those of the interrupted run (the elites as
        it last wrote them: ``qd.archive_store.replay`` then writes them under the last prior,
        :meth:`refresh`, as a finished run ends);
        re-evaluations that were in flight are asked again. Once the policy is :attr:`plain`, rows
        are inserted in chunks (:meth:`record_plain`), as the run inserted them.
        """
        plain: list[tuple[Any, list[float]]] = []
        for row, info in rows:
            self.resamples += row.operator == RESAMPLE
            draw = info[0] if info is not None else 0
            values: list[float] = []
            usable = row.status == "ok" and math.isfinite(row.fitness)
            if usable:
                try:
                    values = [float(row.measures[n]) for n in measure_names]
                except (KeyError, TypeError, ValueError):
                    usable = False
            usable = usable and all(math.isfinite(v) for v in values)
            if usable and self.plain and row.operator != RESAMPLE:
                plain.append((row, values))
                if len(plain) >= 4096:
                    self._replay_plain(plain)
                continue
            self._replay_plain(plain)
            if usable:
                original = self.ids.get(row.hash, row.id)
                self.record(row.hash, row.config, row.fitness, values, id=original, feedback=row.feedback, draw=draw)
            elif row.operator == RESAMPLE:
                self.failed(row.hash)
        self._replay_plain(plain)
        self._inflight.clear()

    def _replay_plain(self, plain: list[tuple[Any, list[float]]]) -> None:
        if plain:
            self.record_plain([r.config for r, _ in plain], [r.fitness for r, _ in plain], [v for _, v in plain],
                              ids=[r.id for r, _ in plain], feedback=[r.feedback for r, _ in plain])
            plain.clear()
