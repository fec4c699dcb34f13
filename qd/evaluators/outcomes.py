"""The results of evaluations that did not finish by themselves, built the same way by every evaluator.

An evaluator never raises for one configuration: a deadline, an exception that escaped
:func:`qd.evaluation.evaluate_config` (``SystemExit`` and the like), a worker that died, or a
cancellation from outside qd each become an :class:`~qd.result.EvalResult` with its status
(``"timeout"``, ``"error"``, ``"crash"``) and a message, through the functions here. A new
evaluator uses them too, so that ``qd status``'s failure counts and texts read the same whatever
ran the configuration.
"""
from __future__ import annotations

from qd.result import EvalResult

__all__ = ["timed_out", "raised", "failed", "crashed", "cancelled", "clip_error", "MAX_ERROR_CHARS"]

MAX_ERROR_CHARS = 2000  # of an error message that came from a worker (a Ray traceback can be long)


def clip_error(text: str) -> str:
    """``text`` cut to :data:`MAX_ERROR_CHARS`, with `` ...`` where it was cut."""
    return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS] + " ..."


def timed_out(timeout_s: float, detail: str = "") -> EvalResult:
    """A ``"timeout"``: the evaluation ran past ``timeout_s``; ``detail`` says more (appended in parentheses)."""
    return EvalResult.failure("timeout", f"evaluation exceeded timeout_s={timeout_s:g}" + (f" ({detail})" if detail
                                                                                           else ""))


def raised(exc: BaseException) -> EvalResult:
    """An ``"error"``: the evaluation raised ``exc`` (its type and message, clipped)."""
    return failed(f"{type(exc).__name__}: {exc}")


def failed(message: str) -> EvalResult:
    """An ``"error"`` described by ``message`` (clipped), for a failure that is no exception of its own."""
    return EvalResult.failure("error", clip_error(message))


def crashed(reason: str) -> EvalResult:
    """A ``"crash"``: the process running the evaluation died or was lost; ``reason`` says how."""
    return EvalResult.failure("crash", clip_error(reason))


def cancelled(reason: str) -> EvalResult:
    """A ``"crash"``: something outside qd cancelled the evaluation (a deadline's cancel is :func:`timed_out`)."""
    return crashed(f"evaluation cancelled outside qd: {reason}")
