"""Picking elites out of a finished run: the ones that span the map, flat records, other maps.

What ``qd run`` prints at the end, ``qd elites`` lists and ``qd plot --measures`` draws, as
functions of an archive (and the run store) that scripts can call too.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from qd.archives import GridArchive

if TYPE_CHECKING:
    from qd.store import RunStore

__all__ = ["spanning_elites", "select_elites", "archive_over"]


def spanning_elites(archive: Any, objective_name: str = "objective", near: float = 0.1,
                    max_front: int = 6) -> list[tuple[str, dict]]:
    """Elites that span the map's trade-offs, labelled, in print order.

    Parameters
    ----------
    archive : archive
        Any archive with ``top()`` and ``measure_names``.
    objective_name : str
        Used in the labels.
    near : float
        "Near-best" means an objective within ``near * |best|`` of the best.
    max_front : int
        Most front elites listed.

    Returns
    -------
    list of (str, dict)
        ``best <objective>`` (ties go to the lowest measures: the cheapest of the best); for each
        measure, ``lowest <measure>, <objective> >= cutoff`` (the cheapest near-best elite, e.g.
        the fewest LLM calls that still answer accurately); then the front of the first measure
        against the objective (``<measure> vs <objective> front``: each step buys a higher
        objective with more of the first measure). An elite picked twice is listed once.
    """
    elites = archive.top()
    if not elites:
        return []
    names = list(archive.measure_names)

    def cheap(e: dict) -> tuple:
        return tuple(float(v) for v in e["measures"])

    top_value = max(e["objective"] for e in elites)
    best = min((e for e in elites if e["objective"] == top_value), key=cheap)
    picks: list[tuple[str, dict]] = [(f"best {objective_name}", best)]
    cutoff = top_value - near * abs(top_value)
    good = [e for e in elites if e["objective"] >= cutoff]
    for i, name in enumerate(names):
        pick = min(good, key=lambda e, i=i: (float(e["measures"][i]), -e["objective"], cheap(e)))
        picks.append((f"lowest {name}, {objective_name} >= {cutoff:.3g}", pick))
    # The front starts above the QD-score offset (the objective's floor): a cheap elite that never
    # succeeds (accuracy 0) is no trade-off.
    offset = getattr(archive, "qd_score_offset", None)
    front, level = [], -math.inf if offset is None else float(offset)
    for e in sorted(elites, key=lambda e: (float(e["measures"][0]), -e["objective"])):
        if e["objective"] > level:
            front.append(e)
            level = e["objective"]
    if len(front) > max_front:  # keep both ends and an even spread between them
        keep = sorted({round(j * (len(front) - 1) / (max_front - 1)) for j in range(max_front)})
        front = [front[j] for j in keep]
    picks += [(f"{names[0]} vs {objective_name} front", e) for e in front]
    merged: dict[int, tuple[list[str], dict]] = {}
    for label, e in picks:
        merged.setdefault(int(e["id"]), ([], e))[0].append(label)
    out = []
    for labels, e in merged.values():
        front_only = [lab for lab in labels if not lab.endswith(" front")]
        out.append(("; ".join(front_only or labels), e))
    return out


def select_elites(archive: Any, *, top: int | None = None, diverse: int | None = None,
                  where: str | None = None) -> list[dict]:
    """Elites of ``archive`` as flat records, filtered by ``where`` then cut by ``top`` or ``diverse``."""
    names = archive.measure_names
    if diverse is not None:
        elites = archive.diverse(diverse, where=where)
    else:
        elites = archive.top(top, where=where)
    return [{"id": int(e["id"]), "objective": float(e["objective"]),
             **{n: float(v) for n, v in zip(names, e["measures"])}, "config": e["solution"],
             "feedback": str(e.get("feedback") or "")} for e in elites]


def archive_over(store: RunStore, names: list[str], like: Any) -> GridArchive:
    """A grid archive of the run's configurations over other stored measures.

    Each configuration enters once, with its mean objective and mean measures over its usable
    evaluations (its re-evaluations under noise included, as the run's own archive holds it).

    Parameters
    ----------
    store : RunStore
        The run's evaluations.
    names : list of str
        At least two measures stored with the evaluations.
    like : archive
        The run's archive: the new one takes its objective name and QD-score offset.

    Raises
    ------
    ValueError
        Naming the unknown measures and the stored ones, or when no evaluation is usable.
    """
    rows = [r for r in store.evaluations(status="ok") if math.isfinite(r.fitness)]
    if not rows:
        raise ValueError("the run has no usable evaluation (status ok, finite objective) to plot")
    stored = set.intersection(*(set(r.measures) for r in rows))
    missing = sorted(n for n in names if n not in stored)
    if missing or len(names) < 2:
        raise ValueError(f"--measures needs at least two measures stored with every usable evaluation; "
                         f"unknown {missing}; stored: {sorted(stored)}")
    groups: dict[str, list[Any]] = {}
    for r in rows:
        groups.setdefault(r.hash, []).append(r)
    first = [g[0] for g in groups.values()]
    objectives = [float(np.mean([r.fitness for r in g])) for g in groups.values()]
    values = np.array([np.mean([[r.measures[n] for n in names] for r in g], axis=0) for g in groups.values()],
                      dtype=float)
    low, high = values.min(axis=0), values.max(axis=0)
    high = np.where(high > low, high, low + 1.0)
    archive = GridArchive(dims=[min(50, max(2, len(np.unique(values[:, i])))) for i in range(len(names))],
                          ranges=list(zip(low, high)), measure_names=names,
                          objective_name=like.objective_name, qd_score_offset=like.qd_score_offset)
    archive.add([r.config for r in first], objectives, values, id=[r.id for r in first])
    return archive
