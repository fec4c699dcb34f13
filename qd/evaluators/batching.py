"""How many configurations one Ray call evaluates, chosen from the measured evaluation time and the slots.

Every Ray call (a task, or a call on an actor) costs the driver about a millisecond (submitting it,
waiting on it, fetching its result), whatever it evaluates. One configuration per call therefore
caps a driver at about a thousand evaluations per second: enough for one-second pipelines on a few
hundred slots, too little for evaluations of a millisecond. :class:`BatchSizer` picks the number of
configurations per call so that all slots together need at most :attr:`BatchSizer.calls_per_s`
calls per second (a quarter of the driver at a millisecond per call)::

    batch = ceil(slots / (eval_s * calls_per_s))

clamped to ``[1, max_batch]``, to calls that are expected to last at most
``min(max_call_s, timeout_share * timeout_s)`` (short against the per-evaluation deadline, so
that a call overrunning it points at one evaluation that overran), and to at most
``max_in_flight`` evaluations in the search's window (``2 * slots * batch``). ``eval_s`` is a
moving average of the seconds per evaluation the workers measure; before the first measurement the
batch is 1 (the unbatched path), and evaluations slower than ``slots / calls_per_s`` seconds stay
unbatched.
"""
from __future__ import annotations

import math

__all__ = ["BatchSizer"]


class BatchSizer:
    """Configurations per Ray call: fixed, or automatic from the measured evaluation time.

    Parameters
    ----------
    timeout_s : float or None
        The per-evaluation deadline; batches are kept short against it.
    fixed : int or None
        A fixed batch size (1: one configuration per call, the unbatched path); ``None`` chooses
        it from the measurements.

    Attributes
    ----------
    eval_s : float or None
        Moving average of the seconds one evaluation takes on a worker (``None`` before the first):
        each evaluation weighs ``smoothing`` against those before it, so a call of many evaluations
        moves it further than a call of one.
    """

    calls_per_s: float = 250.0    # calls per second the whole cluster may need from the driver
    max_batch: int = 256          # beyond this the per-call cost is noise against the per-evaluation cost
    max_call_s: float = 10.0      # longest expected call: results come back fresh, a lost call loses little
    timeout_share: float = 0.1    # ... and at most this share of timeout_s
    max_in_flight: int = 65536    # evaluations in the search's window (2 * slots * batch), for driver memory
    smoothing: float = 0.25       # weight of the newest evaluation in eval_s

    def __init__(self, timeout_s: float | None = None, fixed: int | None = None):
        if fixed is not None and (not isinstance(fixed, int) or isinstance(fixed, bool) or fixed < 1):
            raise ValueError(f"batch_size must be a positive integer or None (automatic), got {fixed!r}")
        self.timeout_s = timeout_s
        self.fixed = fixed
        self.eval_s: float | None = None

    @property
    def longest_call_s(self) -> float:
        """Seconds a call is expected to last at most (what sizes the batch)."""
        if self.timeout_s is None:
            return self.max_call_s
        return min(self.max_call_s, self.timeout_share * self.timeout_s)

    @property
    def call_budget_s(self) -> float:
        """Seconds after which a worker starts no further evaluation of a call (the rest is sent again).

        Twice :attr:`longest_call_s`: calls of the expected length finish whole, and one whose
        evaluations turned out slower than measured stops early instead of overrunning the deadline.
        """
        return 2.0 * self.longest_call_s

    def observe(self, seconds: float, count: int) -> None:
        """Fold in a call whose ``count`` evaluations took ``seconds`` on their worker."""
        if count <= 0 or not math.isfinite(seconds) or seconds < 0:
            return
        per_eval = max(seconds / count, 1e-7)
        if self.eval_s is None:
            self.eval_s = per_eval
        else:  # as if each evaluation of the call moved the average by `smoothing`
            self.eval_s += (1.0 - (1.0 - self.smoothing) ** count) * (per_eval - self.eval_s)

    def size(self, slots: int) -> int:
        """Configurations per call for ``slots`` evaluations at once."""
        if self.fixed is not None:
            return self.fixed
        if self.eval_s is None:
            return 1
        slots = max(1, int(slots))
        wanted = math.ceil(slots / (self.eval_s * self.calls_per_s))
        limit = min(self.max_batch, int(self.longest_call_s / self.eval_s), self.max_in_flight // (2 * slots))
        return max(1, min(wanted, limit))
