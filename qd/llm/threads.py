"""How many compute threads the embedded model gets: the cores that nothing else uses.

llama.cpp prefills a prompt about twice as fast with two threads as with one on a 2-core
machine, but only while both threads keep their cores: a thread that loses its core stalls the
other at every layer's barrier, and the model then runs slower than on one thread. So the model
should get every core when evaluations mostly wait on it (an LLM pipeline on Ray), and leave
the evaluations their cores when they compute (the arm). :class:`ThreadTuner` decides from the
run itself: it measures, over a window, the CPU that everything but the model server uses
(``/proc/stat`` minus the server's own ``/proc/PID/stat``), gives the model the cores left
over, and restarts the server on the same address when the answer changes.
See docs/architecture.md, "The embedded model".
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

from qd.llm.local import local_server, set_local_server_threads, usable_cores

__all__ = ["ThreadTuner", "model_threads", "other_cpu_cores", "process_cpu_seconds", "restart_to"]

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def model_threads(cores: int, other_cores: float) -> int:
    """Compute threads for the model when the rest of the machine keeps ``other_cores`` busy.

    The model gets the cores left over, rounding what others use to the nearest core, and
    always at least one thread.
    """
    return max(1, min(cores, cores - int(other_cores + 0.5)))


def _busy_seconds() -> float | None:
    """CPU seconds all cores have spent not idle since boot (``None`` off Linux)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / _TICKS


def process_cpu_seconds(pid: int) -> float | None:
    """CPU seconds (user + system) process ``pid`` has used, or ``None``."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / _TICKS


def other_cpu_cores(server_pid: int, window_s: float) -> float | None:
    """Cores busy with anything but process ``server_pid`` over the next ``window_s`` seconds."""
    busy0, own0 = _busy_seconds(), process_cpu_seconds(server_pid)
    t0 = time.monotonic()
    time.sleep(window_s)
    busy1, own1 = _busy_seconds(), process_cpu_seconds(server_pid)
    if None in (busy0, own0, busy1, own1):
        return None
    return max(0.0, (busy1 - busy0) - (own1 - own0)) / max(1e-9, time.monotonic() - t0)  # type: ignore[operator]


def restart_to(decided: list[int], current: int) -> int | None:
    """The thread count to restart the model with after the latest window (``decided``), or None.

    A restart costs seconds of a loaded model: the first window decides at once; after it, a
    new count must come out of two windows in a row, so a load hovering near a core's edge
    cannot make the server flap.
    """
    latest = decided[-1]
    if latest == current or (len(decided) > 1 and decided[-2] != latest):
        return None
    return latest


class ThreadTuner:
    """Background thread that sizes the embedded model server to the cores left over.

    Parameters
    ----------
    window_s : float
        Length of each measurement window; the thread count is re-decided after each.
    first_window_s : float, optional
        Length of the first window (default 6 s; ``None``: ``window_s``): short, so that a run that
        leaves cores free gets them early.
    cores : int, optional
        Cores to share (default: those this process may use).
    on_change : callable, optional
        Called as ``on_change(threads, other_cores)`` after each restart (for the run's log).

    Notes
    -----
    The first window decides at once; after it, a new thread count must come out of two
    windows in a row before the server restarts. Does nothing while no embedded server runs in
    this process, and off Linux.
    """

    def __init__(self, window_s: float = 15.0, first_window_s: float | None = 6.0, cores: int | None = None,
                 on_change: Callable[[int, float], None] | None = None) -> None:
        first_window_s = window_s if first_window_s is None else first_window_s
        if window_s <= 0 or first_window_s <= 0:
            raise ValueError(f"windows must be positive, got {window_s} and {first_window_s}")
        self.window_s, self.first_window_s, self.cores = float(window_s), float(first_window_s), cores or usable_cores()
        self.on_change = on_change
        self.decisions: list[tuple[int, float]] = []  # (threads, other cores) per window
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="qd-llm-threads", daemon=True)

    def start(self) -> ThreadTuner:
        """Start measuring in the background."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop measuring (a window in progress is abandoned)."""
        self._stop.set()

    def __enter__(self) -> ThreadTuner:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _loop(self) -> None:
        while not self._stop.is_set():
            server = local_server()
            proc = getattr(server, "_proc", None)
            if server is None or proc is None:
                self._stop.wait(1.0)
                continue
            other = other_cpu_cores(proc.pid, self.window_s if self.decisions else self.first_window_s)
            if self._stop.is_set() or _busy_seconds() is None:  # stopped, or no /proc (not Linux)
                return
            if other is None:  # the server's process ended during the window (restarted): measure again
                continue
            self.decisions.append((model_threads(self.cores, other), other))
            threads = restart_to([t for t, _ in self.decisions], server.n_threads)
            if threads is not None and set_local_server_threads(threads, keep=False) and self.on_change:
                self.on_change(threads, other)
