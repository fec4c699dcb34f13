"""Classic vs LLM operators: QD score against evaluations on the retrieval domain.

Four operator sets, each run for ``--seeds`` seeds with the same evaluation budget:

``classic``       mutation + uniform crossover
``lmx``           mutation + LMX crossover (the LLM replaces uniform crossover)
``llm_mutation``  LLM mutation + uniform crossover (the LLM replaces mutation)
``adaptive``      all four, weights adapted by archive gain per evaluation and per 1k tokens

The domain is ``retrieval-sim``: the retrieval pipeline with its LLM calls SIMULATED by a model
fitted to gemma-3-270m (fast, so the budget goes to the operators). The LLM *operators* use the
REAL embedded gemma-3-270m (base model, completions API, no request cache), so tokens, validity and
time per offspring are measured, not simulated.

Prints a markdown table (final QD score mean ± sd, coverage, best accuracy, wall time) and a
per-operator table (validity after repair, duplicate rate, archive gains per evaluation, tokens per
archive gain, LLM failures), and saves mean QD-score-vs-evaluations curves (± sd band) as a PNG.

    python scripts/bench_operators.py [--evals 100] [--seeds 3] [--quick] [-o docs/img/bench_operators.png]

The LLM calls dominate the bench's time (README, Performance, gives run times), so it slows down
in proportion to any other load on the cores. ``--quick`` runs 1 seed of 60 evaluations.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from anywhere without installing

from qd.analysis.descriptors import resolve_measures  # noqa: E402
from qd.archives import GridArchive  # noqa: E402
from qd.domains import get_domain  # noqa: E402
from qd.evaluators import SerialEvaluator  # noqa: E402
from qd.llm import LLMClient  # noqa: E402
from qd.operators.classic import Mutation, UniformCrossover  # noqa: E402
from qd.operators.llm import LLMMutation, LMXCrossover  # noqa: E402
from qd.search import Search  # noqa: E402
from qd.store import RunStore  # noqa: E402

DOMAIN = "retrieval-sim"
SETS = ("classic", "lmx", "llm_mutation", "adaptive")
LLM_OPS = ("lmx", "llm_mutation")


@dataclass
class RunResult:
    """One search: its final archive stats, QD-score curve, operator counters and LLM usage."""

    qd_score: float
    coverage: float
    obj_max: float
    wall_s: float
    curve: list[tuple[int, float]]
    operators: dict[str, dict[str, float]]
    llm: dict[str, float] = field(default_factory=dict)


def build_operators(name: str, space: Any, client: LLMClient | None, k: int) -> tuple[dict, bool]:
    """Operator set ``name`` as ``{op_name: (operator, weight)}`` and whether it is adaptive."""
    mutation, crossover = Mutation(space), UniformCrossover(space)
    if name == "classic":
        return {"mutation": (mutation, 1.0), "uniform_crossover": (crossover, 1.0)}, False
    lmx, llm_mut = LMXCrossover(space, client, k=k), LLMMutation(space, client)
    if name == "lmx":
        return {"mutation": (mutation, 1.0), "lmx": (lmx, 1.0)}, False
    if name == "llm_mutation":
        return {"uniform_crossover": (crossover, 1.0), "llm_mutation": (llm_mut, 1.0)}, False
    if name == "adaptive":
        return {"mutation": (mutation, 1.0), "uniform_crossover": (crossover, 1.0), "lmx": (lmx, 1.0),
                "llm_mutation": (llm_mut, 1.0)}, True
    raise ValueError(f"unknown operator set {name!r}")


def run_one(name: str, seed: int, evals: int, init_random: int, base_url: str, store_dir: Path,
            k: int, llm_threads: int) -> RunResult:
    """One search of operator set ``name``; the LLM client is fresh (no cache) so usage is this run's."""
    domain = get_domain(DOMAIN)
    names = list(domain.default_measures)
    archive = GridArchive(dims=list(domain.default_bins), ranges=domain.default_ranges, measure_names=names,
                          qd_score_offset=domain.qd_score_offset, objective_name=domain.objective_name)
    client = None if name == "classic" else LLMClient(base_url=base_url, concurrency=llm_threads, timeout_s=120.0)
    operators, adaptive = build_operators(name, domain.space, client, k)
    with RunStore(store_dir / f"{name}-{seed}.sqlite") as store:
        # wait_for_llm: operator sets are compared per evaluation, so each gets exactly its weights
        with Search(domain, archive, SerialEvaluator(domain), operators=operators,
                    measures=resolve_measures(names, domain), budget=evals, store=store,
                    init_random=init_random, seed=seed, adaptive=adaptive, adapt_every=10,
                    llm_threads=llm_threads, llm_client=client, history_every=5, wait_for_llm=True) as search:
            start = time.perf_counter()
            search.run()
            wall = time.perf_counter() - start
        curve = [(int(h["evaluations"]), float(h["qd_score"])) for h in store.history()]
    s = archive.stats
    ops = {n: st.as_dict() for n, st in search.stats.items()}
    for n, w in search.weights.items():
        ops.setdefault(n, {})["share"] = w / sum(search.weights.values())
    return RunResult(float(s.qd_score), float(s.coverage), float(s.obj_max), wall, curve, ops,
                     client.usage.as_dict() if client is not None else {})


def _mean_sd(values: list[float]) -> str:
    a = np.asarray(values, dtype=float)
    return f"{a.mean():.2f} ± {a.std(ddof=1) if len(a) > 1 else 0.0:.2f}"


def _rate(num: float, den: float, pct: bool = True) -> str:
    if not den:
        return "-"
    return f"{100 * num / den:.0f}%" if pct else f"{num / den:.3g}"


