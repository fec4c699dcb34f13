"""Built-in domains and the registry that resolves ``[domain] name`` in a run config."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qd.domain import Domain
from qd.llm.pipeline import PipelineLLM
from qd.llm.prices import Price
from qd.references import resolve_reference


def _arm(**options: Any) -> Domain:
    from qd.domains.arm import ArmDomain

    return ArmDomain(**options)


def _retrieval(**options: Any) -> Domain:
    from qd.domains.retrieval import RetrievalDomain

    return RetrievalDomain(**options)


def _retrieval_sim(**options: Any) -> Domain:
    from qd.domains.retrieval import RetrievalDomain

    return RetrievalDomain(**{"backend": "simulated", **options})


_BUILTIN: dict[str, tuple[Callable[..., Domain], str]] = {
    "arm": (_arm, "planar robotic arm (classic MAP-Elites benchmark); measures x, y"),
    "retrieval": (_retrieval, "key-value retrieval pipeline on an LLM (default: the embedded model)"),
    "retrieval-sim": (_retrieval_sim, "the retrieval pipeline with SIMULATED LLM calls (fast tests, benchmarks)"),
}


def available_domains() -> dict[str, str]:
    """Built-in domain names with a one-line description each."""
    return {name: doc for name, (_, doc) in _BUILTIN.items()}


def get_domain(name: str, *, pipeline_llm: PipelineLLM | None = None, llm_prices: dict[str, Price] | None = None,
               **options: Any) -> Domain:
    """Build a domain from a built-in name or a ``package.module:attribute`` reference.

    The attribute may be a :class:`~qd.domain.Domain` subclass or factory (called with
    ``options``) or a ready instance (then ``options`` must be empty). References resolve from
    the current directory first (:func:`qd.references.resolve_reference`), so ``mydomain:MyDomain``
    finds ``./mydomain.py``; Ray ships such a module to workers that cannot import it.

    ``pipeline_llm`` (the run's ``[llm]`` as the pipeline sees it) becomes
    ``domain.pipeline_llm``, which :func:`qd.pipeline_llm` returns inside evaluations; the
    retrieval domain also takes its endpoint, model and key variable from it unless its options
    set them. ``llm_prices`` becomes ``domain.llm_prices``, the price table of traced calls.

    Raises
    ------
    ValueError
        For an unknown name or a reference that does not resolve to a domain.
    """
    if name == "retrieval" and pipeline_llm is not None:
        for key, value in (("base_url", pipeline_llm.base_url), ("model", pipeline_llm.model),
                           ("api_key_env", pipeline_llm.api_key_env)):
            options.setdefault(key, value)
    if name in _BUILTIN:
        domain = _BUILTIN[name][0](**options)
    elif ":" not in name:
        raise ValueError(f"unknown domain {name!r}; built-ins: {', '.join(_BUILTIN)} "
                         "(or give 'package.module:attribute')")
    else:
        target = resolve_reference(name, "domain")
        if isinstance(target, Domain) and options:
            raise ValueError(f"domain {name!r} is an instance; it takes no [domain.options]")
        domain = target if isinstance(target, Domain) else target(**options)
        if not isinstance(domain, Domain):
            raise ValueError(f"{name!r} gave {type(domain).__name__}, not a qd.Domain")
    if pipeline_llm is not None:
        domain.pipeline_llm = pipeline_llm
    if llm_prices is not None:
        domain.llm_prices = llm_prices
    return domain
