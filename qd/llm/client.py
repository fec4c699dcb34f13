"""``LLMClient``: every LLM call qd makes goes through here.

One client wraps an OpenAI-compatible endpoint (OpenAI, vLLM, Ollama, llama.cpp, or the embedded
model when ``base_url`` is empty) with what a long search needs: retries with exponential backoff
that honour ``Retry-After``, a concurrency limit, a persistent request cache, token/cost/latency
accounting overall and per tag, and a trace span per call (``qd.analysis.tracer.record_llm_call``)
so descriptors such as ``llm_calls`` and ``critical_path`` see every logical call, cache hits too.

Accounting conventions
----------------------
``usage.calls`` counts logical calls that returned text (cache hits included), ``usage.errors``
logical calls that raised :class:`LLMError`, ``usage.requests`` HTTP requests sent and
``usage.failures`` failed HTTP attempts (each retried attempt counts). ``tokens_in``/``tokens_out``,
``cost_usd`` and ``latency_s`` count work the endpoint actually did, so cache hits add nothing there;
the trace span of a cache hit carries the original tokens and nominal cost with ``cached=True`` so
per-configuration descriptors do not depend on the cache's state.
"""
from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import os
import random
import threading
import time
import urllib.parse
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qd.llm.cache import RequestCache, request_key
from qd.llm.endpoint import LLMEndpoint
from qd.llm.models import MODEL_ALIAS
from qd.llm.prices import cost_of, normalize_prices

__all__ = ["LLMClient", "LLMError", "LLMResponse", "Usage", "CAUSES", "TRANSIENT_CAUSES", "PERSISTENT_CAUSES",
           "FIX_HINTS"]

APIS = ("completions", "chat")

# Why a call failed (its last attempt), as counted in Usage.failed_<cause> and shown by `qd status`.
CAUSES: tuple[str, ...] = ("authentication", "not_found", "bad_request", "rate_limit", "timeout", "server_error",
                           "connection", "unusable_output", "other")
# Causes worth retrying: the next attempt may succeed.
TRANSIENT_CAUSES: tuple[str, ...] = ("rate_limit", "timeout", "server_error", "connection", "unusable_output")
# Causes that the next calls will hit too: the first `fail_fast` calls all failing for one of them
# stop the run (LLMClient.fatal).
PERSISTENT_CAUSES: tuple[str, ...] = ("authentication", "not_found", "bad_request", "connection", "timeout")
_EMBEDDED_RESTART_WAIT_S = 60.0  # longest wait for the embedded model to come back from a restart
# The run config key that fixes each persistent cause.
FIX_HINTS: dict[str, str] = {
    "authentication": "llm.api_key_env (the environment variable that holds the endpoint's API key)",
    "not_found": "llm.model (a model the endpoint serves) or llm.base_url",
    "bad_request": "llm.api ('chat' for chat-only models, 'completions' for base models) or llm.model",
    "connection": "llm.base_url (an endpoint this machine reaches)",
    "timeout": "llm.base_url (an endpoint that answers) or llm.timeout_s (long enough for this model)",
}


class LLMError(RuntimeError):
    """An LLM call failed after all retries (or with an error that retrying cannot fix).

    Attributes
    ----------
    attempts : int
        HTTP attempts made.
    last_error : str
        The final attempt's error.
    retryable : bool
        Whether the last error was of a transient kind (timeouts, 429, 5xx, garbage).
    cause : str
        One of :data:`CAUSES`.
    """

    def __init__(self, message: str, *, attempts: int = 0, last_error: str = "", retryable: bool = True,
                 cause: str = "other") -> None:
        super().__init__(message)
        self.attempts = attempts
        self.last_error = last_error
        self.retryable = retryable
        self.cause = cause


class _Garbage(Exception):
    """A 200 response whose body is not a usable completion (non-JSON, no choices, no text)."""


