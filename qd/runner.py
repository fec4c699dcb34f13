"""Build a search from a resolved run config, run it in a run directory, and reopen finished runs.

The run directory holds ``config.toml`` (the resolved config), ``run.sqlite`` (the
:class:`~qd.store.RunStore`) and, on request, ``heatmap.png``.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qd.analysis.descriptors import resolve_measures
from qd.archives import CVTArchive, GridArchive
from qd.archives.plot import plot_archive
from qd.config import DEMO_CONFIG, OPERATOR_FLAGS, ConfigError, dump_config, load_config, resolve_config
from qd.domain import Domain
from qd.domains import get_domain
from qd.evaluators.registry import evaluator_from_config
from qd.listeners import build_listeners
from qd.llm import LLMClient
from qd.llm.cache import cache_path
from qd.llm.local import set_local_server_threads
from qd.llm.pipeline import PipelineLLM
from qd.llm.prices import normalize_prices
from qd.llm.threads import ThreadTuner
from qd.operators import build_operators as _build_operators
from qd.result import DEFAULT_TRACE_TEXT_CHARS
from qd.rundir import (
    ARCHIVE_META,
    RunLock,
    archive_spec,
    check_resume,
    check_same_archive,
    open_store,
    read_archive,
    record_resume,
)
from qd.search import Search
from qd.seeds import load_seeds
from qd.store import RunStore

__all__ = ["Run", "build_domain", "build_archive", "build_evaluator", "build_operators", "build_run_listeners",
           "resolve_seeds", "run_search", "open_run", "resolve_measures_config"]


@dataclass
class Run:
    """A run directory opened for reading: its config, store, domain and archive."""

    path: Path
    config: dict
    store: RunStore
    domain: Domain
    archive: Any


def build_domain(config: dict) -> Domain:
    """The domain named by ``[domain]``, with ``[run] trace_text_chars`` as its tracer's text limit."""
    try:  # [llm] reaches the domain too: one endpoint per run, one price table for all spend
        domain = get_domain(config["domain"]["name"], pipeline_llm=PipelineLLM.from_config(config["llm"]),
                            llm_prices=normalize_prices(config["llm"]["prices"] or None),
                            **config["domain"]["options"])
    except TypeError as exc:  # a misspelt option reaches the constructor as an unexpected keyword
        raise ConfigError(f"[domain.options] for {config['domain']['name']!r}: {exc}") from None
    # a run stored by a qd before the key reads as its default
    domain.trace_text_chars = config["run"].get("trace_text_chars", DEFAULT_TRACE_TEXT_CHARS)
    return domain


def resolve_measures_config(config: dict, domain: Domain) -> tuple[list[str], list[list[float]], list[int]]:
    """Measure names, ranges and bins from ``[archive]``, defaulting to the domain's."""
    archive = config["archive"]
    names = list(archive["measures"] or domain.default_measures)
    if not names:
        raise ConfigError(f"archive.measures is empty and domain {domain.name!r} declares no default measures: "
                          "name them in [archive] measures = [...] (with ranges), or give the domain defaults "
                          "(qd.FunctionDomain(..., measures={name: (low, high)}))")
    if not archive["measures"]:  # given measures were checked against ranges and bins when the config loaded
        for key in ("ranges", "bins") if archive["type"] == "grid" else ("ranges",):
            if archive[key] and len(archive[key]) != len(names):
                raise ConfigError(f"archive.{key} has {len(archive[key])} entries for {len(names)} measures "
                                  f"(domain {domain.name!r}'s defaults = {names}); give one per measure")
    defaults = dict(zip(domain.default_measures, domain.default_ranges))
    ranges = archive["ranges"] or [defaults.get(n) for n in names]
    missing = [n for n, r in zip(names, ranges) if r is None]
    if missing:
        raise ConfigError(f"archive.ranges is required for measures without a default range: {', '.join(missing)}")
    default_bins = dict(zip(domain.default_measures, domain.default_bins))
    bins = archive["bins"] or [default_bins.get(n, 50) for n in names]
    return names, [list(map(float, r)) for r in ranges], list(bins)


def build_archive(config: dict, domain: Domain) -> Any:
    """A Grid or CVT archive over the configured measures."""
    names, ranges, bins = resolve_measures_config(config, domain)
    cfg = config["archive"]
    offset = cfg["qd_score_offset"] if cfg["qd_score_offset"] is not None else domain.qd_score_offset
    common: dict[str, Any] = dict(ranges=ranges, qd_score_offset=offset, measure_names=names,
                                  objective_name=domain.objective_name)
    if cfg["learning_rate"] is not None:
        common["learning_rate"] = cfg["learning_rate"]
        if cfg["threshold_min"] is not None:
            common["threshold_min"] = cfg["threshold_min"]
    if cfg["type"] == "grid":
        return GridArchive(dims=bins, **common)
    return CVTArchive(cells=cfg["cells"] or 1000, seed=config["run"]["seed"], **common)


