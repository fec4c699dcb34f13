"""The arms of ``scripts/bench_search.py``: qd's searches and what users would run instead, measured alike.

Every arm searches one :class:`BenchDomain` for the same number of evaluations (re-evaluations
included), from the same seed and the same initial configurations (``init`` random samples of
the space drawn from the seed, evaluated first by every arm), on the same domain instances:

``qd-default``    qd as shipped: the main job's operators (:data:`qd.config.DEMO_CONFIG`) with the
                  defaults of :data:`qd.config.DEFAULTS` (the filter, the noise policy and its share)
``qd-llm``        the LLM set: mutation 1.0 plus LMX 0.5 and LLM mutation 0.5 on the embedded model
                  (the main job's operators until the decision rules of the README turned them off),
                  ``noise = "auto"``, ``wait_for_llm`` (each operator gets its weight's share)
``qd-classic``    mutation + uniform crossover, ``noise = "auto"``
``qd-iso``        Iso+LineDD (numeric domains), ``noise = "auto"``
``random``        random configurations of the space
``optuna-tpe``    Optuna's TPE on the domain's objective
``optuna-nsga2``  Optuna's NSGA-II on the objective and the map's cost-like measures
``pyribs-iso``    pyribs's IsoLineEmitter (numeric domains) on a qd archive
``pyribs-cmame``  pyribs's CMA-ME (five EvolutionStrategyEmitters, ranker ``2imp``, sigma0 0.5, batches of
                  20; numeric domains)

Optuna and pyribs see each configuration's single score; ``Text`` parameters are not theirs to
search (they keep the initial configuration's text, as Optuna users keep a fixed prompt). A
configuration an Optuna sampler proposes again is answered from memory and not charged; after
:data:`MAX_REPEATS` repeats in a row the arm evaluates a random configuration instead, as qd's
scheduler does when its operators keep repeating.

Whatever an arm did, its evaluations end in an archive of the domain's shape (the qd arms' own,
the others' by plain MAP-Elites insertion of every result), and :func:`measure_run` scores that
archive alike for every arm: QD score and coverage as searched, corrected QD score and coverage
(``qd validate``'s machinery: every elite re-scored on held-out draws and inserted by its means
into an empty archive), the held-out score of the configuration the arm would hand out as its
best (its highest search score), and the hypervolume of the corrected archive's (objective,
cost measures) front.
"""
from __future__ import annotations

import hashlib
import json
import math
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qd.analysis.descriptors import resolve_measures
from qd.analysis.measuring import measure_result
from qd.analysis.validation import corrected_archive, validate, validated_scores
from qd.archives import GridArchive
from qd.bench.stats import hypervolume
from qd.config import DEFAULTS, DEMO_CONFIG
from qd.domain import VALIDATION, Domain
from qd.domains import get_domain
from qd.evaluation import evaluate_config
from qd.evaluators import SerialEvaluator
from qd.listeners import Evaluated, SearchListener
from qd.operators import build_operators
from qd.scheduler import SEED
from qd.search import Search
from qd.space import Space
from qd.store import RunStore

__all__ = ["ARMS", "LLM_ARMS", "NUMERIC_ARMS", "BENCH_DOMAINS", "COST_MEASURES", "MAX_REPEATS", "BenchDomain",
           "FlatSpace", "RunOutput", "arms_for", "bench_domain", "bench_run", "check_paired", "front_hypervolume",
           "initial_configs", "instance_digest", "measure_run", "parse_arm", "run_arm"]

ARMS = ("qd-default", "qd-llm", "qd-classic", "qd-iso", "random", "optuna-tpe", "optuna-nsga2", "pyribs-iso",
        "pyribs-cmame")
