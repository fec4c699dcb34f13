"""Tables, targets and plots of ``scripts/bench_search.py`` from its rows (one per domain, arm and seed).

A row is what :func:`qd.bench.arms.bench_run` returns. Arms are compared seed by seed on the seeds
both ran (:func:`qd.bench.stats.compare`); the p-values of one domain's comparisons are
Holm-adjusted together (:func:`qd.bench.stats.holm`).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qd.bench.stats import Comparison, compare, holm

__all__ = ["METRICS", "QD_ARMS", "is_qd", "arm_table", "comparisons", "comparison_table", "seed_table", "targets",
           "targets_table", "plot_domain", "by_arm"]

#: Metric key -> label, in the order of tables and plots.
METRICS = {"corrected_qd": "corrected QD score", "corrected_coverage": "corrected coverage",
           "best_validated": "best validated objective", "hypervolume": "hypervolume (objective, cost)"}
QD_ARMS = ("qd-default", "qd-llm", "qd-classic", "qd-iso")


def is_qd(arm: str) -> bool:
    """Whether ``arm`` is one of qd's searches (``qd-classic:noise=none`` included)."""
    return arm.split(":", 1)[0] in QD_ARMS


def by_arm(rows: Sequence[Mapping[str, Any]], domain: str) -> dict[str, dict[int, Mapping[str, Any]]]:
    """``{arm: {seed: row}}`` of one domain, arms in the order they first appear."""
    out: dict[str, dict[int, Mapping[str, Any]]] = {}
    for row in rows:
        if row["domain"] == domain:
            out.setdefault(row["arm"], {})[int(row["seed"])] = row
    return out


def _values(runs: Mapping[int, Mapping[str, Any]], key: str, seeds: Sequence[int] | None = None) -> np.ndarray:
    seeds = sorted(runs) if seeds is None else seeds
    return np.array([np.nan if runs[s].get(key) is None else float(runs[s][key]) for s in seeds])


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}g}"


def arm_table(rows: Sequence[Mapping[str, Any]], domain: str) -> str:
    """Per arm: seeds, evaluations, mean ± sd of each metric (median for the best objective), seconds per run."""
    lines = ["| arm | seeds | evaluations | corrected QD | corrected coverage | best validated (median) "
             "| hypervolume (median) | QD as searched | s / run |", "|---|---|---|---|---|---|---|---|---|"]
    for arm, runs in by_arm(rows, domain).items():
        def ms(key: str, runs: Mapping = runs) -> str:
            v = _values(runs, key)
            return "-" if np.all(np.isnan(v)) else f"{np.nanmean(v):.3g} ± {np.nanstd(v):.2g}"

        def med(key: str, runs: Mapping = runs) -> str:
            v = _values(runs, key)
            return "-" if np.all(np.isnan(v)) else f"{np.nanmedian(v):.3g}"
        evals = sorted({int(r["evaluations"]) for r in runs.values()})
        lines.append(f"| {arm} | {len(runs)} | {'/'.join(map(str, evals))} | {ms('corrected_qd')} "
                     f"| {ms('corrected_coverage')} | {med('best_validated')} | {med('hypervolume')} "
                     f"| {ms('qd_score')} "
                     f"| {np.mean(_values(runs, 'total_s')):.0f} |")
    return "\n".join(lines)


def seed_table(rows: Sequence[Mapping[str, Any]], domain: str, key: str = "corrected_qd") -> str:
    """Every seed's ``key`` (a :data:`METRICS` key) per arm: one row per seed, one column per arm."""
    runs = by_arm(rows, domain)
    seeds = sorted({seed for per_seed in runs.values() for seed in per_seed})
    lines = [f"| seed | {' | '.join(runs)} |", "|---|" + "---|" * len(runs)]
    for seed in seeds:
        cells = [_fmt(None if seed not in r else r[seed].get(key), 4) for r in runs.values()]
        lines.append(f"| {seed} | {' | '.join(cells)} |")
    return "\n".join(lines)


def comparisons(rows: Sequence[Mapping[str, Any]], domain: str) -> list[tuple[str, str, str, Comparison, float]]:
    """Every qd arm against every other arm, per metric, on their common seeds: ``(a, b, metric, comparison, holm p)``.

    Each pair of qd arms is compared once. The Holm adjustment runs over all of the domain's
    comparisons together.
    """
    arms = by_arm(rows, domain)
    qd_arms = [a for a in arms if is_qd(a)]
    out = []
    for a in qd_arms:
        for b in arms:
            if b == a or (b in qd_arms and qd_arms.index(b) < qd_arms.index(a)):
                continue
            seeds = sorted(set(arms[a]) & set(arms[b]))
            for key in METRICS:
                x, y = _values(arms[a], key, seeds), _values(arms[b], key, seeds)
                keep = ~(np.isnan(x) | np.isnan(y))
                if keep.sum() >= 2:
                    out.append((a, b, key, compare(x[keep], y[keep])))
    adjusted = holm([c.p for *_, c in out])
    return [(a, b, key, c, p) for (a, b, key, c), p in zip(out, adjusted)]


