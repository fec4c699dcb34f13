"""In-process evaluator: configurations run one at a time in the driver."""
from __future__ import annotations

import collections
import math
import threading
import time
from collections.abc import Sequence

from qd.domain import Domain
from qd.evaluation import evaluate_config
from qd.result import EvalResult

_LOOK_S = 0.05  # collect() checks this often for an evaluation that started without a word


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
        thread. Otherwise evaluations run in a helper thread, one after another, while
        :meth:`collect` waits (the driver sleeps once per batch, not once per evaluation);
        one that passes the deadline is recorded as ``"timeout"`` and abandoned with its
        thread, and a fresh thread takes the rest of the queue. Python cannot stop a thread,
        so an abandoned evaluation keeps running in the background (and may keep using the
        domain) until it returns on its own. A domain that kills its process (``os._exit``)
        kills the driver too: use :class:`~qd.evaluators.RayEvaluator` for untrusted domains.

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
        self._keys: set[int] = set()  # submitted and not yet returned by collect()
        self._closed = False
        # The helper thread's side (timeout_s set): what it finished, what it runs now (key, start),
        # whether collect() lets it take work, and its generation (an abandoned thread's is old).
        self._cond = threading.Condition()
        self._done: list[tuple[int, EvalResult]] = []
        self._current: tuple[int, float] | None = None
        self._open = False
        self._generation = 0
        self._worker: threading.Thread | None = None
        self._abandoned: list[threading.Thread] = []

    def submit(self, key: int, config: dict) -> None:
        """Queue ``config`` under ``key`` (evaluated by a later :meth:`collect`)."""
        if self._closed:
            raise RuntimeError("SerialEvaluator is closed")
        with self._cond:
            if key in self._keys:
                raise ValueError(f"key {key!r} is already pending")
            self._keys.add(key)
            self._queue.append((key, config))

    def submit_many(self, items: Sequence[tuple[int, dict]]) -> None:
        """Queue several ``(key, config)`` pairs in order (:meth:`submit` each)."""
        for key, config in items:
            self.submit(key, config)

    def collect(self, timeout: float) -> list[tuple[int, EvalResult]]:
        """Evaluate queued configurations in order: at least one, then more until ``timeout`` has passed."""
        if self.timeout_s is None:
            return self._collect_inline(timeout)
        deadline = time.perf_counter() + timeout
        with self._cond:
            if not self._queue and self._current is None and not self._done:
                return []
            self._open = True
            self._start_worker()
            self._cond.notify_all()
            try:
                while True:
                    now = time.perf_counter()
                    current = self._current
                    if current is not None and now - current[1] >= self.timeout_s:
                        self._abandon(current[0])
                        continue
                    if not self._queue and current is None:
                        break  # everything queued is done
                    if self._done and now >= deadline:
                        break
                    wake = deadline if self._done else math.inf
                    # the helper thread says when a batch is done, not when an item starts: look again
                    # soon when none is known to run, else at the running one's deadline
                    wake = min(wake, current[1] + self.timeout_s if current else now + _LOOK_S)
                    self._cond.wait(max(wake - now, 0.0))
            finally:
                self._open = False
            done, self._done = self._done, []
            for key, _ in done:
                self._keys.discard(key)
            return done

    def pending(self) -> int:
        """Submitted evaluations not yet returned by :meth:`collect`."""
        return len(self._keys)

    def close(self) -> None:
        """Drop queued configurations (abandoned timed-out threads are left to finish)."""
        with self._cond:
            self._queue.clear()
            self._keys.clear()
            self._done.clear()
            self._closed = True
            self._generation += 1
            self._cond.notify_all()

    def __enter__(self) -> SerialEvaluator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- in the calling thread (timeout_s None) --------------------------------------------------
    def _collect_inline(self, timeout: float) -> list[tuple[int, EvalResult]]:
        done: list[tuple[int, EvalResult]] = []
        start = time.perf_counter()
        while self._queue:
            key, config = self._queue.popleft()
            self._keys.discard(key)
            done.append((key, self._evaluate(config)))
            if time.perf_counter() - start >= timeout:
                break
        return done

    def _evaluate(self, config: dict) -> EvalResult:
        try:
            return evaluate_config(self.domain, config)
        except SystemExit as exc:  # sys.exit() in a domain must not end the search (Ctrl-C still does)
            return EvalResult.failure("error", f"SystemExit: {exc}")
        except BaseException as exc:
            if threading.current_thread() is threading.main_thread():
                raise  # KeyboardInterrupt in the driver's own thread stops the search
            return EvalResult.failure("error", f"{type(exc).__name__}: {exc}")

    # -- in a helper thread (timeout_s set) ------------------------------------------------------
    def _start_worker(self) -> None:
        if self._worker is None or not self._worker.is_alive():
            # A daemon thread: a hung evaluation never blocks interpreter exit.
            self._worker = threading.Thread(target=self._work, args=(self._generation,), name="qd-serial-eval",
                                            daemon=True)
            self._worker.start()

    def _work(self, generation: int) -> None:
        while True:
            with self._cond:
                while self._generation == generation and not (self._open and self._queue):
                    if self._closed:
                        return
                    self._cond.wait()
                if self._generation != generation:
                    return
                key, config = self._queue.popleft()
                self._current = (key, time.perf_counter())
            result = self._evaluate(config)
            with self._cond:
                if self._generation != generation:
                    return  # abandoned: this evaluation was recorded as a timeout
                self._done.append((key, result))
                self._current = None
                if not self._queue:
                    self._cond.notify_all()  # the batch is done: wake collect() once

    def _abandon(self, key: int) -> None:
        """The running evaluation passed its deadline: record a timeout, leave its thread, start another."""
        self._generation += 1
        self._current = None
        if self._worker is not None:
            self._abandoned = [t for t in self._abandoned if t.is_alive()] + [self._worker]
        self._worker = None
        result = EvalResult.failure("timeout", f"evaluation exceeded timeout_s={self.timeout_s:g}")
        result.metrics["abandoned_threads"] = len(self._abandoned)
        self._done.append((key, result))
        self._start_worker()