def build_evaluator(config: dict, domain: Domain, backend: str | None = None) -> Any:
    """The evaluator of ``[evaluator]`` for ``domain``; ``backend`` overrides ``[evaluator] backend``."""
    return evaluator_from_config(config["evaluator"], domain, backend)


def build_llm_client(config: dict) -> Any:
    """The LLM client of ``[llm]`` (the embedded model when ``base_url`` is empty)."""
    llm = config["llm"]
    return LLMClient(base_url=llm["base_url"] or None, model=llm["model"], api=llm["api"],
                     api_key_env=llm["api_key_env"], temperature=llm["temperature"],
                     max_tokens=llm["max_tokens"], timeout_s=llm["timeout_s"], retries=llm["retries"],
                     concurrency=llm["concurrency"], cache=cache_path(llm["cache"]),
                     prices=llm["prices"] or None, fail_fast=llm["fail_fast"])


def build_operators(config: dict, domain: Domain) -> tuple[dict[str, tuple[Any, float]], Any]:
    """Operator instances and weights from ``[operators]``, and the LLM client they share.

    Entries are built by :func:`qd.operators.build_operators` (built-in names, tables of
    parameters, ``package.module:attribute`` references). The client (:func:`build_llm_client`)
    is built only when an LLM operator has a positive weight; otherwise it is ``None``.
    """
    table = {k: v for k, v in config["operators"].items() if k not in OPERATOR_FLAGS}
    clients: list[Any] = []

    def client() -> Any:  # one client, built when the first LLM operator asks for it
        if not clients:
            clients.append(build_llm_client(config))
        return clients[0]

    try:
        built = _build_operators(table, domain.space, client)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return built, (clients[0] if clients else None)


def resolve_seeds(config: dict, domain: Domain) -> list[dict]:
    """The seed configurations of ``[run] seeds`` (:func:`qd.seeds.load_seeds`), checked against the space."""
    try:
        return load_seeds(config["run"].get("seeds"), domain)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def build_run_listeners(config: dict) -> list[Any]:
    """The listeners of ``[run] listeners`` (:func:`qd.listeners.build_listeners`); errors name the entry."""
    try:
        return build_listeners(config["run"]["listeners"])
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def run_search(config: dict, run_dir: str | Path, *, resume: bool = False, progress: bool = True) -> Run:
    """Run (or resume) the search described by ``config`` in ``run_dir``.

    Returns the finished :class:`Run`. With ``resume=True`` the archive is rebuilt from the
    store before the search continues (``config`` may raise the budget). A resume may not change the keys that
    give scores and cells their meaning (:func:`qd.rundir.check_resume`), and the run directory
    is locked while the search writes to it (:class:`qd.rundir.RunLock`).
    """
    run_dir = Path(run_dir)
    store_path = run_dir / "run.sqlite"
    if store_path.exists() and not resume:
        raise FileExistsError(f"{run_dir} already holds a run; use --resume to continue it or another --out")
    if resume and not store_path.exists():
        raise FileNotFoundError(f"nothing to resume: {store_path} does not exist")
    with RunLock(run_dir):  # one writer per run directory (docs: qd.rundir)
        return _run_locked(config, run_dir, store_path, resume, progress)


