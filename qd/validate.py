"""``qd validate``: held-out validation of a run directory's elites, and the columns it adds elsewhere.

The work is :func:`qd.analysis.validation.validate`; this module opens the run (its domain
included: validation runs the domain's code), builds the evaluator the run's config names,
and reads back what earlier validations stored for ``qd elites``, ``qd plot`` and ``qd status``.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qd.analysis.validation import (
    META_KEY,
    ValidationReport,
    archive_digest,
    corrected_archive,
    mean_sem,
    validate,
    validated_scores,
)
from qd.domain import VALIDATION

if TYPE_CHECKING:
    from qd.store import RunStore

__all__ = ["validate_run", "elite_columns", "validated_archive", "noise_status"]


def validate_run(run_dir: str | Path, *, top: int | None = None, diverse: int | None = None, samples: int = 10,
                 split: str = VALIDATION, backend: str | None = None) -> ValidationReport:
    """Re-score a run's elites (all, the ``top`` best, or ``diverse`` spread ones) on held-out draws.

    Parameters
    ----------
    run_dir : str or Path
        A run directory (``qd run --out``).
    top, diverse : int, optional
        Validate only these elites (the corrected QD score needs all of them).
    samples : int
        Held-out re-evaluations per elite.
    split : str
        The domain's held-out split.
    backend : str, optional
        A registered evaluator backend (default: the run's ``[evaluator] backend``).
    """
    from qd.analysis.descriptors import resolve_measures
    from qd.rundir import ARCHIVE_META, archive_from_spec
    from qd.runner import build_evaluator, open_run

    run = open_run(run_dir)
    try:
        if diverse is not None:
            elites = run.archive.diverse(diverse)
        elif top is not None:
            elites = run.archive.top(top)
        else:
            elites = None
        spec = run.store.get_meta(ARCHIVE_META)
        evaluator = build_evaluator(run.config, run.domain, backend)
        try:
            return validate(run.store, run.archive, run.domain, evaluator,
                            measures=resolve_measures(run.archive.measure_names, run.domain), elites=elites,
                            samples=samples, split=split,
                            empty_archive=(lambda: archive_from_spec(spec)) if spec is not None else None)
        finally:
            evaluator.close()
    finally:
        run.store.close()


def _elite_objectives(store: RunStore, ids: list[int]) -> dict[int, list[float]]:
    """Per elite id: the usable search objectives of its configuration (its re-evaluations included)."""
    found = store.objectives_of(ids)
    return {i: [f for _, status, f in rows if status == "ok" and math.isfinite(f)] for i, rows in found.items()}


def elite_columns(store: RunStore, archive: Any, split: str = VALIDATION,
                  ids: Iterable[int] | None = None) -> dict[int, dict[str, Any]]:
    """Columns ``qd elites`` adds per elite id (of the elites ``ids``, default all).

    ``n``, ``mean`` and ``sem``: its search evaluations (under noise the archive shows their
    posterior mean, ``qd.noise``); once validated, ``validated``, ``validated_n`` and ``gap``
    (search score minus validated score).
    """
    wanted = None if ids is None else {int(i) for i in ids}
    elites = [e for e in archive if wanted is None or int(e["id"]) in wanted]
    chosen = [int(e["id"]) for e in elites]
    objectives = _elite_objectives(store, chosen)
    held = validated_scores(store, split)
    hashes = store.hashes_of(chosen) if held else {}
    out: dict[int, dict[str, Any]] = {}
    for e in elites:
        i = int(e["id"])
        n, mean, sem = mean_sem(objectives[i]) if objectives.get(i) else (1, math.nan, math.nan)
        row: dict[str, Any] = {"n": n, "mean": None if math.isnan(mean) else mean,
                               "sem": None if math.isnan(sem) else sem}
        h = hashes.get(i)
        if h in held:
            vn, vmean, _, _ = held[h]
            row.update(validated=vmean, validated_n=vn, gap=float(e["objective"]) - vmean)
        out[i] = row
    return out


def validated_archive(store: RunStore, archive: Any, empty: Any, split: str = VALIDATION) -> Any:
    """``empty`` filled with the run's validated elites by validated mean objective and measures (for plots)."""
    hashes = store.hashes_of(int(e["id"]) for e in archive)
    return corrected_archive(empty, archive, validated_scores(store, split), lambda e: hashes.get(int(e["id"]), ""))


def noise_status(store: RunStore, archive: Any = None, evaluations: int | None = None) -> dict[str, Any]:
    """What ``qd status`` shows of noise handling and validation (empty parts omitted).

    With the run's ``archive``, the validation says whether it is ``stale``: the archive has
    changed since (a resume), so its corrected QD score and coverage describe another archive
    (None: validated by a qd that did not record the archive, or no archive given).
    ``evaluations``: the run's count, when already at hand.
    """
    out: dict[str, Any] = {}
    saved = store.get_meta("noise")
    if saved:
        counters = store.counters("noise").get("policy", {})
        total = store.count() if evaluations is None else evaluations
        resamples = int(counters.get("resamples", 0))
        out["noise"] = {"policy": saved["noise"], "samples": saved["noise_samples"], "probes": saved["noise_probes"],
                        "active": bool(counters.get("active", 0)), "resamples": resamples,
                        "resample_share": resamples / total if total else 0.0,
                        "elite_samples_mean": counters.get("elite_samples_mean"),
                        "noise_sd": counters.get("noise_sd") if counters.get("noise_sd", -1) >= 0 else None}
    validation = store.get_meta(META_KEY)
    if validation:
        recorded = validation.pop("archive", None)
        validation["stale"] = None if recorded is None or archive is None else recorded != archive_digest(archive)
        out["validation"] = validation
    return out
