"""Adaptive operator weights that hold an operator which does not pay at a floor.

With ``[operators] adaptive = true`` the scheduler re-weights its operators every few results
(:func:`adapt_shares`). Each operator is judged by what it brought per evaluation charged to it
(its own children, and the classic children that replaced its failed, invalid or duplicate ones)
and per 1k LLM tokens it spent:

    value = gain rate / (1 + token_cost × thousands of tokens per evaluation)

where the gain rate (archive gains, new cells or improved elites, per evaluation charged) is
shrunk toward the rate of all operators together by ``prior`` pseudo-evaluations, and
``token_cost`` prices 1k tokens in evaluations (1: a thousand operator tokens cost as much as an
evaluation). An operator **does not pay** when, after ``min_evals`` charged evaluations, even an
optimistic estimate of its value (its gain rate one standard error up) is below the best
operator's value: it then gets exactly ``floor`` of the draws, enough to notice if it starts to
pay. The other operators share the rest in proportion to base weight × value, none below the
floor. ``qd status`` names the operators held at the floor.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["BanditSettings", "Judgement", "adapt_shares"]


@dataclass(frozen=True)
class BanditSettings:
    """How :func:`adapt_shares` judges operators.

    Attributes
    ----------
    floor : float
        Share of draws an operator that does not pay keeps (and the least any operator gets).
    min_evals : int
        Evaluations charged to an operator before it can be judged not to pay.
    prior : float
        Pseudo-evaluations at the pooled gain rate added to each operator's own.
    token_cost : float
        Evaluations one thousand operator tokens are worth.
    """

    floor: float = 0.02
    min_evals: int = 10
    prior: float = 2.0
    token_cost: float = 1.0


@dataclass(frozen=True)
class Judgement:
    """What :func:`adapt_shares` concluded about one operator.

    Attributes
    ----------
    share : float
        Its probability of being drawn.
    value : float
        Gain rate per evaluation over the token cost (see the module docstring).
    gain_rate : float
        Archive gains per evaluation charged, shrunk toward the pooled rate.
    kilo_tokens : float
        Thousands of LLM tokens per evaluation charged.
    pays : bool
        False when the operator is held at the floor.
    """

    share: float
    value: float
    gain_rate: float
    kilo_tokens: float
    pays: bool


def _field(stats: Any, name: str) -> float:
    return float(stats[name] if isinstance(stats, Mapping) else getattr(stats, name))


def adapt_shares(base_weights: Mapping[str, float], stats: Mapping[str, Any],
                 settings: BanditSettings = BanditSettings()) -> dict[str, Judgement]:
    """Each operator's share of the draws and why (see the module docstring).

    Parameters
    ----------
    base_weights : mapping of str to float
        The configured weights (an operator with weight 0 keeps share 0).
    stats : mapping of str to OperatorStats or dict
        Each operator's ``gains``, ``spent`` (evaluations charged) and ``tokens``; missing
        operators count as untried.
    settings : BanditSettings
        Floor, judging threshold, prior and token price.

    Returns
    -------
    dict of str to Judgement
        By operator, in ``base_weights``' order; the shares sum to 1.
    """
    names = [n for n, w in base_weights.items() if w > 0]
    counts = {n: ((_field(stats[n], "gains"), _field(stats[n], "spent"), _field(stats[n], "tokens"))
                  if n in stats else (0.0, 0.0, 0.0)) for n in names}
    total_gains = sum(g for g, _, _ in counts.values())
    total_spent = sum(s for _, s, _ in counts.values())
    pooled = (total_gains + 1.0) / (total_spent + 2.0)
    rate, kilo, value, upper = {}, {}, {}, {}
    for n, (gains, spent, tokens) in counts.items():
        weight = spent + settings.prior
        rate[n] = (gains + settings.prior * pooled) / weight
        kilo[n] = tokens / max(spent, 1.0) / 1000.0
        cost = 1.0 + settings.token_cost * kilo[n]
        value[n] = rate[n] / cost
        upper[n] = (rate[n] + math.sqrt(max(rate[n] * (1.0 - rate[n]), 0.0) / weight)) / cost
    best = max(value.values(), default=0.0)
    pays = {n: counts[n][1] < settings.min_evals or upper[n] >= best for n in names}
    floor = min(settings.floor, 1.0 / len(names)) if names else 0.0
    shares = _floored_shares({n: base_weights[n] * value[n] for n in names if pays[n]},
                             [n for n in names if not pays[n]], floor)
    return {n: Judgement(shares.get(n, 0.0), value.get(n, 0.0), rate.get(n, 0.0), kilo.get(n, 0.0), pays.get(n, True))
            for n in base_weights}


def _floored_shares(paying: dict[str, float], held: list[str], floor: float) -> dict[str, float]:
    """Held operators get ``floor`` each; the paying ones share the rest ∝ their score, none below ``floor``.

    The best operator always pays, so ``paying`` is never empty and the shares sum to 1.
    """
    shares = dict.fromkeys(held, floor)
    free = dict(paying)
    left = 1.0 - floor * len(held)
    while free:
        total = sum(free.values())
        proposed = ({n: left * s / total for n, s in free.items()} if total > 0
                    else {n: left / len(free) for n in free})
        low = [n for n, s in proposed.items() if s < floor]
        if not low:
            shares.update(proposed)
            break
        for n in low:  # raised to the floor; the others share what is left
            shares[n] = floor
            left -= floor
            del free[n]
    return shares