LLM_ARMS = ("qd-llm",)
NUMERIC_ARMS = ("qd-iso", "pyribs-iso", "pyribs-cmame")  # need a space of numbers only
#: Descriptors that are a cost (lower is cheaper): NSGA-II minimises them, the hypervolume counts them.
COST_MEASURES = ("llm_calls", "log2_calls", "calls_per_instance", "predicted_calls", "tokens_in", "tokens_out",
                 "tokens_total", "max_prompt_tokens", "cost_usd", "latency_s", "critical_path", "max_fanout")
MAX_REPEATS = 50
CLASSIC_OPERATORS = {"mutation": 1.0, "uniform_crossover": 1.0}
LLM_OPERATORS = {"mutation": 1.0, "lmx": 0.5, "llm_mutation": 0.5}
# What every qd arm runs with unless its name says otherwise (``qd-classic:filter=true``): fixed here,
# not read from qd's defaults, so that a recorded run means the same after a default changes.
_QD_ARM_SETTINGS = {"noise": "auto", "wait_for_llm": True, "filter": False, "noise_share": 0.5}
ISO_OPERATORS = {"iso_line_dd": {"weight": 1.0, "iso_sigma": 0.1, "line_sigma": 0.2}}


@dataclass
class BenchDomain:
    """A domain of the benchmark and what every arm shares on it.

    Attributes
    ----------
    name : str
        A built-in domain name or ``package.module:attribute`` (``qd.domains.get_domain``).
    options : dict
        The domain's constructor options.
    measures, ranges, bins :
        The map (default: the domain's own).
    budget : int
        Evaluations per arm, re-evaluations included.
    init : int
        Random configurations every arm evaluates first.
    objective_range : (float, float)
        The objective's range: the hypervolume's scale, and the yardstick of "within 5%".
    validation_samples : int
        Held-out draws per elite for the corrected scores.
    cost_measures : tuple of str
        The measures to minimise (default: those of ``measures`` in :data:`COST_MEASURES`).
    """

    name: str
    options: dict[str, Any] = field(default_factory=dict)
    measures: tuple[str, ...] = ()
    ranges: tuple[tuple[float, float], ...] = ()
    bins: tuple[int, ...] = ()
    budget: int = 300
    init: int = 30
    objective_range: tuple[float, float] = (0.0, 1.0)
    validation_samples: int = 10
    cost_measures: tuple[str, ...] | None = None
    offset: float | None = field(default=None, init=False)  # the domain's QD-score offset, once bound

    def __post_init__(self) -> None:
        if not 1 <= self.init < self.budget:
            raise ValueError(f"{self.name}: init must be in [1, budget), got init={self.init}, budget={self.budget}")
        if not self.objective_range[0] < self.objective_range[1]:
            raise ValueError(f"{self.name}: objective_range must be (low, high) with low < high")

    def build(self) -> Domain:
        """A fresh domain, bound to this spec (:meth:`bind`)."""
        return self.bind(get_domain(self.name, **self.options))

    def bind(self, domain: Domain) -> Domain:
        """Fill in what the spec leaves to the domain (its default map, its QD-score offset); returns ``domain``."""
        if not self.measures:
            self.measures = tuple(domain.default_measures)
            self.ranges = tuple(tuple(map(float, r)) for r in domain.default_ranges)
            self.bins = tuple(domain.default_bins)
        if self.cost_measures is None:
            self.cost_measures = tuple(m for m in self.measures if m in COST_MEASURES)
        self.offset = float(domain.qd_score_offset)
        return domain

    def empty_archive(self, solution_dim: int | None = None) -> GridArchive:
        """An empty archive of the benchmark's shape (numeric solutions with ``solution_dim``)."""
        if self.offset is None:
            raise RuntimeError(f"{self.name}: the spec has no map yet; build or bind its domain first")
        return GridArchive(solution_dim=solution_dim, dims=list(self.bins), ranges=[list(r) for r in self.ranges],
                           measure_names=list(self.measures), qd_score_offset=self.offset)


