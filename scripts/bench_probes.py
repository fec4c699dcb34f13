"""Operator probes on frozen archives: paired children of every operator variant, no search trajectory.

An end-to-end run mixes an operator's quality with how its trajectory diverges; a probe removes
the divergence (docs: ../shared/studies/llm-operators.md, section 6.7). Each frozen archive is a
classic search (mutation + uniform crossover, ``--evals`` evaluations, ``--init-random`` of them
random, ``noise = "none"``). Then, for ``--tasks`` tasks per archive, one shared random stream
draws the task: an elite (the parent), an empty cell near it (the target, as the scheduler
chooses it), the elites nearest the target (LMX's context), a second elite (crossover's mate,
LLM mutation's example) and the seed of the children's randomness. Every variant gets the same
tasks, so results are paired:

``mutation``, ``uniform_crossover``   one classic child (as the scheduler asks without the filter)
``mutation+filter``                   ``--proposals`` mutants, the pre-evaluation filter picks one
``lmx``, ``llm_mutation``             one completion at the operator's temperature
``lmx+filter``, ``llm_mutation+filter``   ``--proposals`` completions of one prompt, the filter picks one

The filter predicts cells with the domain's static cost model (``predict_measures``) and, as in
a search, sees a target only when the operator aims at one (the LLM operators). A child that
repeats a configuration the archive's run evaluated, or that could not be written (LLM output with
no valid configuration), is no child. Each child is evaluated (``retrieval-sim``: the mean
objective over ``--draws`` draws, the measures of draw 0) and scored per task:

``child``   a new valid child was written         ``dup``   the child repeated a seen configuration
``fill``    it lands in an empty cell             ``hit``   it lands in the target cell
``near``    in or next to the target cell         ``gain``  fills a cell or beats its elite
``dobj``    its objective minus the parent's (mean over children)

The table gives each rate with the paired difference against ``mutation+filter`` (mean and
bootstrap 95% interval, resampling archives and then tasks within them). LLM calls go to the
embedded gemma-3-270m (``--llm-base-url`` for another endpoint) through the request cache, so a
rerun replays them.

    nice -n 10 python scripts/bench_probes.py [--archives k-module:3,retrieval-sim:2] [--tasks 100]
        [--proposals 4] [--threads 4] [--json probes.json]
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from anywhere without installing

from qd.analysis.descriptors import resolve_measures  # noqa: E402
from qd.archives import GridArchive  # noqa: E402
from qd.domain import accepts_draws, evaluate_draw  # noqa: E402
from qd.domains import get_domain  # noqa: E402
from qd.evaluation import evaluate_config  # noqa: E402
from qd.llm import LLMClient  # noqa: E402
from qd.llm.cache import cache_path  # noqa: E402
from qd.operators import Mutation, Parent, UniformCrossover  # noqa: E402
from qd.operators.llm import LLMMutation, LMXCrossover  # noqa: E402
from qd.prefilter import CellFilter, MeasurePredictor  # noqa: E402
from qd.scheduler import Scheduler, SchedulerOptions  # noqa: E402

VARIANTS = ("mutation", "mutation+filter", "uniform_crossover", "lmx", "lmx+filter", "llm_mutation",
            "llm_mutation+filter")
METRICS = ("child", "dup", "fill", "hit", "near", "gain")
BASELINE = "mutation+filter"


@dataclass
class Frozen:
    """One frozen archive: its domain, archive, the hashes its run evaluated, and a scheduler on it."""

    label: str
    domain: Any
    archive: Any
    seen: set[str]
    scheduler: Scheduler
    measures: list = field(default_factory=list)


def freeze(name: str, seed: int, evals: int, init_random: int) -> Frozen:
    """A classic search of ``evals`` evaluations on domain ``name`` (its default map), frozen."""
    domain = get_domain(name)
    archive = GridArchive(dims=domain.default_bins, ranges=domain.default_ranges,
                          measure_names=list(domain.default_measures), objective_name=domain.objective_name)
    measures = resolve_measures(archive.measure_names, domain)
    classic = {"mutation": (Mutation(domain.space), 1.0), "uniform_crossover": (UniformCrossover(domain.space), 1.0)}
    scheduler = Scheduler(archive, domain.space, classic, SchedulerOptions(seed=seed, init_random=init_random))
    seen = set()
    for _ in range(evals):
        candidate = scheduler.ask()
        result = evaluate_config(domain, candidate.config)
        values = [f(candidate.config, result) for f in measures]
        scheduler.tell(candidate, result.objective if result.usable else None, values if result.usable else None,
                       feedback=result.feedback)
        seen.add(candidate.hash)
    return Frozen(f"{name} seed {seed}", domain, archive, seen, scheduler, measures)


@dataclass
class Task:
    """What every variant gets for one probe: the parent, the target, the context, the mate, a seed."""

    parent: Parent
    target: dict[str, float]
    context: list[Parent]
    mate: Parent
    seed: int


def tasks(frozen: Frozen, n: int, seed: int, k: int) -> list[Task]:
    """``n`` tasks drawn from one random stream (the scheduler's own target and neighbourhood rules)."""
    scheduler, archive = frozen.scheduler, frozen.archive
    scheduler.rng = rng = np.random.default_rng([seed, 7])
    out = []
    while len(out) < n:
        picked = archive.sample_elites(2, rng=rng)
        parent, mate = (Parent(picked["solution"][i], float(picked["objective"][i]),
                               dict(zip(archive.measure_names, map(float, picked["measures"][i]))),
                               feedback=str(picked["feedback"][i]), id=int(picked["id"][i])) for i in range(2))
        target = scheduler.target_region(parent)
        if target is None:  # a full neighbourhood: the scheduler would not aim; draw another task
            continue
        out.append(Task(parent, target, scheduler.neighbours(target, k, parent), mate,
                        int(rng.integers(2**31))))
    return out


class Prober:
    """Writes and scores the children of every variant for the tasks of one frozen archive."""

    def __init__(self, frozen: Frozen, client: LLMClient, proposals: int, draws: int, k: int):
        self.f, self.proposals, self.draws = frozen, proposals, draws
        space, domain = frozen.domain.space, frozen.domain
        self.mutation, self.crossover = Mutation(space), UniformCrossover(space)
        self.lmx = LMXCrossover(space, client, k=k)
        self.llm_mutation = LLMMutation(space, client)
        self.llm_mutation.predict_measures = lambda c: domain.predict_measures(c)
        self.filter = CellFilter(frozen.archive, MeasurePredictor(space, frozen.archive.measure_names,
                                                                  domain.predict_measures))
        self.span = np.where(frozen.archive.interval_size > 0, frozen.archive.interval_size, 1.0)

    def new(self, configs: list[dict], parents: list[Parent]) -> list[dict]:
        """Valid configurations not evaluated by the archive's run (nor a parent), each once."""
        space, out = self.f.domain.space, []
        hashes = set(self.f.seen) | {space.hash(p.config) for p in parents}
        for config in configs:
            if space.validate(config):
                continue
            digest = space.hash(config)
            if digest not in hashes:
                hashes.add(digest)
                out.append(config)
        return out

    def children(self, task: Task) -> dict[str, tuple[dict | None, bool, int]]:
        """Per variant: its child (None: none), whether what it wrote was only duplicates, tokens spent."""
        rng = lambda: np.random.default_rng(task.seed)  # noqa: E731 - every variant starts from the same state
        out: dict[str, tuple[dict | None, bool, int]] = {}
        one = self.mutation.generate([task.parent], rng()).configs
        out["mutation"] = self._first(one, [task.parent], 0)
        many = self.new(self.mutation.propose([task.parent], rng(), self.proposals).configs, [task.parent])
        out["mutation+filter"] = (many[self.filter.choose(many)] if many else None, not many, 0)
        pair = [task.parent, task.mate]
        out["uniform_crossover"] = self._first(self.crossover.generate(pair, rng()).configs, pair, 0)
        for name, op, parents in (("lmx", self.lmx, task.context), ("llm_mutation", self.llm_mutation, pair)):
            single = op.generate(parents, rng(), task.target)
            out[name] = self._first(single.configs, parents, single.tokens)
            several = op.propose(parents, rng(), self.proposals, task.target)
            fresh = self.new(several.configs, parents)
            out[f"{name}+filter"] = (fresh[self.filter.choose(fresh, task.target)] if fresh else None,
                                     bool(several.configs) and not fresh, several.tokens)
        return out

    def _first(self, configs: list[dict], parents: list[Parent], tokens: int) -> tuple[dict | None, bool, int]:
        fresh = self.new(configs[:1], parents)
        return (fresh[0] if fresh else None, bool(configs) and not fresh, tokens)

    def score(self, task: Task, child: dict | None, duplicate: bool) -> dict[str, float]:
        """The per-task metrics of one child."""
        row = dict.fromkeys(METRICS, 0.0)
        row["dup"] = float(duplicate)
        row["dobj"] = math.nan
        if child is None:
            return row
        domain, archive = self.f.domain, self.f.archive
        results = [evaluate_config(domain, child)] + [evaluate_draw(domain, child, d)
                                                      for d in range(1, self.draws if accepts_draws(domain) else 1)]
        first = results[0]
        if not first.usable:
            return {**row, "child": 1.0}
        objective = float(np.mean([r.objective for r in results if r.usable]))
        point = [f(child, first) for f in self.f.measures]
        cell = archive.index_of_single(point)
        goal = archive.index_of_single([task.target[n] for n in archive.measure_names])
        try:
            elite = archive.elite(cell)["objective"]
        except KeyError:
            elite = None
        cells = np.asarray(archive.int_to_grid_index([cell, goal]))
        return {"child": 1.0, "dup": 0.0, "fill": float(elite is None), "hit": float(cell == goal),
                "near": float(np.max(np.abs(cells[0] - cells[1])) <= 1),
                "gain": float(elite is None or objective > elite), "dobj": objective - task.parent.objective}

    def run(self, task: Task) -> dict[str, dict[str, float]]:
        start = time.perf_counter()
        made = self.children(task)
        rows = {name: {**self.score(task, child, dup), "tokens": float(tokens)}
                for name, (child, dup, tokens) in made.items()}
        rows["_seconds"] = {"s": time.perf_counter() - start}
        return rows


def bootstrap(groups: list[np.ndarray], rng: np.random.Generator, n: int = 2000) -> tuple[float, float]:
    """95% bootstrap interval of the mean paired difference, resampling archives, then tasks within each.

    Tasks drawn from one frozen archive share it, so they are not independent: resampling tasks
    alone would give too narrow an interval.
    """
    means = np.empty(n)
    for b in range(n):
        chosen = (groups[i] for i in rng.integers(0, len(groups), size=len(groups)))
        means[b] = np.concatenate([g[rng.integers(0, len(g), size=len(g))] for g in chosen]).mean()
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def table(archives: list[list[dict]], title: str) -> str:
    """The markdown table of the tasks of some archives (rates, the paired difference of gain against the baseline)."""
    rng = np.random.default_rng(0)
    results = [r for tasks_of in archives for r in tasks_of]
    lines = [f"**{title}** ({len(results)} paired tasks on {len(archives)} archives)", "",
             "| variant | child | dup | fill | hit | near | gain | Δ gain vs " + BASELINE + " (95% CI) | dobj "
             "| tokens/child |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name in VARIANTS:
        rows = [r[name] for r in results]
        rates = {m: np.mean([row[m] for row in rows]) for m in METRICS}
        diffs = [np.array([r[name]["gain"] - r[BASELINE]["gain"] for r in tasks_of]) for tasks_of in archives]
        low, high = bootstrap(diffs, rng)
        dobj = [row["dobj"] for row in rows if not math.isnan(row["dobj"])]
        children = sum(row["child"] for row in rows)
        tokens = sum(row["tokens"] for row in rows) / children if children else 0.0
        lines.append(f"| {name} | " + " | ".join(f"{100 * rates[m]:.0f}%" for m in METRICS)
                     + f" | {100 * np.concatenate(diffs).mean():+.0f} pp ({100 * low:+.0f}, {100 * high:+.0f}) | "
                     + (f"{np.mean(dobj):+.3f}" if dobj else "-") + f" | {tokens:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archives", default="k-module:3,retrieval-sim:2",
                        help="DOMAIN:COUNT,... frozen archives per domain (seeds 0..COUNT-1)")
    parser.add_argument("--tasks", type=int, default=100, help="tasks per archive")
    parser.add_argument("--evals", type=int, default=100, help="evaluations of each archive's classic run")
    parser.add_argument("--init-random", type=int, default=30)
    parser.add_argument("--proposals", type=int, default=4)
    parser.add_argument("--draws", type=int, default=5, help="evaluations averaged per child (noisy domains)")
    parser.add_argument("--k", type=int, default=6, help="LMX's context: elites nearest the target")
    parser.add_argument("--threads", type=int, default=4, help="tasks in flight (the model batches them)")
    parser.add_argument("--llm-base-url", default="", help="'' = the embedded gemma-3-270m")
    parser.add_argument("--json", default="", help="write every task's rows here")
    args = parser.parse_args()
    client = LLMClient(base_url=args.llm_base_url or None, cache=cache_path(True), concurrency=args.threads,
                       timeout_s=300.0)
    start = time.perf_counter()
    all_rows: dict[str, list[list[dict]]] = {}  # domain (and "all") -> per archive, its tasks' rows
    for spec in args.archives.split(","):
        name, count = spec.split(":")
        for seed in range(int(count)):
            frozen = freeze(name, seed, args.evals, args.init_random)
            prober = Prober(frozen, client, args.proposals, args.draws, args.k)
            todo = tasks(frozen, args.tasks, seed, args.k)
            print(f"{frozen.label}: {len(frozen.archive)} elites, qd {frozen.archive.stats.qd_score:.2f}; "
                  f"{len(todo)} tasks", file=sys.stderr, flush=True)
            rows = []
            with cf.ThreadPoolExecutor(args.threads) as pool:
                for i, row in enumerate(pool.map(prober.run, todo)):
                    rows.append(row)
                    if (i + 1) % 10 == 0:
                        print(f"  {i + 1}/{len(todo)} tasks, {time.perf_counter() - start:.0f} s", file=sys.stderr,
                              flush=True)
            all_rows.setdefault(name, []).append(rows)
            all_rows.setdefault("all", []).append(rows)
    wall = time.perf_counter() - start
    for name, rows in all_rows.items():
        if name != "all" or len(all_rows) > 2:
            print(table(rows, "all archives" if name == "all" else name) + "\n")
    usage = client.usage
    print(f"{wall / 60:.1f} min; LLM calls {usage.calls} ({usage.cache_hits} from the request cache), "
          f"tokens {usage.tokens_in} in / {usage.tokens_out} out")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "wall_s": wall, "rows": all_rows}))


if __name__ == "__main__":
    main()
