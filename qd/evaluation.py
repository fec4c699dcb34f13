"""Evaluate one configuration under a tracer, turning exceptions into statuses.

Every evaluator (serial, Ray task, Ray actor) calls :func:`evaluate_config`, so a
configuration is run the same way wherever it runs.
"""
from __future__ import annotations

import time
import traceback

from qd.analysis.tracer import Tracer
from qd.domain import Domain
from qd.result import EvalResult


def evaluate_config(domain: Domain, config: dict) -> EvalResult:
    """Run ``domain.evaluate(config)`` with a :class:`~qd.analysis.Tracer` active.

    Exceptions become ``status="error"`` results carrying the exception text;
    spans recorded by the tracer fill ``result.trace`` unless the domain set it.
    ``metrics["eval_s"]`` holds the wall time of the evaluation.
    """
    start = time.perf_counter()
    with Tracer() as tracer:
        try:
            result = domain.evaluate(config)
            if not isinstance(result, EvalResult):
                raise TypeError(f"{type(domain).__name__}.evaluate returned {type(result).__name__}, not EvalResult")
        except Exception as exc:  # a bad candidate must never stop the search
            tb = traceback.format_exc(limit=4)
            result = EvalResult.failure("error", f"{type(exc).__name__}: {exc}")
            result.metrics["traceback"] = tb
    if not result.trace:
        result.trace = tracer.spans
    result.metrics.setdefault("eval_s", time.perf_counter() - start)
    return result
