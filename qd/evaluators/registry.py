"""The evaluator backends, by name: the one list that config validation, the runner and the CLI read.

A backend is a factory ``factory(domain, **options) -> Evaluator`` with the keyword options it
takes, and how ``[evaluator]`` of a run config becomes those options. Adding one is one call::

    from qd.evaluators.registry import register_backend

    register_backend("threads", "my_pkg.evaluators:ThreadEvaluator", options=("timeout_s", "workers"))

after which ``[evaluator] backend = "threads"`` and :func:`make_evaluator` accept it (from Python;
``qd run`` knows it when the module that registers it is imported first). The factory may be a
``"package.module:attribute"`` reference, imported only when an evaluator is built, so that reading
the registry (``qd status``, config validation) never imports Ray. A run config may also name an
unregistered factory by reference (``backend = "my_pkg.evaluators:ThreadEvaluator"``): its keyword
parameters are its options, taken from the ``[evaluator]`` keys of the same name.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from qd.references import resolve_reference

if TYPE_CHECKING:
    from qd.domain import Domain
    from qd.evaluators import Evaluator

__all__ = ["Backend", "register_backend", "backend_names", "backends_help", "get_backend", "make_evaluator",
           "evaluator_from_config"]


def _same_names(options: tuple[str, ...]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def from_config(section: dict[str, Any]) -> dict[str, Any]:
        return {name: section[name] for name in options if name in section}

    return from_config


@dataclass(frozen=True)
class Backend:
    """One evaluator backend.

    Attributes
    ----------
    name : str
        What ``[evaluator] backend`` and ``--backend`` call it.
    factory : callable or str
        ``factory(domain, **options)`` builds the evaluator; a ``"package.module:attribute"``
        string is imported when the first evaluator is built.
    options : tuple of str
        The keyword options the factory takes (:func:`make_evaluator` refuses others).
    from_config : callable
        ``[evaluator]`` section (a dict) -> keyword options for the factory.
    help : str
        One line for ``qd run --help``.
    """

    name: str
    factory: Callable[..., Evaluator] | str
    options: tuple[str, ...]
    from_config: Callable[[dict[str, Any]], dict[str, Any]]
    help: str = ""

    def build(self, domain: Domain, **options: Any) -> Evaluator:
        """The evaluator for ``domain``; raises ``ValueError`` naming an option this backend does not take."""
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise ValueError(f"evaluator backend {self.name!r} does not take option(s) {unknown}; "
                             f"it takes {sorted(self.options)}")
        factory = self.factory
        if isinstance(factory, str):
            factory = resolve_reference(factory, f"evaluator backend {self.name!r}")
        return factory(domain, **options)


_BACKENDS: dict[str, Backend] = {}


def register_backend(name: str, factory: Callable[..., Evaluator] | str, *, options: Iterable[str],
                     from_config: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
                     help: str = "", replace: bool = False) -> Backend:
    """Make ``name`` an evaluator backend of run configs, the CLI and :func:`make_evaluator`.

    Parameters
    ----------
    name : str
        The backend's name (a non-empty identifier-like string).
    factory : callable or str
        ``factory(domain, **options) -> Evaluator``, or a ``"package.module:attribute"`` reference to one.
    options : iterable of str
        The keyword options the factory takes.
    from_config : callable, optional
        Maps the ``[evaluator]`` section to the factory's options; default: the section's keys
        named like an option (``timeout_s``, ``workers``, ...).
    help : str
        One line describing it.
    replace : bool
        Allow replacing a registered backend of the same name.

    Raises
    ------
    ValueError
        For an empty name, or one already registered without ``replace``.
    """
    if not isinstance(name, str) or not name.strip() or ":" in name:
        raise ValueError(f"an evaluator backend's name must be a non-empty string without ':', got {name!r}")
    if name in _BACKENDS and not replace:
        raise ValueError(f"evaluator backend {name!r} is already registered (pass replace=True to replace it)")
    options = tuple(options)
    backend = Backend(name, factory, options, from_config or _same_names(options), help)
    _BACKENDS[name] = backend
    return backend


def backend_names() -> tuple[str, ...]:
    """The registered backends' names, in registration order (the built-ins first)."""
    return tuple(_BACKENDS)


def backends_help() -> str:
    """Each registered backend's name and its one line of help (``qd run --help``)."""
    return "; ".join(f"{b.name}: {b.help}" if b.help else b.name for b in _BACKENDS.values())


def get_backend(name: str) -> Backend:
    """The backend registered as ``name``, or the one a ``"package.module:attribute"`` reference names.

    A reference may name a :class:`Backend` or a factory ``factory(domain, **options)``, whose
    keyword parameters are then its options (taken from the ``[evaluator]`` keys of the same
    name). It resolves as domains and operators do (the working directory first).

    Raises
    ------
    ValueError
        For a name that is neither registered nor a reference that loads, naming the registered ones.
    """
    backend = _BACKENDS.get(name) if isinstance(name, str) else None
    if backend is not None:
        return backend
    if not isinstance(name, str) or ":" not in name:
        raise ValueError(f"unknown evaluator backend {name!r}; choose one of {list(_BACKENDS)} "
                         "or give 'package.module:attribute' of an evaluator factory")
    target = resolve_reference(name, "evaluator backend")
    if isinstance(target, Backend):
        return target
    if not callable(target):
        raise ValueError(f"evaluator backend {name!r} is a {type(target).__name__}, not an evaluator factory")
    options = _keyword_options(target)
    return Backend(name, target, options, _same_names(options))


def _keyword_options(factory: Callable[..., Any]) -> tuple[str, ...]:
    """The keyword parameters of ``factory`` after its first (the domain)."""
    params = list(inspect.signature(factory).parameters.values())[1:]
    return tuple(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))


def make_evaluator(backend: str, domain: Domain, **options: Any) -> Evaluator:
    """Build the evaluator named ``backend`` for ``domain``.

    Parameters
    ----------
    backend : str
        A registered backend (:func:`backend_names`: ``"serial"``, ``"ray"`` and any registered since).
    domain : Domain
        The domain whose configurations it evaluates.
    **options
        Keyword arguments of the backend's factory (:class:`~qd.evaluators.SerialEvaluator`,
        :class:`~qd.evaluators.RayEvaluator`, ...).

    Raises
    ------
    ValueError
        For an unknown backend or an option the backend does not take.
    """
    return get_backend(backend).build(domain, **options)


def evaluator_from_config(section: dict[str, Any], domain: Domain, backend: str | None = None) -> Evaluator:
    """The evaluator ``[evaluator]`` describes for ``domain``; ``backend`` overrides ``section["backend"]``."""
    chosen = get_backend(backend or section["backend"])
    return chosen.build(domain, **chosen.from_config(section))


def _ray_options(section: dict[str, Any]) -> dict[str, Any]:
    # 0 and "" mean "not set" in TOML, which has no null.
    return {"timeout_s": section["timeout_s"], "workers": section["workers"] or None,
            "address": section["ray_address"] or None, "mode": section["mode"],
            "actor_concurrency": section["actor_concurrency"], "batch_size": section["batch_size"] or None}


register_backend("serial", "qd.evaluators.serial:SerialEvaluator", options=("timeout_s",),
                 help="in the driver, one at a time (debugging, microsecond domains)")
register_backend("ray", "qd.evaluators.ray_eval:RayEvaluator",
                 options=("workers", "timeout_s", "address", "mode", "actor_concurrency", "num_actors", "num_cpus",
                          "batch_size"),
                 from_config=_ray_options, help="Ray tasks or actors, locally or on a cluster (default)")
