"""Illuminating the retrieval pipeline: the simulated backend at scale and the real model briefly.

Two parts, each written as ``qd run`` run directories under ``--work`` and pictures under ``--out``:

**Simulated** (``retrieval-sim``: every *pipeline* LLM call SIMULATED by the model fitted to
gemma-3-270m, ``domains/retrieval_fit.json``; evaluations are cheap, so there are thousands).
The default map, log2(LLM calls per question) x largest prompt (16 x 16 cells), coloured by
accuracy over 8 questions on 32 records, filled by

``classic``         mutation + uniform crossover: ``--sim-evals`` evaluations, ``--seeds`` seeds
``classic+llm``     the same plus LMX and LLM mutation writing ``--llm-share`` of the offspring:
                    ``--sim-evals`` evaluations, ``--llm-seeds`` seeds
``llm``             LMX + LLM mutation alone: ``--llm-evals`` evaluations (the first 100
                    random), ``--llm-seeds`` seeds

The LLM *operators* run on the REAL embedded gemma-3-270m (they write configurations; only the
evaluated pipeline is simulated), which is why their share and budget are small: on 2 cores one
LLM offspring (a ~500-token prompt, a ~100-token completion) costs as much time as a few hundred
simulated evaluations, and the search waits for it. Writes
``retrieval_sim_heatmap.png`` (the final maps of ``classic`` and ``classic+llm``, seed 0, side by
side) and ``retrieval_sim_qd_curves.png`` (QD score and coverage against evaluations, mean and
range over seeds).

**Real** (``retrieval`` on the embedded gemma-3-270m): the default job of ``qd run`` (the demo
config, :data:`qd.config.DEMO_CONFIG`), or an existing run directory given with ``--real-run``.
Writes ``retrieval_real_heatmap.png`` and exports the full traces of the elites that span the
trade-off as JSON into the run directory (``traces/``).

Prints a markdown table per part. Usage::

    python scripts/bench_retrieval.py [--sim-evals 3000] [--seeds 3] [--llm-seeds 1]
        [--llm-share 0.02] [--variants classic,classic+llm,llm] [--llm-evals 300]
        [--real-run RUN_DIR | --real-evals N] [--skip-sim] [--skip-real] [--quick]
        [--out docs/img] [--work runs/bench_retrieval]

Most of the bench's time is LLM-operator and real-model time (README, Performance, gives run
times); ``--quick`` is a smoke run. LLM calls go through qd's request cache (``$QD_CACHE_DIR``),
so a repeated bench replays them.
"""
from __future__ import annotations

import argparse
import copy
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from anywhere without installing

from qd.config import DEMO_CONFIG, resolve_config  # noqa: E402
from qd.runner import Run, open_run, run_search  # noqa: E402

SIM_DOMAIN = "retrieval-sim"
CLASSIC = {"mutation": 1.0, "uniform_crossover": 1.0}
LLM = {"lmx": 0.5, "llm_mutation": 0.5}
VARIANTS = ("classic", "classic+llm", "llm")
DEFAULT_VARIANTS = VARIANTS


def variant_operators(name: str, llm_share: float) -> dict[str, float]:
    """Operator weights of a variant; ``classic+llm`` gives the LLM operators ``llm_share`` in all."""
    if name == "classic":
        return dict(CLASSIC)
    if name == "llm":
        return dict(LLM)
    if name == "classic+llm":
        if not 0.0 < llm_share < 1.0:
            raise ValueError(f"--llm-share must be in (0, 1), got {llm_share}")
        classic_total = sum(CLASSIC.values())
        llm_total = classic_total * llm_share / (1.0 - llm_share)
        return {**CLASSIC, **{k: v / sum(LLM.values()) * llm_total for k, v in LLM.items()}}
    raise ValueError(f"unknown variant {name!r}; choose from {VARIANTS}")


