"""Held-out validation of elites and the corrected QD score (``qd validate``).

A search score is optimistic: the archive keeps whatever scored best on the instances
the search used. :func:`validate` re-evaluates elites ``samples`` times on draws of the
domain's ``"validation"`` split (instances the search never saw), stores every
re-evaluation in the run store (``validations`` table; a later call reuses them), and
reports each elite's validated mean, standard error and gap (search score minus validated
score). When every elite is validated it also computes the corrected QD score and coverage
(Flageat & Cully 2023): each elite inserted by its validated mean objective and mean
measures into an empty archive of the same shape.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from qd.analysis.measuring import measure_result
from qd.domain import VALIDATION
from qd.evaluation import with_draw

if TYPE_CHECKING:
    from qd.domain import Domain
    from qd.result import EvalResult
    from qd.store import RunStore

__all__ = ["ValidatedElite", "ValidationReport", "validate", "validated_scores", "corrected_archive", "mean_sem",
           "archive_digest"]

META_KEY = "validation"


@dataclass
class ValidatedElite:
    """One elite's search score beside its held-out score."""

    id: int
    hash: str
    search_objective: float
    n: int
    mean: float
    sem: float
    measures: dict[str, float]

    @property
    def gap(self) -> float:
        """Search score minus validated score (positive: the search was optimistic)."""
        return self.search_objective - self.mean


@dataclass
class ValidationReport:
    """What :func:`validate` found (``summary()`` is what ``qd status --json`` shows)."""

    split: str
    samples: int
    elites: list[ValidatedElite]
    qd_score: float
    coverage: float
    corrected_qd_score: float | None
    corrected_coverage: float | None
    evaluations: int  # re-evaluations run by this call (the rest came from the store)
    failures: int

    def summary(self) -> dict[str, Any]:
        """Aggregate numbers, JSON-able."""
        gaps = [e.gap for e in self.elites if e.n]
        return {"split": self.split, "samples": self.samples, "elites": len(self.elites),
                "qd_score": self.qd_score, "coverage": self.coverage,
                "corrected_qd_score": self.corrected_qd_score, "corrected_coverage": self.corrected_coverage,
                "mean_gap": sum(gaps) / len(gaps) if gaps else None, "failures": self.failures,
                "time": time.time()}

    def as_dict(self) -> dict[str, Any]:
        """Summary plus one row per elite."""
        return {**self.summary(), "per_elite": [{**asdict(e), "gap": e.gap} for e in self.elites]}


def mean_sem(values: Sequence[float]) -> tuple[int, float, float]:
    """``(n, mean, standard error of the mean)`` of a non-empty sample (the error is NaN for one value)."""
    n = len(values)
    mean = sum(values) / n
    return n, mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n) if n > 1 else math.nan


def validated_scores(store: RunStore, split: str = VALIDATION,
                     samples: int | None = None) -> dict[str, tuple[int, float, float, dict[str, float]]]:
    """Stored held-out scores per config hash: ``(n, mean, standard error, mean measures)``.

    Only usable re-evaluations count; with ``samples``, only draws below it.
    """
    groups: dict[str, list[dict]] = {}
    for row in store.validations(split):
        if row["status"] == "ok" and math.isfinite(row["objective"]) and (samples is None or row["draw"] < samples):
            groups.setdefault(row["hash"], []).append(row)
    out = {}
    for h, rows in groups.items():
        n, mean, sem = mean_sem([r["objective"] for r in rows])
        names = set.intersection(*(set(r["measures"]) for r in rows))
        measures = {k: sum(float(r["measures"][k]) for r in rows) / n for k in sorted(names)}
        out[h] = (n, mean, sem, measures)
    return out


def corrected_archive(empty: Any, elites: Iterable[dict], scores: dict[str, tuple[int, float, float, dict]],
                      hash_of: Callable[[dict], str]) -> Any:
    """Insert every elite with a held-out score by its mean objective and mean measures into ``empty``.

    ``hash_of`` gives an elite's (an archive row's) config hash, the key of ``scores``. Returns
    ``empty`` (filled). Elites whose mean measures land in one cell keep the best mean.
    """
    names = list(empty.measure_names)
    for elite in elites:
        entry = scores.get(hash_of(elite))
        if entry is None or not all(n in entry[3] for n in names):
            continue
        values = [entry[3][n] for n in names]
        if math.isfinite(entry[1]) and all(math.isfinite(v) for v in values):
            empty.add_single(elite["solution"], entry[1], values, id=int(elite["id"]))
    return empty


