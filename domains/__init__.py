"""Built-in domains and the registry that resolves ``[domain] name`` in a run config."""
from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from qd.domain import Domain


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


def get_domain(name: str, **options: Any) -> Domain:
    """Build a domain from a built-in name or a ``package.module:attribute`` reference.

    The attribute may be a :class:`~qd.domain.Domain` subclass or factory (called with
    ``options``) or a ready instance (then ``options`` must be empty).

    Raises
    ------
    ValueError
        For an unknown name or a reference that does not resolve to a domain.
    """
    if name in _BUILTIN:
        return _BUILTIN[name][0](**options)
    if ":" not in name:
        raise ValueError(f"unknown domain {name!r}; built-ins: {', '.join(_BUILTIN)} "
                         "(or give 'package.module:attribute')")
    module_name, _, attr = name.partition(":")
    try:
        target = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot load domain {name!r}: {exc}") from None
    domain = target if isinstance(target, Domain) else target(**options)
    if isinstance(target, Domain) and options:
        raise ValueError(f"domain {name!r} is an instance; it takes no [domain.options]")
    if not isinstance(domain, Domain):
        raise ValueError(f"{name!r} gave {type(domain).__name__}, not a qd.Domain")
    return domain