def sim_config(name: str, seed: int, evals: int, init_random: int, llm_share: float) -> dict:
    """The run config of one simulated run (the domain's default map; plots off, progress off)."""
    return resolve_config({
        "run": {"name": f"sim-{name}-{seed}", "evaluations": evals, "seed": seed, "init_random": init_random,
                "progress": False, "plot": False},
        "domain": {"name": SIM_DOMAIN},
        # wait_for_llm: the LLM operators write exactly their share, whatever the model's speed
        "operators": {**variant_operators(name, llm_share), "wait_for_llm": True},
        "evaluator": {"backend": "serial", "timeout_s": 60.0},  # simulated evaluations are cheap: no need for Ray
    })


def fresh_run(config: dict, run_dir: Path, reuse: bool = False) -> tuple[Run, float]:
    """Run ``config`` in a new ``run_dir`` (an old one is replaced); returns the run and its wall time.

    With ``reuse``, a finished run of the same config already in ``run_dir`` is opened instead (its
    wall time read from the store's history).
    """
    if reuse and (run_dir / "run.sqlite").exists():
        old = open_run(run_dir)
        if old.config == config and old.store.count() >= config["run"]["evaluations"]:
            history = old.store.history()
            return old, float(history[-1]["wall_s"]) if history else float("nan")
    if run_dir.exists():
        shutil.rmtree(run_dir)
    start = time.perf_counter()
    run = run_search(config, run_dir, progress=False)
    return run, time.perf_counter() - start


def llm_usage(run: Run) -> dict[str, float]:
    """LLM-operator calls and tokens of a run (from the store's counters)."""
    total = run.store.counters("llm").get("total", {})
    return {"calls": float(total.get("calls", 0)),
            "tokens": float(total.get("tokens_in", 0)) + float(total.get("tokens_out", 0))}


