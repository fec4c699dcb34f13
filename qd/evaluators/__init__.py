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

Each is registered by name in :mod:`qd.evaluators.registry`, the one list of backends that run
configs, the runner and the CLI read; :func:`make_evaluator` builds one by its name.
"""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from qd.evaluators.registry import backend_names, make_evaluator, register_backend
from qd.result import EvalResult

__all__ = ["Evaluator", "SerialEvaluator", "RayEvaluator", "make_evaluator", "register_backend", "backend_names"]


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
    # The evaluators import their machinery (Ray is slow to import, the serial one the tracer):
    # load them only when asked for, so that reading the backends' names stays light.
    if name == "RayEvaluator":
        from qd.evaluators.ray_eval import RayEvaluator

        return RayEvaluator
    if name == "SerialEvaluator":
        from qd.evaluators.serial import SerialEvaluator

        return SerialEvaluator
    raise AttributeError(f"module 'qd.evaluators' has no attribute {name!r}")