def _run_locked(config: dict, run_dir: Path, store_path: Path, resume: bool, progress: bool) -> Run:
    store = RunStore(store_path) if resume else None
    evaluator = None
    try:
        changed: dict[str, list[Any]] = {}
        if store is not None:
            changed = check_resume(store, config)  # refuses changed domain/archive keys
            budget, done = config["run"]["evaluations"], store.count()
            if budget < done:
                raise ConfigError(f"{run_dir} already holds {done} evaluations: the budget (run.evaluations, "
                                  f"--evals) can only stay or grow, got {budget}")
        domain = build_domain(config)
        pipeline = getattr(domain, "pipeline_llm", None)
        if pipeline is not None and pipeline.is_local and getattr(domain, "uses_llm", False):
            pipeline.resolved_base_url()  # the embedded model starts here, so Ray workers share it
        archive = build_archive(config, domain)
        operators, client = build_operators(config, domain)
        seeds = resolve_seeds(config, domain)
        listeners = build_run_listeners(config)
        measures = resolve_measures(archive.measure_names, domain)
        if store is None:  # a new run's store exists only once its config has built: a failed start leaves none
            store = RunStore(store_path)
        else:
            check_same_archive(store, archive)
        evaluator = build_evaluator(config, domain)  # joins Ray: an unreachable cluster fails here
        search = Search(domain, archive, evaluator, operators=operators, measures=measures,
                        budget=config["run"]["evaluations"], store=store, seeds=seeds,
                        init_random=config["run"]["init_random"], seed=config["run"]["seed"],
                        adaptive=config["operators"]["adaptive"], wait_for_llm=config["operators"]["wait_for_llm"],
                        filter=config["operators"]["filter"], proposals=config["operators"]["proposals"],
                        llm_threads=config["llm"]["concurrency"], ordered=config["run"]["ordered"],
                        batch=config["run"]["batch"],
                        progress=progress and config["run"]["progress"], llm_client=client,
                        noise=config["archive"]["noise"], noise_samples=config["archive"]["noise_samples"],
                        noise_share=config["archive"]["noise_share"], listeners=listeners)
        # Written only now that everything has started: a resume that fails to start leaves the run as it was.
        # One commit: a reader sees the stored config only with the archive it describes (docs: open_store).
        with store.transaction():
            store.set_meta(ARCHIVE_META, archive_spec(archive))  # read-only commands rebuild it without the domain
            store.set_meta("budget", config["run"]["evaluations"])
            store.set_meta("config", config)
            record_resume(store, changed)
        (run_dir / "config.toml").write_text(dump_config(config))
    except BaseException:
        if evaluator is not None:
            evaluator.close()
        if store is not None:
            store.close()
            if not resume:  # nothing was evaluated: the directory takes a corrected config without --resume
                for path in (store_path, *(store_path.with_name(store_path.name + s) for s in ("-wal", "-shm")),
                             run_dir / "config.toml"):
                    path.unlink(missing_ok=True)
        raise
    with search, _embedded_model_threads(config["llm"]["server_threads"], domain):
        search.run()
    if config["run"]["plot"]:
        save_heatmap(archive, run_dir / "heatmap.png", title=config["run"]["name"])
    return Run(run_dir, config, store, domain, archive)


def _embedded_model_threads(threads: int, domain: Domain) -> contextlib.AbstractContextManager:
    """Apply ``[llm] server_threads`` to the embedded model.

    A positive count is fixed; 0 gives a :class:`~qd.llm.threads.ThreadTuner` that hands the
    model the cores this run leaves free, restarting it when that number changes. Not under a
    domain whose own code calls the embedded model (``uses_llm``: a user's pipeline, DSPy):
    such calls in flight would fail during a restart, so the model keeps its default threads.
    """
    if threads:
        set_local_server_threads(threads)
        return contextlib.nullcontext()
    pipeline = getattr(domain, "pipeline_llm", None)
    if domain.uses_llm and pipeline is not None and pipeline.is_local:
        return contextlib.nullcontext()
    return ThreadTuner()


def save_heatmap(archive: Any, path: Path, title: str = "") -> Path:
    """Write the archive's illumination plot to ``path``."""
    plot_archive(archive, path, title=title)
    return Path(path)


def open_run(run_dir: str | Path) -> Run:
    """Open a run directory with its domain, and read its archive as it stands.

    The config is the one the run stored, not ``config.toml``, which a user may have edited since.
    """
    run_dir, store, config = open_store(run_dir, readonly=False)  # validation writes to the store
    try:
        domain = build_domain(config)
        archive = read_archive(store, build_archive(config, domain))
    except BaseException:
        store.close()
        raise
    return Run(run_dir, config, store, domain, archive)


def resolve_run_config(config_path: str | Path | None, run_dir: Path, resume: bool,
                       overrides: dict[str, dict[str, Any]]) -> dict:
    """The config a ``qd run`` invocation uses: file/demo plus overrides; on resume the given file or the stored one.

    What a resume may change is checked when the run starts (:func:`qd.rundir.check_resume`).
    """
    run_dir = Path(run_dir)
    if resume:
        if config_path is not None or (run_dir / "config.toml").exists():
            return load_config(config_path if config_path is not None else run_dir / "config.toml", overrides)
        if not (run_dir / "run.sqlite").exists():
            raise FileNotFoundError(f"nothing to resume: {run_dir} holds no run (no run.sqlite)")
        _, store, stored = open_store(run_dir)  # config.toml is gone: the config the run stored
        store.close()
        return resolve_config(stored, overrides)
    if config_path is None:
        return resolve_config(DEMO_CONFIG, overrides)
    return load_config(config_path, overrides)
