"""Built-in domains and the registry that resolves ``[domain] name`` in a run config."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qd.domain import Domain
from qd.llm.pipeline import PipelineLLM
from qd.llm.prices import Price
from qd.references import resolve_reference


# Domain modules load on first use: `qd domains` and runs of other domains never import them.
def _arm() -> type[Domain]:
    from qd.domains.arm import ArmDomain

    return ArmDomain


def _k_module() -> type[Domain]:
    from qd.domains.k_module import KModuleDomain

    return KModuleDomain


def _retrieval() -> type[Domain]:
    from qd.domains.retrieval import RetrievalDomain

    return RetrievalDomain


def _topics() -> type[Domain]:
    from qd.domains.topics import TopicsDomain

    return TopicsDomain


# name -> (the domain class, options it is built with unless [domain.options] set them, description)
_BUILTIN: dict[str, tuple[Callable[[], type[Domain]], dict[str, Any], str]] = {
    "arm": (_arm, {}, "planar robotic arm (classic MAP-Elites benchmark); measures x, y"),
    "k-module": (_k_module, {}, "pipeline configuration: 4 stages x 5 options, one right combination; "
                 "feedback names the wrong stages (feedback = 'count': only how many)"),
    "retrieval": (_retrieval, {}, "key-value retrieval pipeline on an LLM (default: the embedded model)"),
    "retrieval-sim": (_retrieval, {"backend": "simulated"},
                      "the retrieval pipeline with SIMULATED LLM calls (fast tests, benchmarks)"),
    "topics": (_topics, {}, "a prompt (instruction, field names, worked examples) classifying headlines by topic, "
                            "scored on an LLM (default: the embedded model)"),
}


def available_domains() -> dict[str, str]:
    """Built-in domain names with a one-line description each."""
    return {name: doc for name, (_, _, doc) in _BUILTIN.items()}


def get_domain(name: str, *, pipeline_llm: PipelineLLM | None = None, llm_prices: dict[str, Price] | None = None,
               **options: Any) -> Domain:
    """Build a domain from a built-in name or a ``package.module:attribute`` reference.

    The attribute may be a :class:`~qd.domain.Domain` subclass or factory (called with
    ``options``) or a ready instance (then ``options`` must be empty). References resolve from
    the current directory first (:func:`qd.references.resolve_reference`), so ``mydomain:MyDomain``
    finds ``./mydomain.py``; Ray ships such a module to workers that cannot import it.

    ``pipeline_llm`` (the run's ``[llm]`` as the pipeline sees it) becomes
    ``domain.pipeline_llm``, which :func:`qd.pipeline_llm` returns inside evaluations.
    ``llm_prices`` becomes ``domain.llm_prices``, the price table of traced calls. A domain
    class (or factory) that builds its own LLM client from these declares a classmethod
    ``llm_options(pipeline_llm, llm_prices) -> dict``: the options it returns are passed to the
    constructor unless ``options`` set them (the retrieval domain takes its endpoint, model,
    key variable and prices that way).

    Raises
    ------
    ValueError
        For an unknown name or a reference that does not resolve to a domain.
    """
    target: Any
    if name in _BUILTIN:
        load, preset, _ = _BUILTIN[name]
        target, options = load(), {**preset, **options}
    elif ":" not in name:
        raise ValueError(f"unknown domain {name!r}; built-ins: {', '.join(_BUILTIN)} "
                         "(or give 'package.module:attribute')")
    else:
        target = resolve_reference(name, "domain")
    if isinstance(target, Domain):
        if options:
            raise ValueError(f"domain {name!r} is an instance; it takes no [domain.options]")
        domain = target
    else:
        llm_options = getattr(target, "llm_options", None)
        if pipeline_llm is not None and callable(llm_options):
            options = {**llm_options(pipeline_llm, llm_prices), **options}
        domain = target(**options)
        if not isinstance(domain, Domain):
            raise ValueError(f"{name!r} gave {type(domain).__name__}, not a qd.Domain")
    if pipeline_llm is not None:
        domain.pipeline_llm = pipeline_llm
    if llm_prices is not None:
        domain.llm_prices = llm_prices
    return domain