@dataclass(frozen=True)
class LLMResponse:
    """Result of one logical call.

    Attributes
    ----------
    text : str
        Completion text (chat: the assistant message content).
    tokens_in, tokens_out : int
        Prompt and completion tokens reported by the endpoint (cached responses keep the original).
    latency_s : float
        Wall time of this call (a cache hit's lookup time when ``cached``).
    cached : bool
        Served from the request cache without an HTTP call.
    cost_usd : float
        Nominal cost of the request from the price table (0 for the local model).
    span_id : int or None
        Trace span id, when a tracer was active; pass it in ``deps`` of calls that consume this output.
    finish_reason : str
        ``"stop"``, ``"length"`` (hit max_tokens), ...
    model : str
        Model that answered.
    """

    text: str
    tokens_in: int
    tokens_out: int
    latency_s: float
    cached: bool
    cost_usd: float
    span_id: int | None = None
    finish_reason: str = ""
    model: str = ""


@dataclass
class Usage:
    """Counters of one client, overall or for one tag (see the module docstring for conventions)."""

    calls: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cache_hits: int = 0
    failures: int = 0
    errors: int = 0
    requests: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0
    # failed calls (``errors``) by the cause of their last attempt (see CAUSES)
    failed_authentication: int = 0
    failed_not_found: int = 0
    failed_bad_request: int = 0
    failed_rate_limit: int = 0
    failed_timeout: int = 0
    failed_server_error: int = 0
    failed_connection: int = 0
    failed_unusable_output: int = 0
    failed_other: int = 0

    def by_cause(self) -> dict[str, int]:
        """Failed calls per cause, causes with none left out."""
        return {c: int(getattr(self, f"failed_{c}")) for c in CAUSES if getattr(self, f"failed_{c}")}

    # keys()/__getitem__ make ``dict(usage)`` work, like a read-only mapping.
    def keys(self) -> list[str]:
        """Counter names."""
        return [f.name for f in dataclasses.fields(self)]

    def __getitem__(self, key: str) -> float:
        if key not in self.__dataclass_fields__:
            raise KeyError(key)
        return getattr(self, key)

    def as_dict(self) -> dict[str, float]:
        """Plain dict (for JSON, run stores and ``qd status``)."""
        return dict(self.__dict__)  # the fields, all numbers: no deep copy (asdict) needed

    def add(self, other: Usage) -> None:
        """Add another usage's counters into this one (e.g. merging Ray workers' clients)."""
        for f in dataclasses.fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


def _record_span(**kwargs: Any) -> int | None:
    """Record an LLM span with the active tracer; a no-op when ``qd.analysis`` is unavailable."""
    try:
        from qd.analysis.tracer import record_llm_call
    except ImportError:  # qd.analysis missing or incomplete: accounting still works
        return None
    return record_llm_call(**kwargs)