#: The benchmark's domains (``scripts/bench_search.py --domains``); any other name is built with its defaults.
BENCH_DOMAINS: dict[str, Callable[[], BenchDomain]] = {
    # The noise bench's retrieval (16 records, 3 questions per evaluation: a noisy score) on the
    # domain's default 16 x 16 map over (log2 LLM calls, largest prompt).
    "retrieval-sim": lambda: BenchDomain("retrieval-sim", {"n_pairs": 16, "n_instances": 3, "max_samples": 3,
                                                           "max_few_shot": 3}, budget=400, init=40),
    # The 10-joint arm with objective noise 1.0 (bench_noise's), 10 x 10 map: no cost measure.
    "arm": lambda: BenchDomain("arm", {"joints": 10, "noise": 1.0}, ("x", "y"), ((-10.0, 10.0), (-10.0, 10.0)),
                               (10, 10), budget=3000, init=100, objective_range=(-math.pi**2, 0.0)),
    # Headline topics on the embedded model (real calls, request cache on), 4 headlines per evaluation.
    # A loaded machine queues calls for minutes: a long timeout keeps load from turning into failures.
    "topics": lambda: BenchDomain("topics", {"cache": True, "n_instances": 4, "timeout_s": 600.0}, budget=60,
                                  init=12, validation_samples=3),
}


def bench_domain(name: str, **overrides: Any) -> BenchDomain:
    """The benchmark's spec of ``name`` (:data:`BENCH_DOMAINS`, else the domain's defaults), with ``overrides``."""
    spec = BENCH_DOMAINS[name]() if name in BENCH_DOMAINS else BenchDomain(name)
    for key, value in overrides.items():
        if not hasattr(spec, key):
            raise ValueError(f"unknown BenchDomain field {key!r}")
        setattr(spec, key, value)
    spec.__post_init__()
    return spec


def initial_configs(space: Space, seed: int, n: int) -> tuple[list[dict], np.random.Generator]:
    """``n`` distinct random configurations from ``seed``, and the generator that drew them.

    Random search goes on drawing from that generator. It is a stream of its own: qd's scheduler
    draws from ``default_rng(seed)``, and the same stream would make its random configurations
    repeat the initial ones.
    """
    rng = np.random.default_rng([int(seed), 1])
    seen: dict[str, dict] = {}
    for _ in range(100 * n):
        if len(seen) == n:
            break
        config = space.sample(rng)
        seen.setdefault(space.hash(config), config)
    if len(seen) < n:
        raise ValueError(f"the space has fewer than {n} distinct random configurations")
    return list(seen.values()), rng


def instance_digest(domain: Domain) -> str:
    """A digest of what a domain scores configurations on: its settings and, where it has them, its instances."""
    parts: dict[str, Any] = {"name": domain.name, **{k: v for k, v in vars(domain).items()
                                                     if isinstance(v, (bool, int, float, str, type(None)))}}
    instances_for = getattr(domain, "instances_for", None)
    if callable(instances_for):
        parts["instances"] = [repr(instances_for(d, s)) for s in domain.splits for d in (0, 1)]
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=repr).encode()).hexdigest()[:16]


def _hash_set(space: Space, configs: Sequence[dict]) -> str:
    return _digest_of(space.hash(c) for c in configs)


def _digest_of(hashes: Iterable[str]) -> str:
    return hashlib.sha256("".join(sorted(hashes)).encode()).hexdigest()[:16]