def print_tables(results: dict[str, list[RunResult]], evals: int, seeds: int, wall: float) -> None:
    """The two markdown tables: per operator set, then per operator (pooled over seeds)."""
    print(f"\n{DOMAIN} (SIMULATED retrieval LLM), grid 16x16 over (log2_calls, max_prompt_tokens), "
          f"{evals} evaluations per run, {seeds} seeds; LLM operators on the REAL embedded gemma-3-270m. "
          f"Total wall time {wall / 60:.1f} min.\n")
    print("| operators | QD score (mean ± sd) | coverage | best accuracy | LLM calls / run | LLM tokens / run "
          "| wall s / run |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, runs in results.items():
        calls = np.mean([r.llm.get("calls", 0) for r in runs])
        tokens = np.mean([r.llm.get("tokens_in", 0) + r.llm.get("tokens_out", 0) for r in runs])
        print(f"| {name} | {_mean_sd([r.qd_score for r in runs])} | {np.mean([r.coverage for r in runs]):.1%} "
              f"| {np.mean([r.obj_max for r in runs]):.3f} | {calls:.0f} | {tokens:.0f} "
              f"| {np.mean([r.wall_s for r in runs]):.0f} |")
    print("\nPer operator, summed over seeds (offspring: candidates written; validity: valid after repair; "
          "duplicates: valid but already evaluated; gains/eval: archive insertions per evaluation charged "
          "to the operator, fallbacks included; final share: adaptive weight at the end):\n")
    print("| operators | operator | offspring | validity | duplicates | gains/eval | tokens / gain "
          "| s / offspring | LLM failures | final share |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, runs in results.items():
        op_names = [n for n in runs[0].operators if n not in ("random",)]
        for op in op_names:
            tot = {key: sum(r.operators.get(op, {}).get(key, 0) for r in runs)
                   for key in ("offspring", "valid", "duplicates", "gains", "spent", "tokens", "time_s",
                               "llm_failures")}
            share = [r.operators.get(op, {}).get("share") for r in runs]
            share_txt = "-" if any(s is None for s in share) or name != "adaptive" else f"{np.mean(share):.0%}"
            tok_gain = f"{tot['tokens'] / tot['gains']:.0f}" if tot["tokens"] and tot["gains"] else (
                "∞" if tot["tokens"] else "-")
            print(f"| {name} | {op} | {tot['offspring']:.0f} | {_rate(tot['valid'], tot['offspring'])} "
                  f"| {_rate(tot['duplicates'], tot['offspring'])} | {_rate(tot['gains'], tot['spent'], False)} "
                  f"| {tok_gain} | {tot['time_s'] / max(tot['offspring'], 1):.2f} | {tot['llm_failures']:.0f} "
                  f"| {share_txt} |")


def save_plot(results: dict[str, list[RunResult]], path: Path, evals: int) -> None:
    """Mean QD score against evaluations per operator set, with a ± sd band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from qd.archives.plot import qd_curve

    fig, ax = plt.subplots(figsize=(7, 4.5))
    grid = np.arange(0, evals + 1, 5)
    for name, runs in results.items():
        curves = np.array([np.interp(grid, [0] + [e for e, _ in r.curve], [0.0] + [q for _, q in r.curve])
                           for r in runs])
        mean, sd = curves.mean(axis=0), curves.std(axis=0)
        qd_curve(grid, mean, ax=ax, label=f"{name} (n={len(runs)})")
        ax.fill_between(grid, mean - sd, mean + sd, alpha=0.15, color=ax.lines[-1].get_color())
    ax.set_title(f"{DOMAIN}: QD score vs evaluations (LLM operators: real gemma-3-270m)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evals", type=int, default=100, help="evaluations per run (default 100)")
    parser.add_argument("--init", type=int, default=40, help="random evaluations before operators (default 40)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per operator set (default 3)")
    parser.add_argument("--sets", default=",".join(SETS), help=f"comma-separated subset of {','.join(SETS)}")
    parser.add_argument("--k", type=int, default=3, help="LMX parents per prompt (default 3)")
    parser.add_argument("--llm-threads", type=int, default=4, help="LLM calls in flight (default 4)")
    parser.add_argument("--base-url", default="", help="OpenAI-compatible endpoint (default: the embedded model)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 60 evaluations, 1 seed")
    parser.add_argument("-o", "--output", default=str(ROOT / "docs" / "img" / "bench_operators.png"))
    args = parser.parse_args(argv)
    if args.quick:
        args.evals, args.init, args.seeds = 60, 30, 1
    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    unknown = sorted(set(sets) - set(SETS))
    if unknown:
        parser.error(f"unknown operator sets {unknown}; choose from {SETS}")

    server = None
    base_url = args.base_url
    if not base_url and any(s != "classic" for s in sets):
        from qd.llm.local import ServerProcess

        server = ServerProcess(n_parallel=args.llm_threads)
        base_url = server.start()
    results: dict[str, list[RunResult]] = {name: [] for name in sets}
    start = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for seed in range(args.seeds):
                for name in sets:
                    r = run_one(name, seed, args.evals, args.init, base_url, Path(tmp), args.k, args.llm_threads)
                    results[name].append(r)
                    llm_ops = {n: f"{int(o['valid'])}/{int(o['offspring'])} valid, {int(o['gains'])} gains"
                               for n, o in r.operators.items() if n in LLM_OPS}
                    print(f"seed {seed} {name:<13} qd_score {r.qd_score:7.2f}  coverage {r.coverage:6.1%}  "
                          f"best {r.obj_max:.3f}  {r.wall_s:6.1f} s  {llm_ops or ''}", flush=True)
    finally:
        if server is not None:
            server.stop()
    wall = time.perf_counter() - start
    print_tables(results, args.evals, args.seeds, wall)
    out = Path(args.output)
    save_plot(results, out, args.evals)
    print(f"\nplot: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
