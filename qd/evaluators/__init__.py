"""Evaluators: where configurations run (in-process, Ray tasks or Ray actors).

Every evaluator follows the :class:`Evaluator` protocol the search drives: it
submits keyed configurations, collects whatever finished, and reports
how many are still ``pending``. All of them run a configuration through
:func:`qd.evaluation.evaluate_config`, so results are the same wherever a
configuration runs; failures (exceptions, crashed workers, deadlines) come back
as :class:`~qd.result.EvalResult` statuses and never as exceptions.

- :class:`RayEvaluator` (the default of ``qd run``): Ray tasks (CPU-bound domains) or async
  Ray actors (I/O-bound domains such as LLM pipelines), locally or on a cluster; several
  configurations per call when evaluations are short.
- :class:`SerialEvaluator`: in the driver process, one at a time (debugging, domains whose
  evaluations take microseconds).
"""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from qd.domain import Domain
from qd.evaluators.serial import SerialEvaluator
from qd.result import EvalResult

__all__ = ["Evaluator", "SerialEvaluator", "RayEvaluator", "make_evaluator", "BACKENDS"]

BACKENDS: tuple[str, ...] = ("serial", "ray")


@runtime_checkable
class Evaluator(Protocol):
    """What the search needs from an evaluator.

    Attributes
    ----------
    slots : int
        Evaluations that run at once; the search keeps ``2 * slots`` in flight.
    batch_size : int, optional
        Configurations an evaluator sends per call to a worker (:class:`RayEvaluator` sizes it from
        the measured evaluation time); the search then keeps ``2 * slots * batch_size`` in flight.
        Not part of the checked protocol: an evaluator without it counts as 1.
    """

    slots: int

    def submit(self, key: int, config: dict) -> None:
        """Queue ``config`` for evaluation under the caller's ``key``."""

    def collect(self, timeout: float) -> list[tuple[int, EvalResult]]:
        """Wait up to ``timeout`` seconds and return the ``(key, result)`` pairs that finished (maybe none)."""

    def pending(self) -> int:
        """Submitted evaluations not yet returned by :meth:`collect`."""

    def close(self) -> None:
        """Cancel what is in flight and release resources."""


def __getattr__(name: str) -> Any:
    # RayEvaluator imports ray, which is slow to import; load it only when asked for.
    if name == "RayEvaluator":
        from qd.evaluators.ray_eval import RayEvaluator

        return RayEvaluator
    raise AttributeError(f"module 'qd.evaluators' has no attribute {name!r}")


_OPTIONS = {
    "serial": {"timeout_s"},
    "ray": {"workers", "timeout_s", "address", "mode", "actor_concurrency", "num_actors", "num_cpus",
            "batch_size"},
}


def make_evaluator(backend: str, domain: Domain, **options: Any) -> Evaluator:
    """Build the evaluator named ``backend`` (``"serial"`` or ``"ray"``) for ``domain``.

    Parameters
    ----------
    backend : {"serial", "ray"}
        Which evaluator.
    domain : Domain
        The domain whose configurations it evaluates.
    **options
        Keyword arguments of :class:`SerialEvaluator` or :class:`RayEvaluator`.

    Raises
    ------
    ValueError
        For an unknown backend or an option the backend does not take.
    """
    if backend not in _OPTIONS:
        raise ValueError(f"unknown evaluator backend {backend!r}; choose one of {list(BACKENDS)}")
    unknown = sorted(set(options) - _OPTIONS[backend])
    if unknown:
        raise ValueError(f"evaluator backend {backend!r} does not take option(s) {unknown}; "
                         f"it takes {sorted(_OPTIONS[backend])}")
    if backend == "serial":
        return SerialEvaluator(domain, **options)
    from qd.evaluators.ray_eval import RayEvaluator

    return RayEvaluator(domain, **options)