def _retry_after(exc: Exception) -> float | None:
    """Seconds the server asked us to wait (``retry-after-ms`` or ``Retry-After``), if any."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if not headers:
        return None
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(0.0, float(value) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:  # an HTTP date; anything else is no request at all (the usual backoff applies)
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return None if parsed is None else max(0.0, parsed.timestamp() - time.time())


def _http_module() -> Any:
    """The HTTP library the installed ``openai`` is built on (``httpx``, or its successor ``httpx2``)."""
    try:
        import httpx2 as http
    except ImportError:
        import httpx as http
    return http


def _deadline_transport(total_s: float, asynchronous: bool) -> Any:
    """An HTTP transport that fails a request whose response has not fully arrived in ``total_s``.

    httpx timeouts apply to each network operation, so a server that trickles a body a few bytes
    at a time (a stalled stream, an overloaded proxy) never trips them and can hold a call for
    minutes. This wrapper checks a deadline between body chunks and raises ``ReadTimeout``, which
    ``openai`` turns into ``APITimeoutError``; a call then takes at most about twice
    ``timeout_s`` (the deadline plus one read timeout).
    """
    http = _http_module()
    import openai

    limits = getattr(openai, "DEFAULT_CONNECTION_LIMITS", None) or http.Limits(max_connections=1000,
                                                                                max_keepalive_connections=100)

    def expired(request: Any) -> Any:
        return http.ReadTimeout(f"response not complete within the total timeout of {total_s:g} s", request=request)

    if asynchronous:
        class AsyncDeadlineStream(http.AsyncByteStream):
            def __init__(self, inner: Any, deadline: float, request: Any) -> None:
                self._inner, self._deadline, self._request = inner, deadline, request

            async def __aiter__(self) -> Any:
                async for chunk in self._inner:
                    if time.monotonic() > self._deadline:
                        raise expired(self._request)
                    yield chunk

            async def aclose(self) -> None:
                await self._inner.aclose()

        class AsyncDeadlineTransport(http.AsyncBaseTransport):
            qd_self_traced = True  # this client records its own spans: qd.analysis.autotrace skips it

            def __init__(self) -> None:
                self._inner = http.AsyncHTTPTransport(limits=limits)

            async def handle_async_request(self, request: Any) -> Any:
                deadline = time.monotonic() + total_s
                response = await self._inner.handle_async_request(request)
                response.stream = AsyncDeadlineStream(response.stream, deadline, request)
                return response

            async def aclose(self) -> None:
                await self._inner.aclose()

        return AsyncDeadlineTransport()

    class DeadlineStream(http.SyncByteStream):
        def __init__(self, inner: Any, deadline: float, request: Any) -> None:
            self._inner, self._deadline, self._request = inner, deadline, request

        def __iter__(self) -> Any:
            for chunk in self._inner:
                if time.monotonic() > self._deadline:
                    raise expired(self._request)
                yield chunk

        def close(self) -> None:
            self._inner.close()

    class DeadlineTransport(http.BaseTransport):
        qd_self_traced = True  # this client records its own spans: qd.analysis.autotrace skips it

        def __init__(self) -> None:
            self._inner = http.HTTPTransport(limits=limits)

        def handle_request(self, request: Any) -> Any:
            deadline = time.monotonic() + total_s
            response = self._inner.handle_request(request)
            response.stream = DeadlineStream(response.stream, deadline, request)
            return response

        def close(self) -> None:
            self._inner.close()

    return DeadlineTransport()


def _status_cause(status: int) -> str:
    """The failure cause of an HTTP status (see CAUSES); retried when in TRANSIENT_CAUSES."""
    if status in (401, 403):
        return "authentication"
    if status == 404:
        return "not_found"
    if status == 429:
        return "rate_limit"
    if status in (408, 504):
        return "timeout"
    if status >= 500 or status in (409, 425):
        return "server_error"
    return "bad_request"


@dataclass
class _Call:
    """One logical request (all its attempts): what it sends and how it is accounted."""

    kind: str
    req: dict[str, Any]
    key: str | None
    name: str
    tag: str
    deps: Sequence[int] | None
    start: float
    start_wall: float
    last_cause: str = ""  # of the latest failed attempt

    @property
    def prompt(self) -> Any:
        """What the call asks: the prompt text, or the chat messages (the span's ``input``)."""
        return self.req.get("messages", self.req.get("prompt"))


class LLMClient(LLMEndpoint):
    r"""OpenAI-compatible client with retries, cache, concurrency limit, accounting and tracing.

    Parameters
    ----------
    base_url : str, optional
        Endpoint such as ``"https://api.openai.com/v1"`` or ``"http://127.0.0.1:8080/v1"``;
        ``None`` or ``""`` uses the embedded gemma-3-270m server (started on first use).
        Pickling such a client starts the embedded server in this process (if it is not
        running yet) and points the copy at it, so the Ray workers of a local run share the
        driver's model rather than each loading its own; a copy unpickled on another machine
        starts its own server there.
    model : str
        Model name sent with each request.
    api : {"completions", "chat"}
        Endpoint :meth:`complete` uses: ``"completions"`` for base models, ``"chat"`` for instruct
        models (the prompt becomes one user message).
    api_key_env : str
        Name of the environment variable holding the API key. The key is read when the HTTP
        client is created and is never stored on this object, so it cannot leak through ``repr``,
        pickling or logs. Without it a dummy key is sent (local servers need none).
    temperature : float
        Default sampling temperature.
    max_tokens : int
        Default completion length limit.
    timeout_s : float
        Per-request timeout: for each network operation, and as a deadline for the whole response
        (a body trickled slowly is cut off, so one attempt lasts at most about ``2 * timeout_s``).
    retries : int
        Retries after the first attempt for transient errors (timeouts, connection errors,
        429, 5xx, garbage bodies). Client errors (400, 401, 404, ...) are not retried.
    concurrency : int
        Most requests in flight at once from this client (per process; per event loop for async).
    cache : str, Path, RequestCache or None
        SQLite file of the request cache; ``None`` disables caching.
    prices : dict, optional
        ``{model: (usd_per_1M_in, usd_per_1M_out)}`` merged over :data:`qd.llm.prices.DEFAULT_PRICES`.
    backoff_s : float
        First retry delay; doubles each retry (with jitter), capped at ``max_backoff_s``.
    max_backoff_s : float
        Cap on any single wait, ``Retry-After`` included.
    fail_fast : int
        When the first ``fail_fast`` calls of this client all fail for the same persistent cause
        (:data:`PERSISTENT_CAUSES`: a wrong key, model, API or address), :attr:`fatal` holds an
        :class:`LLMError` with the endpoint's message and the config key to fix; 0 never.

    Examples
    --------
    >>> client = LLMClient()                                  # doctest: +SKIP
    >>> client.complete("A haiku about maps:\n", max_tokens=30).text  # doctest: +SKIP
    """

    def __init__(
        self,
        base_url: str | None = None,
        model: str = MODEL_ALIAS,
        api: str = "completions",
        api_key_env: str = "OPENAI_API_KEY",
        temperature: float = 0.8,
        max_tokens: int = 256,
        timeout_s: float = 30.0,
        retries: int = 3,
        concurrency: int = 4,
        cache: str | Path | RequestCache | None = None,
        prices: dict[str, Any] | None = None,
        backoff_s: float = 0.5,
        max_backoff_s: float = 60.0,
        fail_fast: int = 0,
    ) -> None:
        if api not in APIS:
            raise ValueError(f"api must be one of {APIS}, got {api!r}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        self.base_url = base_url or None
        self.model = model
        self.api = api
        self.api_key_env = api_key_env
        self.temperature = float(temperature)
        self.max_tokens = int(max_tokens)
        self.timeout_s = float(timeout_s)
        self.retries = int(retries)
        self.concurrency = int(concurrency)
        self.backoff_s = float(backoff_s)
        self.max_backoff_s = float(max_backoff_s)
        self.prices = normalize_prices(prices)
        if cache is None or isinstance(cache, RequestCache):
            self.cache = cache
        else:
            self.cache = RequestCache(cache)
        self.usage = Usage()
        self.usage_by_tag: dict[str, Usage] = {}
        self.fail_fast = int(fail_fast)
        self.last_errors: dict[str, str] = {}  # cause -> the endpoint's message of the latest such failure
        self.fatal: LLMError | None = None
        self._first: list[str | None] = []  # outcomes (None: success) of the first fail_fast calls
        self._resolved_url: str | None = self.base_url
        self._init_runtime()

    # -- runtime state: never pickled, rebuilt lazily ------------------------------------------
    def _init_runtime(self) -> None:
        self._lock = threading.Lock()
        self._sem = threading.BoundedSemaphore(self.concurrency)
        self._client: Any = None
        self._async: weakref.WeakKeyDictionary[Any, tuple[Any, asyncio.Semaphore]] = weakref.WeakKeyDictionary()

    def __getstate__(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k not in ("_lock", "_sem", "_client", "_async")}
        state["usage"] = dataclasses.replace(self.usage)
        state["usage_by_tag"] = {k: dataclasses.replace(v) for k, v in self.usage_by_tag.items()}
        return self._pickled_endpoint(state, start=True)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._init_runtime()

    def __repr__(self) -> str:
        where = self.base_url or "embedded"
        cache = "off" if self.cache is None else str(self.cache.path)
        return f"LLMClient({where}, model={self.model!r}, api={self.api!r}, cache={cache})"

    def _sync_client(self) -> Any:
        if self._client is None:
            import openai

            with self._lock:
                if self._client is None:
                    self._client = self.openai_client(
                        timeout=self.timeout_s,
                        max_retries=0,  # retries are ours: they must be counted and honour Retry-After
                        http_client=openai.DefaultHttpxClient(
                            transport=_deadline_transport(self.timeout_s, asynchronous=False)),
                    )
        return self._client

    def _async_state(self) -> tuple[Any, asyncio.Semaphore]:
        # httpx async pools and asyncio semaphores are bound to one event loop.
        loop = asyncio.get_running_loop()
        state = self._async.get(loop)
        if state is None:
            import openai

            client = self.async_openai_client(
                timeout=self.timeout_s, max_retries=0,
                http_client=openai.DefaultAsyncHttpxClient(
                    transport=_deadline_transport(self.timeout_s, asynchronous=True)),
            )
            state = (client, asyncio.Semaphore(self.concurrency))
            self._async[loop] = state
        return state

    def close(self) -> None:
        """Close the HTTP connection pool (the client stays usable; it reconnects lazily)."""
        client, self._client = self._client, None
        if client is not None:
            client.close()

    # -- request building -----------------------------------------------------------------------
    def _request(
        self,
        kind: str,
        content: str | Sequence[dict[str, Any]],
        stop: str | Sequence[str] | None,
        temperature: float | None,
        max_tokens: int | None,
        seed: int | None,
    ) -> dict[str, Any]:
        req: dict[str, Any] = {
            "model": self.model,
            "temperature": self.temperature if temperature is None else float(temperature),
            "max_tokens": self.max_tokens if max_tokens is None else int(max_tokens),
        }
        if kind == "chat":
            req["messages"] = [dict(m) for m in content] if not isinstance(content, str) else [
                {"role": "user", "content": content}
            ]
        else:
            req["prompt"] = content
        if stop is not None:
            req["stop"] = [stop] if isinstance(stop, str) else list(stop)
        if seed is not None:
            req["seed"] = int(seed)
        return req

    @property
    def endpoint(self) -> str:
        """The endpoint's identity in cache keys: ``embedded`` or the normalized ``base_url``.

        The embedded model is one endpoint wherever it runs (its port changes every start); two
        servers at different URLs are different endpoints even when they serve the same model name.
        """
        if self.base_url is None:
            return "embedded"
        parts = urllib.parse.urlsplit(self.base_url.strip())
        return urllib.parse.urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path.rstrip("/"),
                                        parts.query, ""))

    def _cache_key(self, kind: str, req: dict[str, Any], sample: int) -> str:
        return request_key({"endpoint": self.endpoint, "api": kind, "sample": int(sample), **req})

    @staticmethod
    def _parse(kind: str, resp: Any) -> tuple[str, int, int, str, str]:
        """(text, tokens_in, tokens_out, finish_reason, model) or :class:`_Garbage`."""
        choices = getattr(resp, "choices", None)
        if not isinstance(choices, list):
            raise _Garbage(f"response is not a completion object: {str(resp)[:120]!r}")
        if not choices:
            raise _Garbage("response has no choices")
        choice = choices[0]
        text = getattr(getattr(choice, "message", None), "content", None) if kind == "chat" \
            else getattr(choice, "text", None)
        if not isinstance(text, str):
            raise _Garbage("response choice has no text")
        usage = getattr(resp, "usage", None)
        tokens_in = max(0, int(getattr(usage, "prompt_tokens", 0) or 0))  # a server's negative count is no count
        tokens_out = max(0, int(getattr(usage, "completion_tokens", 0) or 0))
        finish = getattr(choice, "finish_reason", None)
        return text, tokens_in, tokens_out, str(finish or ""), str(getattr(resp, "model", "") or "")

    def _classify(self, exc: BaseException) -> tuple[str, str, float | None]:
        """(cause, message, server-requested wait) for an exception from one attempt."""
        import openai

        if isinstance(exc, _Garbage):
            return "unusable_output", f"garbage response: {exc}", None
        if isinstance(exc, ValueError):  # JSONDecodeError from a truncated or non-JSON body
            return "unusable_output", f"garbage response: {type(exc).__name__}: {exc}", None
        if isinstance(exc, openai.APITimeoutError):
            return "timeout", f"timeout after {self.timeout_s:g} s", None
        if isinstance(exc, openai.APIConnectionError):
            reason = exc.__cause__ or exc.__context__  # httpx's error: refused, DNS, TLS
            detail = f" ({type(reason).__name__}: {reason})" if reason is not None and str(reason) else ""
            return "connection", f"connection error: {exc}{detail}", None
        if isinstance(exc, openai.APIResponseValidationError):
            return "unusable_output", f"garbage response: {exc}", None
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            cause = _status_cause(status)
            message = f"HTTP {status}: {str(exc.message).removeprefix(f'Error code: {status} - ')}"
            if cause == "authentication":
                unset = "" if os.environ.get(self.api_key_env) else ", which is not set"
                message += f" (check the API key in ${self.api_key_env}{unset})"
            return cause, message, _retry_after(exc) if cause in TRANSIENT_CAUSES else None
        return "other", f"{type(exc).__name__}: {exc}", None

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_backoff_s)
        base = min(self.backoff_s * (2**attempt), self.max_backoff_s)
        return base * (0.5 + 0.5 * random.random())  # jitter de-synchronizes concurrent retries

    def _cost(self, model: str, tokens_in: int, tokens_out: int) -> float | None:
        """Nominal cost of a call (``None``: the model is unpriced, and the call counts as free)."""
        if self.is_local:
            return 0.0
        cost = cost_of(self.prices, model or self.model, tokens_in, tokens_out)
        if cost is None and model and model != self.model:  # the server renamed it (a dated or deployment name)
            cost = cost_of(self.prices, self.model, tokens_in, tokens_out)
        return cost

    # -- accounting -----------------------------------------------------------------------------
    def _count(self, tag: str, **deltas: float) -> None:
        with self._lock:
            tagged = self.usage_by_tag.setdefault(tag, Usage())
            for key, value in deltas.items():
                setattr(self.usage, key, getattr(self.usage, key) + value)
                setattr(tagged, key, getattr(tagged, key) + value)

    def _begin(self, kind: str, content: Any, stop: Any, temperature: float | None, max_tokens: int | None,
               name: str, deps: Sequence[int] | None, seed: int | None, sample: int,
               tag: str | None) -> tuple[_Call, LLMResponse | None]:
        """The request of one call, and its cached response when the cache has it."""
        call = _Call(kind, self._request(kind, content, stop, temperature, max_tokens, seed), None,
                     name, tag or name, deps, time.perf_counter(), time.time())
        if self.cache is not None:
            call.key = self._cache_key(kind, call.req, sample)
            hit = self.cache.get(call.key)
            if hit is not None:
                return call, self._finish_cached(hit, call)
        return call, None

    def _wait_for_embedded(self, call: _Call) -> None:
        """After a refused connection or a server error from the embedded model, wait until it answers.

        The model restarts when the thread tuner gives it another thread count (seconds of
        refused connections, then ``503 Loading model``); the next attempt goes once it is back.
        """
        if self.is_local and call.last_cause in ("connection", "server_error"):
            from qd.llm.local import wait_until_healthy

            wait_until_healthy(self.resolved_base_url(), _EMBEDDED_RESTART_WAIT_S)

    def _after_failure(self, call: _Call, exc: Exception, attempt: int) -> float:
        """Count a failed attempt; the delay before the next one, or raise the call's LLMError."""
        cause, message, wait = self._classify(exc)
        call.last_cause = cause
        retryable = cause in TRANSIENT_CAUSES
        self._count(call.tag, failures=1)
        if not retryable or attempt >= self.retries:
            raise self._fail(call, attempt + 1, message, retryable, cause) from exc
        return self._delay(attempt, wait)

    def _finish_cached(self, hit: dict[str, Any], call: _Call) -> LLMResponse:
        latency = time.perf_counter() - call.start
        self._count(call.tag, calls=1, cache_hits=1)  # not an outcome for fail_fast: the endpoint was not asked
        cost = self._cost(hit.get("model", ""), hit["tokens_in"], hit["tokens_out"])
        span = _record_span(
            name=call.name, model=hit.get("model") or self.model, tokens_in=hit["tokens_in"],
            tokens_out=hit["tokens_out"], cached=True, latency_s=latency, start_s=call.start_wall, ok=True,
            cost_usd=cost, deps=call.deps, input=call.prompt, output=hit["text"],
        )
        return LLMResponse(hit["text"], hit["tokens_in"], hit["tokens_out"], latency, True, cost or 0.0, span,
                           hit.get("finish_reason", ""), hit.get("model", ""))

    def _finish_ok(self, parsed: tuple[str, int, int, str, str], call: _Call) -> LLMResponse:
        text, t_in, t_out, finish, model = parsed
        latency = time.perf_counter() - call.start
        cost = self._cost(model, t_in, t_out)
        if self.cache is not None and call.key is not None:
            self.cache.put(call.key, {"text": text, "tokens_in": t_in, "tokens_out": t_out,
                                      "finish_reason": finish, "model": model, "latency_s": latency})
        self._count(call.tag, calls=1, tokens_in=t_in, tokens_out=t_out, cost_usd=cost or 0.0, latency_s=latency)
        self._outcome(None)
        span = _record_span(name=call.name, model=model or self.model, tokens_in=t_in, tokens_out=t_out,
                            cached=False, latency_s=latency, start_s=call.start_wall, ok=True, cost_usd=cost,
                            deps=call.deps, input=call.prompt, output=text)
        return LLMResponse(text, t_in, t_out, latency, False, cost or 0.0, span, finish, model)

    def _fail(self, call: _Call, attempts: int, message: str, retryable: bool, cause: str) -> LLMError:
        latency = time.perf_counter() - call.start
        self._count(call.tag, errors=1, latency_s=latency, **{f"failed_{cause}": 1})
        with self._lock:
            self.last_errors[cause] = message
        self._outcome(cause, message)
        # The span's cost is 0, or None for a model the price table lacks (marked unpriced, as on success).
        _record_span(name=call.name, model=self.model, tokens_in=0, tokens_out=0, cached=False, latency_s=latency,
                     start_s=call.start_wall, ok=False, error=message, cost_usd=self._cost(self.model, 0, 0),
                     deps=call.deps, input=call.prompt)
        where = self.base_url or "the embedded model"
        verb = "failed after" if retryable else "failed (not retryable) after"
        return LLMError(
            f"{call.kind} request to {where} (model {self.model!r}) {verb} {attempts} attempt(s): {message}",
            attempts=attempts, last_error=message, retryable=retryable, cause=cause,
        )

    def _outcome(self, cause: str | None, message: str = "") -> None:
        """Record how one of the first ``fail_fast`` calls ended; set :attr:`fatal` when all failed alike."""
        with self._lock:
            if len(self._first) >= self.fail_fast:
                return
            self._first.append(cause)
            n = self.fail_fast
            if len(self._first) == n and cause in PERSISTENT_CAUSES and all(c == cause for c in self._first):
                where = self.base_url or "the embedded model"
                self.fatal = LLMError(
                    f"the first {n} LLM calls to {where} (model {self.model!r}) all failed "
                    f"({cause.replace('_', ' ')}): {message}; fix {FIX_HINTS[cause]}",
                    attempts=n, last_error=message, retryable=False, cause=cause)

    # -- sync API ---------------------------------------------------------------------------------
    def _call(self, kind: str, content: Any, stop: Any, temperature: float | None, max_tokens: int | None,
              name: str, deps: Sequence[int] | None, seed: int | None, sample: int, tag: str | None) -> LLMResponse:
        call, cached = self._begin(kind, content, stop, temperature, max_tokens, name, deps, seed, sample, tag)
        if cached is not None:
            return cached
        client = self._sync_client()
        endpoint = client.chat.completions if kind == "chat" else client.completions
        attempt = 0
        while True:
            try:
                with self._sem:
                    self._count(call.tag, requests=1)
                    parsed = self._parse(kind, endpoint.create(**call.req))
            except Exception as exc:  # noqa: BLE001 - classified; unknown kinds are not retried
                time.sleep(self._after_failure(call, exc, attempt))
                self._wait_for_embedded(call)
                attempt += 1
                continue
            return self._finish_ok(parsed, call)

    def complete(
        self,
        prompt: str,
        *,
        stop: str | Sequence[str] | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        name: str = "llm",
        deps: Sequence[int] | None = None,
        seed: int | None = None,
        sample: int = 0,
        tag: str | None = None,
    ) -> LLMResponse:
        """Complete ``prompt`` (completions API, or one user message when ``api="chat"``).

        Parameters
        ----------
        prompt : str
            Prompt text.
        stop : str or list of str, optional
            Stop sequences.
        temperature, max_tokens : optional
            Override the client's defaults.
        name : str
            Span name in the trace (e.g. ``"generate"``, ``"lmx"``).
        deps : list of int, optional
            Span ids whose outputs this call consumes (defines the critical path).
        seed : int, optional
            Sampling seed sent to the endpoint; part of the cache key.
        sample : int
            Index of a repeated draw of the same request: different indices are cached separately.
        tag : str, optional
            Usage bucket in :attr:`usage_by_tag`; defaults to ``name``.

        Returns
        -------
        LLMResponse

        Raises
        ------
        LLMError
            When every attempt failed or the error cannot be fixed by retrying.
        """
        kind = "chat" if self.api == "chat" else "completions"
        return self._call(kind, prompt, stop, temperature, max_tokens, name, deps, seed, sample, tag)

    def chat(
        self,
        messages: Sequence[dict[str, Any]],
        *,
        stop: str | Sequence[str] | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        name: str = "llm",
        deps: Sequence[int] | None = None,
        seed: int | None = None,
        sample: int = 0,
        tag: str | None = None,
    ) -> LLMResponse:
        """Chat completion of ``messages`` (``[{"role": ..., "content": ...}, ...]``).

        Parameters and errors as for :meth:`complete`.
        """
        return self._call("chat", messages, stop, temperature, max_tokens, name, deps, seed, sample, tag)

    # -- async API --------------------------------------------------------------------------------
    async def _acall(self, kind: str, content: Any, stop: Any, temperature: float | None, max_tokens: int | None,
                     name: str, deps: Sequence[int] | None, seed: int | None, sample: int,
                     tag: str | None) -> LLMResponse:
        call, cached = self._begin(kind, content, stop, temperature, max_tokens, name, deps, seed, sample, tag)
        if cached is not None:
            return cached
        if self._resolved_url is None:
            # Starting the embedded model blocks while it loads: keep the event loop responsive.
            await asyncio.to_thread(self.resolved_base_url)
        client, sem = self._async_state()
        endpoint = client.chat.completions if kind == "chat" else client.completions
        attempt = 0
        while True:
            try:
                async with sem:
                    self._count(call.tag, requests=1)
                    parsed = self._parse(kind, await endpoint.create(**call.req))
            except Exception as exc:  # noqa: BLE001
                await asyncio.sleep(self._after_failure(call, exc, attempt))
                await asyncio.to_thread(self._wait_for_embedded, call)
                attempt += 1
                continue
            return self._finish_ok(parsed, call)

    async def acomplete(
        self,
        prompt: str,
        *,
        stop: str | Sequence[str] | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        name: str = "llm",
        deps: Sequence[int] | None = None,
        seed: int | None = None,
        sample: int = 0,
        tag: str | None = None,
    ) -> LLMResponse:
        """Async :meth:`complete`."""
        kind = "chat" if self.api == "chat" else "completions"
        return await self._acall(kind, prompt, stop, temperature, max_tokens, name, deps, seed, sample, tag)

    async def achat(
        self,
        messages: Sequence[dict[str, Any]],
        *,
        stop: str | Sequence[str] | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        name: str = "llm",
        deps: Sequence[int] | None = None,
        seed: int | None = None,
        sample: int = 0,
        tag: str | None = None,
    ) -> LLMResponse:
        """Async :meth:`chat`."""
        return await self._acall("chat", messages, stop, temperature, max_tokens, name, deps, seed, sample, tag)

    def usage_dict(self) -> dict[str, Any]:
        """``{"total": {...}, "by_tag": {tag: {...}}}`` snapshot for reports and run stores."""
        with self._lock:
            return {"total": self.usage.as_dict(), "by_tag": {k: v.as_dict() for k, v in self.usage_by_tag.items()}}
