"""In-process evaluator: configurations run one at a time in the driver."""
from __future__ import annotations

import collections
import concurrent.futures as cf
import threading
import time

from qd.domain import Domain
from qd.evaluation import evaluate_config
from qd.result import EvalResult


class SerialEvaluator:
    """Evaluate configurations one after another in this process.

    :meth:`submit` only queues; :meth:`collect` runs queued configurations in
    submission order, at least one and then more while its ``timeout`` lasts.

    Parameters
    ----------
    domain : Domain
        The domain to evaluate.
    timeout_s : float or None
        Per-evaluation deadline. ``None`` runs the domain directly in the calling
        thread. Otherwise each evaluation runs in a helper thread; one that passes
        the deadline is recorded as ``"timeout"`` and abandoned. Python cannot stop
        a thread, so an abandoned evaluation keeps running in the background (and
        may keep using the domain) until it returns on its own. A domain that
        kills its process (``os._exit``) kills the driver too: use
        :class:`~qd.evaluators.RayEvaluator` for untrusted domains.

    Attributes
    ----------
    slots : int
        Always 1.
    """

    slots = 1

    def __init__(self, domain: Domain, timeout_s: float | None = None):
        if timeout_s is not None and not timeout_s > 0:
            raise ValueError(f"timeout_s must be a positive number of seconds or None, got {timeout_s!r}")
        self.domain = domain
        self.timeout_s = timeout_s
        self._queue: collections.deque[tuple[int, dict]] = collections.deque()
        self._keys: set[int] = set()
        self._abandoned: list[threading.Thread] = []
        self._closed = False

    def submit(self, key: int, config: dict) -> None:
        """Queue ``config`` under ``key`` (evaluated by a later :meth:`collect`)."""
        if self._closed:
            raise RuntimeError("SerialEvaluator is closed")
        if key in self._keys:
            raise ValueError(f"key {key!r} is already pending")
        self._keys.add(key)
        self._queue.append((key, config))

    def collect(self, timeout: float) -> list[tuple[int, EvalResult]]:
        """Evaluate queued configurations in order: at least one, then more until ``timeout`` has passed."""
        done: list[tuple[int, EvalResult]] = []
        start = time.perf_counter()
        while self._queue:
            key, config = self._queue.popleft()
            self._keys.discard(key)
            done.append((key, self._evaluate(config)))
            if time.perf_counter() - start >= timeout:
                break
        return done

    def pending(self) -> int:
        """Queued configurations not yet evaluated."""
        return len(self._queue)

    def close(self) -> None:
        """Drop queued configurations (abandoned timed-out threads are left to finish)."""
        self._queue.clear()
        self._keys.clear()
        self._closed = True

    def __enter__(self) -> SerialEvaluator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _evaluate(self, config: dict) -> EvalResult:
        if self.timeout_s is None:
            try:
                return evaluate_config(self.domain, config)
            except SystemExit as exc:  # sys.exit() in a domain must not end the search (Ctrl-C still does)
                return EvalResult.failure("error", f"SystemExit: {exc}")
        future: cf.Future[EvalResult] = cf.Future()

        def run() -> None:
            try:
                future.set_result(evaluate_config(self.domain, config))
            except BaseException as exc:  # evaluate_config catches Exception; this is SystemExit & co.
                future.set_result(EvalResult.failure("error", f"{type(exc).__name__}: {exc}"))

        # A fresh daemon thread per evaluation: a hung one never blocks the next, nor interpreter exit.
        thread = threading.Thread(target=run, name="qd-serial-eval", daemon=True)
        thread.start()
        try:
            return future.result(timeout=self.timeout_s)
        except cf.TimeoutError:
            self._abandoned = [t for t in self._abandoned if t.is_alive()] + [thread]
            result = EvalResult.failure("timeout", f"evaluation exceeded timeout_s={self.timeout_s:g}")
            result.metrics["abandoned_threads"] = len(self._abandoned)
            return result