def validate(store: RunStore, archive: Any, domain: Domain, evaluator: Any, *,
             measures: Sequence[Callable[[dict, EvalResult], float]], elites: Sequence[dict] | None = None,
             samples: int = 10, split: str = VALIDATION, empty_archive: Callable[[], Any] | None = None,
             timeout: float = 1.0) -> ValidationReport:
    """Re-evaluate elites on held-out draws and compare them with their search scores.

    Parameters
    ----------
    store : RunStore
        The run's store; re-evaluations are read from and written to its ``validations`` table.
    archive : ArchiveBase
        The run's archive (search scores).
    domain : Domain
        Must declare ``split`` in its ``splits``.
    evaluator : Evaluator
        Where re-evaluations run (``submit``/``collect``, as for the search).
    measures : sequence of callable
        Descriptor functions in archive order (``qd.analysis.resolve_measures``).
    elites : sequence of dict, optional
        Elites to validate (default: all of the archive's).
    samples : int
        Held-out re-evaluations per elite (draws ``0 .. samples-1`` of the split); at most the
        domain's ``validation_draws`` (a fixed held-out set with a deterministic score: one).
    split : str
        The held-out split.
    empty_archive : callable, optional
        Makes an empty archive of the run's shape; with it, and every elite validated, the
        corrected QD score and coverage are computed.
    timeout : float
        Seconds per ``collect`` wait.

    Raises
    ------
    ValueError
        When the domain has no such split, or ``samples`` < 1.
    """
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples!r}")
    if split not in domain.splits:
        raise ValueError(f"domain {domain.name!r} declares no {split!r} split (its splits: "
                         f"{', '.join(domain.splits)}); give it held-out instances: qd.FunctionDomain(..., "
                         f"validation=[...]), or, for a Domain class, list 'validation' in `splits` and "
                         f"accept evaluate(config, *, draw, split)")
    if domain.validation_draws is not None:  # further draws would repeat these: no need to pay for them
        samples = min(samples, int(domain.validation_draws))
    everyone = list(archive)
    chosen = everyone if elites is None else list(elites)
    space = domain.space
    names = list(archive.measure_names)
    done = {(r["hash"], r["draw"]) for r in store.validations(split)}
    jobs: dict[int, tuple[str, dict, int]] = {}
    for elite in chosen:
        h = space.hash(elite["solution"])
        for draw in range(samples):
            if (h, draw) not in done:
                jobs[len(jobs)] = (h, elite["solution"], draw)
                done.add((h, draw))
    for key, (_, config, draw) in jobs.items():
        evaluator.submit(key, with_draw(config, draw, split))
    failures = 0
    remaining = set(jobs)
    while remaining:
        for key, result in evaluator.collect(timeout):
            remaining.discard(key)
            h, config, draw = jobs[key]
            values = measure_result(config, result, measures, names)  # a failed measure marks the draw's result
            status = "invalid" if result.status == "ok" and not result.usable else result.status  # NaN objective
            failures += status != "ok"
            store.add_validation(h, split, draw, status, result.objective if status == "ok" else math.nan,
                                 values, result.scores)
    scores = validated_scores(store, split, samples)
    rows = []
    for elite in chosen:
        h = space.hash(elite["solution"])
        n, mean, sem, means = scores.get(h, (0, math.nan, math.nan, {}))
        rows.append(ValidatedElite(int(elite["id"]), h, float(elite["objective"]), n, mean, sem, means))
    stats = archive.stats
    corrected_qd = corrected_cov = None
    chosen_all = {int(e["id"]) for e in chosen} >= {int(e["id"]) for e in everyone}
    if empty_archive is not None and chosen_all:
        fixed = corrected_archive(empty_archive(), everyone, scores, lambda e: space.hash(e["solution"]))
        corrected_qd, corrected_cov = float(fixed.stats.qd_score), float(fixed.stats.coverage)
    report = ValidationReport(split, samples, rows, float(stats.qd_score), float(stats.coverage), corrected_qd,
                              corrected_cov, len(jobs), failures)
    previous = store.get_meta(META_KEY) or {}
    summary = report.summary()
    # The archive validated: `qd status` marks these numbers stale once the archive has changed (a resume).
    summary.update(archive=archive_digest(archive), evaluations=store.count())
    if corrected_qd is None and previous.get("corrected_qd_score") is not None \
            and previous.get("archive") == summary["archive"]:
        # A partial validation (--top, --diverse) keeps the corrected numbers of an earlier full one of this archive.
        for k in ("corrected_qd_score", "corrected_coverage"):
            summary[k] = previous[k]
    store.set_meta(META_KEY, summary)
    return report


def archive_digest(archive: Any) -> str:
    """sha256 of an archive's elites (id, objective and measures, by id): it changes whenever an elite does."""
    rows = sorted((int(e["id"]), float(e["objective"]), [float(m) for m in e["measures"]]) for e in archive)
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()
