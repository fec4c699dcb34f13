"""The measures of one evaluation: what the search inserts by and ``qd validate`` averages.

Both run the descriptor functions on a result the same way: only on a usable result; a
descriptor that raises makes the result an ``"error"``, a non-finite measure makes it
``"invalid"``, so neither enters an archive.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from qd.result import EvalResult

__all__ = ["measure_result"]


def measure_result(config: dict, result: EvalResult, measures: Sequence[Callable[[dict, EvalResult], float]],
                   names: Sequence[str]) -> dict[str, float]:
    """The result's own measures plus, on a usable result, the descriptors' values under ``names``.

    Parameters
    ----------
    config : dict
        The evaluated configuration.
    result : EvalResult
        Its result. Marked (``status`` and ``error``) when it cannot enter an archive:
        ``"invalid"`` for an infinite objective (NaN stays "no objective"), ``"error"`` when a
        descriptor raises (its values are left out), ``"invalid"`` when one of ``names`` is
        non-finite (the values are kept, for the record).
    measures : sequence of callable
        Descriptor functions, in the order of ``names`` (``qd.analysis.resolve_measures``).
    names : sequence of str
        The archive's measure names.

    Returns
    -------
    dict
        ``result.measures`` updated with the descriptors' values. After the call ``result.usable``
        says whether ``[values[n] for n in names]`` may enter an archive.
    """
    values: dict[str, float] = dict(result.measures)
    if result.status == "ok" and math.isinf(result.objective):  # NaN means "no objective"; inf is a bug
        result.status, result.error = "invalid", f"non-finite objective: {result.objective}"
    if not result.usable:
        return values
    try:
        computed = [float(f(config, result)) for f in measures]
    except Exception as exc:  # a descriptor's failure is this evaluation's, not the caller's
        result.status, result.error = "error", f"descriptor failed: {type(exc).__name__}: {exc}"
        return values
    values.update(zip(names, computed))
    bad = [n for n in names if not math.isfinite(values.get(n, math.nan))]
    if bad:
        result.status, result.error = "invalid", f"non-finite measures: {', '.join(bad)}"
    return values