class FlatSpace:
    """A space as flat named parameters, for searches that take a list of numbers and choices (Optuna, pyribs).

    Float, Int, Categorical and Bool leaves are searched (inside nested spaces and fixed-length
    Seqs, named like ``angles[3]``); ``Text`` leaves keep the template's value.

    Raises
    ------
    ValueError
        For a variable-length Seq (its shape is not a fixed list of parameters).
    """

    def __init__(self, space: Space, template: dict):
        self.space, self.template = space, json.loads(json.dumps(template))
        self.leaves: list[tuple[str, tuple, Any]] = []
        for path, param, _ in space.walk(template):
            if param.kind == "seq" and param.min_len != param.max_len:
                raise ValueError(f"{'.'.join(map(str, path))}: a variable-length Seq cannot be searched as a flat "
                                 "list of parameters (Optuna, pyribs)")
            if param.kind in ("float", "int", "categorical", "bool"):
                name = "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else p) for i, p in enumerate(path))
                self.leaves.append((name, path, param))

    @property
    def numeric(self) -> bool:
        """Whether every searched leaf is a number (pyribs's emitters need that)."""
        return all(p.kind in ("float", "int") for _, _, p in self.leaves)

    def distributions(self) -> dict[str, Any]:
        """Optuna distributions by leaf name (categorical choices by index)."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        out: dict[str, Any] = {}
        for name, _, p in self.leaves:
            if p.kind == "float":
                out[name] = FloatDistribution(p.low, p.high, log=p.log)
            elif p.kind == "int":
                out[name] = IntDistribution(p.low, p.high)
            elif p.kind == "bool":
                out[name] = CategoricalDistribution([False, True])
            else:
                out[name] = CategoricalDistribution(list(range(len(p.choices))))
        return out

    def params(self, config: dict) -> dict[str, Any]:
        """The leaf values of ``config`` (categoricals as indices)."""
        out = {}
        for name, path, p in self.leaves:
            value = _get(config, path)
            out[name] = p.index(value) if p.kind == "categorical" else value
        return out

    def config(self, params: Mapping[str, Any]) -> dict:
        """The configuration of leaf values ``params`` (the template's values elsewhere)."""
        config = json.loads(json.dumps(self.template))
        for name, path, p in self.leaves:
            value = params[name]
            if p.kind == "categorical":
                value = p.choices[int(value)]
            elif p.kind == "int":
                value = int(round(float(value)))
            elif p.kind == "float":
                value = min(max(float(value), p.low), p.high)
            _set(config, path, value)
        return config

    def vector(self, config: dict) -> np.ndarray:
        """The numeric leaves of ``config`` as a vector (numeric spaces)."""
        return np.array([float(_get(config, path)) for _, path, _ in self.leaves])

    def from_vector(self, x: Sequence[float]) -> dict:
        """The configuration of a vector of numeric leaves (clipped to the bounds)."""
        return self.config({name: v for (name, _, _), v in zip(self.leaves, x)})

    def bounds(self) -> list[tuple[float, float]]:
        """Each numeric leaf's (low, high)."""
        return [(float(p.low), float(p.high)) for _, _, p in self.leaves]


def _get(config: Any, path: tuple) -> Any:
    for key in path:
        config = config[key]
    return config


def _set(config: Any, path: tuple, value: Any) -> None:
    for key in path[:-1]:
        config = config[key]
    config[path[-1]] = value


@dataclass
class RunOutput:
    """What one arm's search left: its archive and how it got there (before :func:`measure_run`)."""

    archive: Any
    evaluations: int
    init_hash: str
    extra: dict[str, Any] = field(default_factory=dict)


class _Recorder:
    """Evaluates configurations for the arms that are not qd and files every result in an archive."""

    def __init__(self, spec: BenchDomain, domain: Domain, measures: list, archive: Any):
        self.spec, self.domain, self.measures, self.archive = spec, domain, measures, archive
        self.names = list(spec.measures)
        self.count = 0
        self.values: dict[str, tuple[float, list[float]] | None] = {}
        self.order: list[str] = []  # hashes in evaluation order (what the arm really ran first)

    def evaluate(self, config: dict) -> tuple[float, list[float]] | None:
        result = evaluate_config(self.domain, config)
        measures = measure_result(config, result, self.measures, self.names)
        out = None
        if result.usable:
            out = (float(result.objective), [float(measures[n]) for n in self.names])
            self.archive.add_single(config, out[0], out[1], id=self.count, feedback=result.feedback)
        self.count += 1
        digest = self.domain.space.hash(config)
        self.values[digest] = out
        self.order.append(digest)
        return out

    def initial_hash(self, n: int) -> str:
        """Digest of the first ``n`` configurations evaluated (check_paired compares it across arms)."""
        return _digest_of(self.order[:n])


class _SeedWatch(SearchListener):
    """Collects the configurations a qd search evaluated as seeds (the shared initial configurations)."""

    def __init__(self) -> None:
        self.configs: list[dict] = []

    def on_result(self, search: Search, event: Evaluated) -> None:
        if event.candidate.operator == SEED:
            self.configs.append(event.candidate.config)


def _llm_client() -> Any:
    """The LLM operators' client as the main job builds it, without the request cache (tokens are this run's).

    Its timeout is long (10 min): on a loaded machine a call waits for minutes, and a timeout would
    count as the operator's failure.
    """
    from qd.config import resolve_config
    from qd.runner import build_llm_client

    return build_llm_client(resolve_config({"llm": {"cache": False, "timeout_s": 600.0}}))


def _run_qd(spec: BenchDomain, domain: Domain, seed: int, init: list[dict], table: Mapping[str, Any],
            options: Mapping[str, Any] | None = None) -> RunOutput:
    clients: list[Any] = []

    def client() -> Any:
        if not clients:
            clients.append(_llm_client())
        return clients[0]

    operators = build_operators(dict(table), domain.space, client)
    archive = spec.empty_archive()
    watch = _SeedWatch()
    with Search(domain, archive, SerialEvaluator(domain), operators=operators,
                measures=resolve_measures(list(spec.measures), domain), budget=spec.budget, seeds=init,
                init_random=0, seed=seed, llm_client=clients[0] if clients else None, listeners=[watch],
                **{**_QD_ARM_SETTINGS, **(options or {})}) as search:
        search.run()
    extra = {"resamples": int(search.stats["resample"].evaluated) if "resample" in search.stats else 0}
    if clients:
        usage = clients[0].usage.as_dict()
        extra.update(llm_calls=usage.get("calls", 0), llm_tokens=usage.get("tokens_in", 0) + usage.get("tokens_out", 0))
        extra["operators"] = {n: s.as_dict() for n, s in search.stats.items()}
    return RunOutput(archive, search.finished, _hash_set(domain.space, watch.configs), extra)


def _run_random(spec: BenchDomain, domain: Domain, seed: int, init: list[dict], rng: np.random.Generator) -> RunOutput:
    rec = _Recorder(spec, domain, resolve_measures(list(spec.measures), domain), spec.empty_archive())
    for config in init:
        rec.evaluate(config)
    while rec.count < spec.budget:
        config = domain.space.sample(rng)
        if domain.space.hash(config) not in rec.values:
            rec.evaluate(config)
    return RunOutput(rec.archive, rec.count, rec.initial_hash(len(init)))


def _run_optuna(spec: BenchDomain, domain: Domain, seed: int, init: list[dict], kind: str) -> RunOutput:
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    flat = FlatSpace(domain.space, init[0])
    dists = flat.distributions()
    costs = [spec.measures.index(m) for m in spec.cost_measures or ()]
    if kind == "tpe":
        sampler: Any = optuna.samplers.TPESampler(seed=seed, n_startup_trials=len(init))
        directions = ["maximize"]
    else:
        sampler = optuna.samplers.NSGAIISampler(seed=seed, population_size=len(init))
        directions = ["maximize"] + ["minimize"] * len(costs)
    study = optuna.create_study(directions=directions, sampler=sampler)
    for config in init:
        study.enqueue_trial(flat.params(config))
    rec = _Recorder(spec, domain, resolve_measures(list(spec.measures), domain), spec.empty_archive())
    fallback = np.random.default_rng([seed, 7])

    def values(out: tuple[float, list[float]]) -> Any:
        return out[0] if kind == "tpe" else [out[0], *(out[1][i] for i in costs)]

    repeats = free = 0
    while rec.count < spec.budget:
        trial = study.ask(dists)
        config = flat.config(trial.params)
        key = domain.space.hash(config)
        if key in rec.values:  # a repeat: the sampler learns the answer it had, and no evaluation is charged
            repeats, free = repeats + 1, free + 1
            out = rec.values[key]
        else:
            repeats, out = 0, rec.evaluate(config)
        study.tell(trial, state=TrialState.FAIL) if out is None else study.tell(trial, values(out))
        if repeats >= MAX_REPEATS:  # the sampler is stuck: a random configuration, told to it as a trial
            while key in rec.values:
                config = domain.space.sample(fallback)
                key = domain.space.hash(config)
            repeats, out = 0, rec.evaluate(config)
            told = None if out is None else np.atleast_1d(values(out)).tolist()
            study.add_trial(optuna.trial.create_trial(params=flat.params(config), distributions=dists, values=told,
                                                      state=TrialState.FAIL if out is None else TrialState.COMPLETE))
    return RunOutput(rec.archive, rec.count, rec.initial_hash(len(init)), {"repeats_free": free})


def _run_pyribs(spec: BenchDomain, domain: Domain, seed: int, init: list[dict], kind: str) -> RunOutput:
    from ribs.emitters import EvolutionStrategyEmitter, IsoLineEmitter
    from ribs.schedulers import Scheduler as RibsScheduler

    flat = FlatSpace(domain.space, init[0])
    if not flat.numeric:
        raise ValueError(f"{kind}: pyribs's emitters need a space of numbers only; {spec.name}'s is not")
    bounds = flat.bounds()
    archive = spec.empty_archive(solution_dim=len(bounds))
    rec = _Recorder(spec, domain, resolve_measures(list(spec.measures), domain), spec.empty_archive())
    x_init = np.array([flat.vector(c) for c in init])
    if kind == "pyribs-iso":
        emitters: list[Any] = [IsoLineEmitter(archive, iso_sigma=0.1, line_sigma=0.2, initial_solutions=x_init,
                                              bounds=bounds, batch_size=64, seed=seed)]
    else:  # CMA-ME starts from the best initial configuration, once the initial ones are in the archive
        outs = [rec.evaluate(c) for c in init]
        if any(o is None for o in outs):
            raise RuntimeError(f"{kind}: an initial configuration gave no usable result")
        archive.add(x_init, np.array([o[0] for o in outs]), np.array([o[1] for o in outs]))
        x0 = x_init[int(np.argmax([o[0] for o in outs]))]
        emitters = [EvolutionStrategyEmitter(archive, x0=x0, sigma0=0.5, ranker="2imp", bounds=bounds, batch_size=20,
                                             seed=seed * 10 + i) for i in range(5)]
    scheduler = RibsScheduler(archive, emitters)
    while rec.count < spec.budget:
        xs = scheduler.ask()
        room = spec.budget - rec.count
        outs = []
        for x in xs[:room]:
            out = rec.evaluate(flat.from_vector(x))
            if out is None:
                raise RuntimeError(f"{kind}: configuration {flat.from_vector(x)} gave no usable result")
            outs.append(out)
        objectives, measures = np.array([o[0] for o in outs]), np.array([o[1] for o in outs])
        if len(outs) == len(xs):
            scheduler.tell(objectives, measures)
        else:  # the budget ends inside a batch: what was evaluated still enters the archive
            archive.add(xs[:room], objectives, measures)
    return RunOutput(rec.archive, rec.count, rec.initial_hash(len(init)))


def arms_for(domain: Domain, arms: Sequence[str] = ARMS) -> list[str]:
    """The ``arms`` that can search ``domain``.

    Optuna's and pyribs's need a flat space (:class:`FlatSpace`); pyribs's and Iso+LineDD numbers only.
    """
    try:
        numeric = FlatSpace(domain.space, domain.space.sample(np.random.default_rng(0))).numeric
        flat = True
    except ValueError:
        numeric = flat = False
    return [a for a in arms
            if (numeric or parse_arm(a)[0] not in NUMERIC_ARMS) and (flat or not a.startswith("optuna-"))]


def parse_arm(name: str) -> tuple[str, dict[str, Any]]:
    """An arm's name and its options: ``qd-classic:noise=none`` is ``qd-classic`` with plain MAP-Elites.

    Only qd's arms take options: ``noise`` (a policy of ``qd.noise``), ``noise_share`` (its
    re-evaluations at most per result) and ``filter`` (``true`` or ``false``: the pre-evaluation
    filter of ``qd.prefilter``, 4 proposals per draw), to compare them;
    several are separated by commas (``qd-classic:noise=none,filter=true``).

    Raises
    ------
    ValueError
        For an unknown arm or option.
    """
    from qd.noise import POLICIES

    base, _, rest = name.partition(":")
    if base not in ARMS:
        raise ValueError(f"unknown arm {base!r}; arms: {', '.join(ARMS)}")
    allowed = {"noise": {p: p for p in POLICIES}, "filter": {"true": True, "false": False},
               "noise_share": {v: float(v) for v in ("0.1", "0.2", "0.25", "0.3", "0.5")}}
    options: dict[str, Any] = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        if not base.startswith("qd-") or value not in allowed.get(key, {}):
            raise ValueError(f"arm {name!r}: only qd's arms take options, noise=one of {', '.join(POLICIES)}, "
                             f"filter=true|false and noise_share=one of {', '.join(allowed['noise_share'])}")
        options[key] = allowed[key][value]
    return base, options


def run_arm(spec: BenchDomain, arm: str, seed: int, domain: Domain | None = None) -> RunOutput:
    """Run one arm for ``spec.budget`` evaluations from ``seed`` (``domain``: a built one to reuse).

    The arm's archive is the one qd searched with, or, for the other arms, every result inserted
    into an empty archive of the benchmark's shape (plain MAP-Elites), so that
    :func:`measure_run` scores them alike.
    """
    arm, options = parse_arm(arm)
    domain = spec.build() if domain is None else spec.bind(domain)
    init, rng = initial_configs(domain.space, seed, spec.init)
    if arm == "qd-default":
        return _run_qd(spec, domain, seed, init, dict(DEMO_CONFIG["operators"]), {**_default_settings(), **options})
    if arm == "qd-llm":
        return _run_qd(spec, domain, seed, init, LLM_OPERATORS, options)
    if arm == "qd-classic":
        return _run_qd(spec, domain, seed, init, CLASSIC_OPERATORS, options)
    if arm == "qd-iso":
        if not FlatSpace(domain.space, init[0]).numeric:
            raise ValueError(f"qd-iso: Iso+LineDD needs a space of numbers only; {spec.name}'s is not")
        return _run_qd(spec, domain, seed, init, ISO_OPERATORS, options)
    if arm == "random":
        return _run_random(spec, domain, seed, init, rng)
    if arm.startswith("optuna-"):
        return _run_optuna(spec, domain, seed, init, arm.split("-", 1)[1])
    return _run_pyribs(spec, domain, seed, init, arm)


def _default_settings() -> dict[str, Any]:
    """Qd's defaults (:data:`qd.config.DEFAULTS`) of what the other qd arms fix."""
    return {"noise": DEFAULTS["archive"]["noise"], "wait_for_llm": DEFAULTS["operators"]["wait_for_llm"],
            "filter": DEFAULTS["operators"]["filter"], "proposals": DEFAULTS["operators"]["proposals"],
            "noise_share": DEFAULTS["archive"]["noise_share"]}


def measure_run(spec: BenchDomain, domain: Domain, output: RunOutput) -> dict[str, Any]:
    """Score one arm's archive (module docstring); every arm's archive is scored the same way.

    Returns
    -------
    dict
        ``qd_score``, ``coverage`` (as searched), ``corrected_qd``, ``corrected_coverage``,
        ``best_search`` and ``best_validated`` (the arm's own pick: its highest search score, the
        earliest on ties), ``hypervolume`` (of the corrected archive's normalised (objective, cost
        measures) front; None without cost measures), ``elites``, ``validation_evaluations``.
    """
    archive = output.archive
    measures = resolve_measures(list(spec.measures), domain)
    with tempfile.TemporaryDirectory() as tmp, RunStore(Path(tmp) / "validation.sqlite") as store:
        report = validate(store, archive, domain, SerialEvaluator(domain), measures=measures,
                          samples=spec.validation_samples, empty_archive=spec.empty_archive)
        scores = validated_scores(store, VALIDATION, spec.validation_samples)
    elites = list(archive)
    pick = max(elites, key=lambda e: (float(e["objective"]), -int(e["id"])))
    hash_of = domain.space.hash
    entry = scores.get(hash_of(pick["solution"]))
    fixed = corrected_archive(spec.empty_archive(), elites, scores, lambda e: hash_of(e["solution"]))
    return {"qd_score": float(archive.stats.qd_score), "coverage": float(archive.stats.coverage),
            "corrected_qd": report.corrected_qd_score, "corrected_coverage": report.corrected_coverage,
            "best_search": float(pick["objective"]), "best_validated": entry[1] if entry else math.nan,
            "hypervolume": front_hypervolume(spec, fixed), "elites": len(elites),
            "validation_evaluations": report.evaluations}


def front_hypervolume(spec: BenchDomain, archive: Any) -> float | None:
    """Hypervolume of ``archive``'s elites in (objective, cost measures), each scaled to [0, 1], 1 best.

    The objective is scaled by ``spec.objective_range``, a cost measure by its archive range
    (reversed: the cheapest is 1); the reference point is 0 in every coordinate. None when the
    domain has no cost measure.
    """
    if not spec.cost_measures:
        return None
    low, high = spec.objective_range
    cols = [spec.measures.index(m) for m in spec.cost_measures]
    points = []
    for elite in archive:
        point = [(float(elite["objective"]) - low) / (high - low)]
        for c in cols:
            lo, hi = spec.ranges[c]
            point.append((hi - float(elite["measures"][c])) / (hi - lo))
        points.append(np.clip(point, 0.0, 1.0))
    return hypervolume(points, [0.0] * (1 + len(cols))) if points else 0.0


def check_paired(rows: Sequence[Mapping[str, Any]]) -> None:
    """Assert that the arms of each (domain, seed) saw the same budget, initial configurations and instances.

    Raises
    ------
    AssertionError
        Naming the domain, seed and arm that differ, and in what.
    """
    first: dict[tuple, Mapping[str, Any]] = {}
    for row in rows:
        key = (row["domain"], row["seed"])
        ref = first.setdefault(key, row)
        for name in ("budget", "evaluations", "init_hash", "instances"):
            if row[name] != ref[name]:
                raise AssertionError(f"{row['domain']} seed {row['seed']}: arm {row['arm']} has {name} "
                                     f"{row[name]!r}, arm {ref['arm']} has {ref[name]!r}: the arms are not paired")


def bench_run(spec: BenchDomain, arm: str, seed: int) -> dict[str, Any]:
    """One arm on one seed, measured: the row ``scripts/bench_search.py`` stores and compares."""
    domain = spec.build()
    start = time.perf_counter()
    output = run_arm(spec, arm, seed, domain)
    search_s = time.perf_counter() - start
    row = {"domain": spec.name, "arm": arm, "seed": seed, "budget": spec.budget, "evaluations": output.evaluations,
           "init_hash": output.init_hash, "instances": instance_digest(domain), "search_s": round(search_s, 2)}
    row.update(measure_run(spec, domain, output))
    row.update({k: v for k, v in output.extra.items() if k != "operators"})
    if "operators" in output.extra:
        row["operators"] = output.extra["operators"]
    row["total_s"] = round(time.perf_counter() - start, 2)
    return row
