"""One long-lived asyncio event loop per process, where synchronous code runs its coroutines.

An ``async def`` score function runs on this loop rather than in a fresh ``asyncio.run`` per
evaluation: an SDK client made once at module level (``client = AsyncOpenAI()``, as the openai
docs write it) keeps its connections bound to the loop that first used them, and in the next
evaluation's new loop those fail with ``APIConnectionError``. The loop runs in a daemon thread of
its own, so it serves every evaluation of the process (serial, a Ray task worker, a Ray actor's
concurrent evaluations) and also callers that are inside a running loop themselves (a notebook
cell), which ``asyncio.run`` refuses.
"""
from __future__ import annotations

import asyncio
import contextvars
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["worker_loop", "run_coroutine"]

T = TypeVar("T")

_LOCK = threading.Lock()
_LOOP: asyncio.AbstractEventLoop | None = None
_PID: int | None = None  # a forked child has the loop object but not its thread: it makes its own


def _serve(loop: asyncio.AbstractEventLoop, started: threading.Event) -> None:
    asyncio.set_event_loop(loop)
    loop.call_soon(started.set)
    loop.run_forever()


def worker_loop() -> asyncio.AbstractEventLoop:
    """The long-lived event loop of this process, started on first use in a daemon thread."""
    global _LOOP, _PID
    with _LOCK:
        if _LOOP is None or _PID != os.getpid() or _LOOP.is_closed():
            loop, started = asyncio.new_event_loop(), threading.Event()
            # An empty context: the thread must not keep the context of the evaluation that happened to start it.
            thread = threading.Thread(target=contextvars.Context().run, args=(_serve, loop, started),
                                      name="qd-worker-loop", daemon=True)
            thread.start()
            started.wait()
            _LOOP, _PID = loop, os.getpid()
        return _LOOP


def run_coroutine(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on :func:`worker_loop` and return its result (or raise its exception).

    Callable from any thread except the loop's own, a thread with a running loop included. The
    coroutine runs in a copy of the caller's context (tracing and :func:`qd.pipeline_llm` see the
    caller's evaluation). An interrupt while waiting cancels it.

    Raises
    ------
    RuntimeError
        When called from a coroutine of the worker loop itself (it would wait for itself).
    """
    loop = worker_loop()
    if asyncio._get_running_loop() is loop:
        coro.close()
        raise RuntimeError("run_coroutine() called from the worker loop itself: await the coroutine instead")
    future = asyncio.run_coroutine_threadsafe(coro, loop)  # its callback, hence the task, copies this context
    try:
        return future.result()
    except BaseException:
        future.cancel()
        raise