def comparison_table(rows: Sequence[Mapping[str, Any]], domain: str) -> str:
    """:func:`comparisons` as markdown: means, ratio, median paired difference with its 95% CI, A12, p."""
    lines = ["| qd arm | vs | metric | seeds | mean qd / mean other | ratio | median diff [95% CI] | A12 | wins/losses "
             "| p | Holm p |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for a, b, key, c, p_holm in comparisons(rows, domain):
        lines.append(f"| {a} | {b} | {METRICS[key]} | {c.n} | {_fmt(c.mean_a)} / {_fmt(c.mean_b)} | {_fmt(c.ratio)} "
                     f"| {_fmt(c.median_diff)} [{_fmt(c.ci_low)}, {_fmt(c.ci_high)}] | {c.a12:.2f} "
                     f"| {c.wins}/{c.losses} | {_fmt(c.p, 2)} | {_fmt(p_holm, 2)} |")
    return "\n".join(lines)


def targets(rows: Sequence[Mapping[str, Any]], domain: str, objective_range: tuple[float, float],
            qd_arm: str) -> dict[str, Any]:
    """The issue's targets for ``qd_arm`` on one domain, on the seeds it shares with the arms compared.

    - corrected QD score at least 1.2x the best non-qd arm's (best by mean over the common seeds);
    - best validated objective: median no worse than Optuna TPE's median by more than 5% of the
      objective's range;
    - hypervolume: median at least Optuna NSGA-II's median.
    """
    arms = by_arm(rows, domain)
    if qd_arm not in arms:
        return {}
    mine = arms[qd_arm]
    others = {b: runs for b, runs in arms.items() if not is_qd(b)}
    out: dict[str, Any] = {"arm": qd_arm, "seeds": len(mine)}
    best_name, best_mean, best_ratio = None, -math.inf, math.nan
    for b, runs in others.items():
        seeds = sorted(set(mine) & set(runs))
        if not seeds:
            continue
        theirs = float(np.mean(_values(runs, "corrected_qd", seeds)))
        if theirs > best_mean:
            best_name, best_mean = b, theirs
            best_ratio = float(np.mean(_values(mine, "corrected_qd", seeds))) / theirs if theirs else math.nan
    out["qd"] = {"best_other": best_name, "ratio": best_ratio, "met": bool(best_ratio >= 1.2)}
    span = objective_range[1] - objective_range[0]
    if "optuna-tpe" in arms:
        seeds = sorted(set(mine) & set(arms["optuna-tpe"]))
        gap = float(np.median(_values(mine, "best_validated", seeds))
                    - np.median(_values(arms["optuna-tpe"], "best_validated", seeds)))
        out["best"] = {"gap": gap, "gap_share": gap / span, "met": bool(gap >= -0.05 * span)}
    if "optuna-nsga2" in arms and not np.all(np.isnan(_values(mine, "hypervolume"))):
        seeds = sorted(set(mine) & set(arms["optuna-nsga2"]))
        ours = float(np.median(_values(mine, "hypervolume", seeds)))
        theirs = float(np.median(_values(arms["optuna-nsga2"], "hypervolume", seeds)))
        out["hypervolume"] = {"qd": ours, "nsga2": theirs, "ratio": ours / theirs if theirs else math.nan,
                              "met": bool(ours >= theirs)}
    return out


def targets_table(rows: Sequence[Mapping[str, Any]], domain: str, objective_range: tuple[float, float]) -> str:
    """:func:`targets` of every qd arm on one domain, as markdown."""
    lines = ["| qd arm | seeds | corrected QD vs best non-qd arm (target ≥ 1.2×) | best validated − TPE's median "
             "(target ≥ −5% of range) | hypervolume vs NSGA-II's median (target ≥ 1×) |", "|---|---|---|---|---|"]
    for arm in [a for a in by_arm(rows, domain) if is_qd(a)]:
        t = targets(rows, domain, objective_range, arm)
        if not t:
            continue
        qd = f"{t['qd']['ratio']:.2f}× {t['qd']['best_other']} ({'met' if t['qd']['met'] else 'not met'})"
        best = "-" if "best" not in t else (f"{t['best']['gap']:+.3g} ({100 * t['best']['gap_share']:+.1f}% of range; "
                                            f"{'met' if t['best']['met'] else 'not met'})")
        hv = "-" if "hypervolume" not in t else (f"{t['hypervolume']['qd']:.3g} vs {t['hypervolume']['nsga2']:.3g} "
                                                 f"({t['hypervolume']['ratio']:.2f}×; "
                                                 f"{'met' if t['hypervolume']['met'] else 'not met'})")
        lines.append(f"| {arm} | {t['seeds']} | {qd} | {best} | {hv} |")
    return "\n".join(lines)


def plot_domain(rows: Sequence[Mapping[str, Any]], domain: str, path: str | Path, title: str = "") -> Path:
    """Every seed of every arm, per metric: one dot per run, grey lines join a seed's runs across arms."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = by_arm(rows, domain)
    names = list(arms)
    keys = [k for k in METRICS if any(r.get(k) is not None for runs in arms.values() for r in runs.values())]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.3 * len(keys) + 1, 3.8), squeeze=False)
    seeds = sorted({s for runs in arms.values() for s in runs})
    for ax, key in zip(axes[0], keys):
        for s in seeds:
            xs = [i for i, a in enumerate(names) if s in arms[a] and arms[a][s].get(key) is not None]
            ax.plot(xs, [float(arms[names[i]][s][key]) for i in xs], color="0.8", lw=0.6, zorder=1)
        for i, a in enumerate(names):
            v = _values(arms[a], key)
            v = v[~np.isnan(v)]
            jitter = np.linspace(-0.12, 0.12, len(v)) if len(v) > 1 else np.zeros(len(v))
            ax.scatter(i + jitter, v, s=10, zorder=2, color="tab:red" if is_qd(a) else "tab:blue")
            if len(v):
                ax.hlines(np.median(v), i - 0.3, i + 0.3, color="black", lw=1.5, zorder=3)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=40, ha="right", fontsize=8)
        ax.set_title(METRICS[key], fontsize=9)
        ax.grid(alpha=0.3)
    fig.suptitle(title or f"{domain}: every seed (dots), paired seeds joined, medians (bars)", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
