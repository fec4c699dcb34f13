"""Evaluate one configuration under a tracer, turning exceptions into statuses.

Every evaluator (serial, Ray task, Ray actor) calls :func:`evaluate_config`, so a
configuration is run the same way wherever it runs.
"""
from __future__ import annotations

import time
import traceback

from qd.analysis import autotrace
from qd.analysis.tracer import Tracer, take_untraced
from qd.domain import SEARCH, Domain, evaluate_draw
from qd.evaluators.outcomes import raised
from qd.llm.pipeline import pipeline_scope
from qd.result import DEFAULT_TRACE_TEXT_CHARS, EvalResult, MalformedResult, check_result

# Reserved key carrying (draw, split) of a re-evaluation through every evaluator's submit(key, config)
# unchanged; stripped before the domain sees the config (see with_draw).
DRAW_KEY = "__qd_draw__"


def with_draw(config: dict, draw: int, split: str = SEARCH) -> dict:
    """``config`` marked for evaluation on ``draw`` of ``split`` (``qd.domain.evaluate_draw``)."""
    return {**config, DRAW_KEY: [int(draw), str(split)]}


def evaluate_config(domain: Domain, config: dict) -> EvalResult:
    """Run ``domain.evaluate(config)`` with a :class:`~qd.analysis.Tracer` active.

    Exceptions become ``status="error"`` results carrying the exception text, and so does a
    malformed result (:func:`qd.result.check_result`: the message names the field); spans
    recorded by the tracer fill ``result.trace`` unless the domain set it.
    ``metrics["eval_s"]`` holds the wall time of the evaluation. A config made by
    :func:`with_draw` is evaluated on that draw and split.
    """
    start = time.perf_counter()
    draw = config.get(DRAW_KEY) if isinstance(config, dict) else None
    if not getattr(domain, "makes_calls", True):  # nothing to trace: the tracer's cost is saved
        result = _evaluate(domain, config, draw)
    else:
        autotrace.install()  # the user's own openai / LiteLLM / DSPy calls become spans (once per process)
        tracer = Tracer(prices=getattr(domain, "llm_prices", None),
                        text_chars=getattr(domain, "trace_text_chars", DEFAULT_TRACE_TEXT_CHARS))
        with pipeline_scope(getattr(domain, "pipeline_llm", None)), tracer:
            result = _evaluate(domain, config, draw)
        if not result.trace:
            result.trace = tracer.spans
    try:  # user code's result and spans are checked here, where they come back, so nothing later trips on them
        result = check_result(result)
    except MalformedResult as exc:
        result = EvalResult.failure("error", f"malformed result from {type(domain).__name__}.evaluate: {exc}")
    result.metrics.setdefault("eval_s", time.perf_counter() - start)
    untraced = take_untraced()  # calls no evaluation could own, counted once, by the next to finish here
    if untraced["calls"]:
        result.metrics["untraced_llm_calls"] = untraced["calls"]
        result.metrics["untraced_tokens"] = untraced["tokens_in"] + untraced["tokens_out"]
    return result


def _evaluate(domain: Domain, config: dict, draw: list | None) -> EvalResult:
    """``domain.evaluate`` of ``config`` (on ``draw`` when given); an exception becomes an ``error`` result."""
    try:
        if draw is None:
            result = domain.evaluate(config)
        else:
            plain = {k: v for k, v in config.items() if k != DRAW_KEY}
            result = evaluate_draw(domain, plain, draw[0], draw[1])
        if not isinstance(result, EvalResult):
            raise TypeError(f"{type(domain).__name__}.evaluate returned {type(result).__name__}, not EvalResult")
    except Exception as exc:  # a bad candidate must never stop the search
        tb = traceback.format_exc(limit=4)
        result = raised(exc)
        result.metrics["traceback"] = tb
    return result