def curve(run: Run) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(evaluations, qd_score, coverage) recorded during ``run``, starting at (0, 0, 0)."""
    hist = run.store.history()
    ev = np.array([0.0] + [h["evaluations"] for h in hist])
    return ev, np.array([0.0] + [h["qd_score"] for h in hist]), np.array([0.0] + [h["coverage"] for h in hist])


# -- simulated part ----------------------------------------------------------------------------------
def bench_sim(args: argparse.Namespace, work: Path, out: Path) -> None:
    runs: dict[str, list[tuple[Run, float]]] = {v: [] for v in args.variants}
    for seed in range(max(args.seeds, args.llm_seeds)):
        for name in args.variants:
            if seed >= (args.seeds if name == "classic" else args.llm_seeds):
                continue
            evals = args.llm_evals if name == "llm" else args.sim_evals
            init = min(args.init_random, evals // 2)
            run, wall = fresh_run(sim_config(name, seed, evals, init, args.llm_share), work / f"sim-{name}-{seed}",
                                  args.reuse)
            runs[name].append((run, wall))
            s, use = run.archive.stats, llm_usage(run)
            print(f"[SIMULATED] seed {seed} {name:<12} {evals:>5} evals  qd_score {s.qd_score:8.2f}  "
                  f"coverage {s.coverage:6.1%}  best {s.obj_max:.3f}  LLM-operator calls {use['calls']:.0f}  "
                  f"{wall:6.1f} s", flush=True)
    print(f"\n{SIM_DOMAIN}: retrieval pipeline with SIMULATED LLM calls (fitted to gemma-3-270m); "
          f"grid 16x16 over (log2_calls, max_prompt_tokens); LLM operators on the REAL embedded model; "
          f"seeds: {args.seeds} classic, {args.llm_seeds} with LLM operators.\n")
    print("| operators | evaluations | QD score | coverage | best accuracy | LLM-operator calls | "
          "LLM-operator tokens | wall s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, rs in runs.items():
        stats = [r.archive.stats for r, _ in rs]
        use = [llm_usage(r) for r, _ in rs]
        print(f"| {name} | {rs[0][0].config['run']['evaluations']} | {_mean_range([s.qd_score for s in stats])} "
              f"| {np.mean([s.coverage for s in stats]):.1%} | {np.mean([s.obj_max for s in stats]):.3f} "
              f"| {np.mean([u['calls'] for u in use]):.0f} | {np.mean([u['tokens'] for u in use]):.0f} "
              f"| {np.mean([w for _, w in rs]):.0f} |")
    save_sim_heatmaps(runs, out / "retrieval_sim_heatmap.png")
    save_sim_curves(runs, out / "retrieval_sim_qd_curves.png", args)
    print(f"\npictures: {out / 'retrieval_sim_heatmap.png'}, {out / 'retrieval_sim_qd_curves.png'}")


def _mean_range(values: list[float]) -> str:
    a = np.asarray(values, float)
    return f"{a.mean():.1f}" if len(a) == 1 else f"{a.mean():.1f} [{a.min():.1f}, {a.max():.1f}]"


def save_sim_heatmaps(runs: dict[str, list[tuple[Run, float]]], path: Path) -> None:
    """Final maps of seed 0 side by side, one colour scale (accuracy 0..1)."""
    import matplotlib.pyplot as plt

    from qd.archives.plot import heatmap

    shown = [n for n in ("classic", "classic+llm") if runs.get(n)] or [n for n in runs if runs[n]]
    fig, axes = plt.subplots(1, len(shown), figsize=(6.2 * len(shown), 5.2), squeeze=False)
    for ax, name in zip(axes[0], shown):
        run = runs[name][0][0]
        heatmap(run.archive, ax=ax, vmin=0.0, vmax=1.0)
        s = run.archive.stats
        ax.set_title(f"{name}: {run.store.count()} evals, coverage {s.coverage:.0%}, QD {s.qd_score:.0f}",
                     fontsize=10)
    fig.suptitle("retrieval pipeline with SIMULATED LLM calls (fitted to gemma-3-270m)\n"
                 "accuracy of the best configuration per cell", fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def save_sim_curves(runs: dict[str, list[tuple[Run, float]]], path: Path, args: argparse.Namespace) -> None:
    """QD score and coverage against evaluations (mean line, min-max band over seeds).

    Plus the QD score over the first ``--llm-evals`` evaluations, where the LLM-only runs can be compared.
    """
    import matplotlib.pyplot as plt

    from qd.archives.plot import qd_curve

    budgets = [int(rs[0][0].config["run"]["evaluations"]) for rs in runs.values() if rs]
    zoom = min(budgets) if min(budgets) < max(budgets) else 0  # a third panel only for unequal budgets
    fig, axes = plt.subplots(1, 3 if zoom else 2, figsize=(16 if zoom else 11, 4.6))
    for name, rs in runs.items():
        if not rs:
            continue
        evals = int(rs[0][0].config["run"]["evaluations"])
        label = f"{name} ({len(rs)} seed{'s' if len(rs) > 1 else ''})"
        panels = [(axes[0], evals, 1, "QD score (sum of elite accuracies)"), (axes[1], evals, 2, "coverage")]
        if zoom:
            panels.append((axes[2], zoom, 1, f"QD score, first {zoom} evaluations"))
        for ax, until, column, ylabel in panels:
            grid = np.linspace(0, until, 200)
            values = np.array([np.interp(grid, curve(r)[0], curve(r)[column]) for r, _ in rs])
            qd_curve(grid, values.mean(axis=0), ax=ax, label=label, ylabel=ylabel)
            if len(rs) > 1:
                ax.fill_between(grid, values.min(axis=0), values.max(axis=0), alpha=0.15,
                                color=ax.lines[-1].get_color())
    share = f"; classic+llm: LLM operators write {args.llm_share:.0%} of offspring" if "classic+llm" in runs else ""
    fig.suptitle("retrieval pipeline with SIMULATED LLM calls; LLM operators on the real gemma-3-270m" + share,
                 fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- real part ---------------------------------------------------------------------------------------
def bench_real(args: argparse.Namespace, work: Path, out: Path) -> None:
    from qd.analysis.elites import export_elite_traces
    from qd.analysis.selection import spanning_elites as _spanning_elites
    from qd.archives.plot import plot_archive
    from qd.cli import _config_line

    if args.real_run:
        run, wall = open_run(args.real_run), None
    else:
        raw = copy.deepcopy(DEMO_CONFIG)
        raw["run"].update(progress=False)
        if args.real_evals:
            raw["run"]["evaluations"] = args.real_evals
        run, wall = fresh_run(resolve_config(raw), work / "real-demo", args.reuse)
    s = run.archive.stats
    obj = run.domain.objective_name
    took = f", {wall / 60:.1f} min" if wall is not None else ""
    print(f"\nretrieval on the REAL embedded gemma-3-270m ({run.path}): {run.store.count()} evaluations{took}, "
          f"{s.num_elites} elites, coverage {s.coverage:.0%}, QD score {s.qd_score:.2f}, best {obj} {s.obj_max:.2f}\n")
    picks = _spanning_elites(run.archive, obj)
    names = run.archive.measure_names
    print(f"| elite | {obj} | " + " | ".join(names) + " | configuration |")
    print("| --- | --- | " + " | ".join("---" for _ in names) + " | --- |")
    for label, e in picks:
        print(f"| {label} | {e['objective']:.2f} | " + " | ".join(f"{v:.3g}" for v in e["measures"])
              + f" | {_config_line(e['solution'])} |")
    opts = run.config["domain"]["options"]
    title = (f"retrieval on gemma-3-270m (real model): {run.store.count()} evaluations\n"
             f"accuracy on {opts.get('n_instances', 8)} questions over {opts.get('n_pairs', 32)} records")
    path = out / "retrieval_real_heatmap.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    plot_archive(run.archive, path, title=title)
    traces = export_elite_traces(run.domain, [e for _, e in picks], run.path / "traces")
    print(f"\npicture: {path}\nelite traces (re-run under the tracer; the request cache replays them): "
          f"{', '.join(str(t) for t in traces)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sim-evals", type=int, default=3000, help="evaluations of classic, classic+llm runs")
    parser.add_argument("--llm-evals", type=int, default=300, help="evaluations of llm-only runs")
    parser.add_argument("--llm-share", type=float, default=0.02, help="LLM operators' share in classic+llm")
    parser.add_argument("--seeds", type=int, default=3, help="seeds of the classic runs")
    parser.add_argument("--llm-seeds", type=int, default=1, help="seeds of the runs with LLM operators")
    parser.add_argument("--init-random", type=int, default=100, help="random configurations first")
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS), help=f"subset of {','.join(VARIANTS)}")
    parser.add_argument("--real-run", help="plot this existing real-backend run instead of running the demo")
    parser.add_argument("--real-evals", type=int, help="evaluations of the real demo run (default: the demo's)")
    parser.add_argument("--reuse", action="store_true", help="keep finished runs of the same config in --work")
    parser.add_argument("--skip-sim", action="store_true")
    parser.add_argument("--skip-real", action="store_true")
    parser.add_argument("--quick", action="store_true", help="smoke run: 600/80 simulated evals, 1 seed, 8 real")
    parser.add_argument("--out", default=str(ROOT / "docs" / "img"), help="where the PNGs go")
    parser.add_argument("--work", default=str(ROOT / "runs" / "bench_retrieval"), help="run directories")
    args = parser.parse_args(argv)
    if args.quick:
        # 80: the noise policy's re-evaluations may take half, and the LLM operators must still run
        args.sim_evals, args.llm_evals, args.seeds, args.llm_seeds, args.init_random = 600, 80, 1, 1, 50
        args.real_evals = args.real_evals or 8
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(args.variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {VARIANTS}")
    out, work = Path(args.out), Path(args.work)
    start = time.perf_counter()
    if not args.skip_sim:
        bench_sim(args, work, out)
    if not args.skip_real:
        bench_real(args, work, out)
    print(f"\ntotal wall time {(time.perf_counter() - start) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
