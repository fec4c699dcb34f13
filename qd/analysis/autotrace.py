"""Automatic tracing of the LLM calls a user's own code makes, with no change to that code.

:func:`install` (called by :func:`qd.evaluation.evaluate_config` before every evaluation; it is
idempotent, and after its first call, which imports ``httpx``, free) hooks these layers once per
process:

HTTP (``httpx`` and ``httpx2``: ``Client.send`` / ``AsyncClient.send``)
    Every ``POST`` to an LLM endpoint (:data:`LLM_PATHS`: OpenAI-compatible ``chat/completions``,
    ``completions`` and ``responses``, Anthropic ``v1/messages``, Gemini ``:generateContent``,
    Ollama ``api/chat`` and ``api/generate``) is one call. This one hook sees the ``openai`` SDK
    (``OpenAI``, ``AsyncOpenAI``, the Azure clients; chat, completions and responses APIs; streamed
    or not), LiteLLM (``completion``, ``acompletion``, ``text_completion``, which send through
    httpx, or through the ``openai`` SDK, to any of these providers), the ``anthropic`` SDK and
    LangChain's clients built on these. Token counts come from the response's usage fields; a
    stream is followed to its end and its usage read from the final event when the server sends
    one (``stream_options={"include_usage": True}``), otherwise the tokens are estimated (prompt
    characters / 4, one token per streamed event) and the span carries ``tokens_estimated=True``. Each HTTP
    attempt is a call: a request the SDK retries after a 429 appears as a failed span and a
    successful one. A call the client gives up on after sending it (a cancelled task, a read
    timeout, no answer yet when its evaluation ends) is a failed span marked ``cancelled=True``
    whose tokens (what the server computed is unknown) are estimated and marked so. The prompt
    (the request's system text, messages, prompt or contents) and the answer (the response's, or a
    stream's deltas joined) become the span's ``input`` and ``output`` when the tracer keeps text
    (``Tracer.text_chars``).
requests (``requests.Session.send``)
    The same LLM endpoints called with ``requests`` (``requests.post(url + "/chat/completions", ...)``),
    streamed (``stream=True``, read through ``iter_lines``/``iter_content``) or not.
DSPy (``dspy.clients.execution.execute`` / ``aexecute``, used by every ``dspy.LM`` call)
    DSPy 3.4's native engine speaks HTTP over its own sockets, so DSPy calls are recorded at
    DSPy's layer, with the usage DSPy reads and its cache flag (a DSPy cache hit is a span with
    ``cached=True`` and the original tokens when DSPy kept them).
Threads
    ``ThreadPoolExecutor.submit`` (so ``loop.run_in_executor`` too), ``threading.Thread.start``
    and an event loop's ``create_task`` run the new work in a copy of the starting context, with
    a data-flow *flow* of its own (:mod:`qd.analysis.tracer`), when a tracer is active there, so
    calls from an evaluation's own threads and tasks belong to that evaluation.
    ``Future.result``, ``Thread.join`` and ``ThreadPoolExecutor.shutdown`` mark the work as
    waited for (a join, for inferred deps).

A call through several layers (DSPy -> LiteLLM -> openai -> httpx) is recorded once, by the
outermost layer: a context variable marks the inner layers' work as already traced. Calls made
through :class:`qd.llm.LLMClient` are recorded by the client itself (with cache hits), and its
HTTP transport is skipped here.

Attribution: a call belongs to the tracer of its context, else to the only tracer open in the
process (a thread the evaluation did not start, in serial or Ray task mode), else to nobody: it
is counted by :func:`qd.analysis.tracer.take_untraced` and reported as untraced.

OpenTelemetry is not used: nothing here touches a tracer provider, so a user's own exporter
(Phoenix, Langfuse) keeps working unchanged.
"""
from __future__ import annotations

import asyncio.base_events
import concurrent.futures
import contextlib
import contextvars
import importlib
import importlib.abc
import importlib.util
import json
import logging
import os
import re
import sys
import threading
import urllib.parse
import zlib
from collections.abc import Callable
from typing import Any

from qd.analysis.tracer import (
    PendingCall,
    as_text,
    begin_llm_call,
    finish_llm_call,
    flow_joined,
    fork_context,
    run_forked,
)

__all__ = ["install", "installed", "suppressed", "LLM_PATHS"]

log = logging.getLogger(__name__)

# Endpoints whose POSTs are LLM calls: OpenAI-compatible (chat, completions, responses), Anthropic
# messages, Gemini generateContent, Ollama's native chat/generate.
LLM_PATHS: tuple[str, ...] = ("chat/completions", "completions", "responses", "v1/messages", ":generateContent",
                              ":streamGenerateContent", "api/chat", "api/generate")
# Suffixes common enough elsewhere that the body must also name a model.
_NEEDS_MODEL: tuple[str, ...] = ("responses", "api/chat", "api/generate")

# True while a call is being recorded by an outer layer: inner layers pass through.
_IN_CALL: contextvars.ContextVar[bool] = contextvars.ContextVar("qd_in_llm_call", default=False)

_INSTALLED: set[str] = set()
_INSTALL_LOCK = threading.Lock()

_MODEL = re.compile(rb'"model"\s*:\s*"([^"]*)"')
_USAGE_KEYS = {
    b"prompt_tokens": "in", b"input_tokens": "in", b"promptTokenCount": "in", b"prompt_eval_count": "in",
    b"completion_tokens": "out", b"output_tokens": "out", b"candidatesTokenCount": "out", b"eval_count": "out",
}
_USAGE = re.compile(rb'"(' + b"|".join(_USAGE_KEYS) + rb')"\s*:\s*(\d+)')
_GEMINI_MODEL = re.compile(r"/models/([^/:]+):")
_TAIL = 64  # bytes kept between stream chunks so a usage field split across two reads is still found


def suppressed() -> contextvars.Token:
    """Mark the current context as inside a recorded call (inner layers record nothing).

    Returns the token for ``_IN_CALL.reset``. For code that records its own span around a request
    (``scripts/bench_tracing.py`` uses it for untraced calls).
    """
    return _IN_CALL.set(True)


def _httpx_body(request: Any) -> bytes:
    try:
        return request.content
    except Exception:  # a streamed upload: nothing to read the model from
        return b""


def _is_llm_post(method: str, path: str, body: Callable[[], bytes]) -> bool:
    """Whether a request is an LLM call (``body`` is read only when the path needs it)."""
    if method != "POST":
        return False
    path = path.rstrip("/")
    if not path.endswith(LLM_PATHS):
        return False
    if path.endswith(_NEEDS_MODEL):
        return _MODEL.search(body()) is not None
    return True


# Exceptions that mean the client stopped waiting for a request it had sent: the server may have
# computed the call all the same (a cancelled task, a read timeout).
_GAVE_UP = ("CancelledError", "KeyboardInterrupt", "ReadTimeout", "ReadTimeoutError")


def _gave_up(exc: BaseException) -> bool:
    return type(exc).__name__ in _GAVE_UP


def _estimate_prompt_tokens(body: bytes) -> int:
    """Prompt tokens of a request body, estimated as characters / 4 of its text fields."""
    try:
        req = json.loads(body)
    except ValueError:
        return max(1, len(body) // 4)
    chars = 0

    def walk(value: Any) -> None:
        nonlocal chars
        if isinstance(value, str):
            chars += len(value)
        elif isinstance(value, dict):
            for key, sub in value.items():
                if key in ("content", "text", "prompt", "input", "messages", "system", "instructions"):
                    walk(sub)
                elif isinstance(sub, (list, dict)):
                    walk(sub)
        elif isinstance(value, list):
            for sub in value:
                walk(sub)

    walk({k: req.get(k) for k in ("messages", "prompt", "input", "system", "instructions") if k in req})
    return max(1, chars // 4)


def _request_text(body: bytes) -> str | None:
    """The prompt of an LLM request body: its system text, then its messages, prompt, input or contents."""
    try:
        req = json.loads(body)
    except ValueError:
        return None
    if not isinstance(req, dict):
        return None
    parts = []
    for key in ("system", "instructions", "systemInstruction", "messages", "prompt", "input", "contents"):
        value = req.get(key)
        if key in ("contents", "systemInstruction"):  # Gemini: {"role", "parts": [{"text"}]}
            items = value if isinstance(value, list) else [value] if isinstance(value, dict) else []
            value = [{"role": c.get("role", ""), "content": c.get("parts", [])} for c in items if isinstance(c, dict)]
        if value:
            parts.append(as_text(value))
    return "\n".join(parts) if parts else None


def _answer_pieces(obj: Any) -> list[str]:
    """Answer text in one response body or one streamed event of the APIs :data:`LLM_PATHS` names."""
    if not isinstance(obj, dict):
        return []
    out: list[str] = []
    for choice in obj.get("choices") or ():  # OpenAI chat/completions, and their stream deltas (first choice)
        if not isinstance(choice, dict) or choice.get("index", 0) != 0:
            continue
        message = choice.get("message") or choice.get("delta") or {}
        text = message.get("content") if isinstance(message, dict) else None
        text = text if isinstance(text, str) else choice.get("text")
        if isinstance(text, str):
            out.append(text)
    output = obj.get("output")  # responses API
    for item in output if isinstance(output, list) else ():
        parts = item.get("content") if isinstance(item, dict) else None
        out += [p["text"] for p in parts or () if isinstance(p, dict) and isinstance(p.get("text"), str)]
    if obj.get("type") == "response.output_text.delta" and isinstance(obj.get("delta"), str):
        out.append(obj["delta"])
    content = obj.get("content")  # Anthropic messages
    if isinstance(content, list):
        out += [p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
    delta = obj.get("delta")  # Anthropic stream: content_block_delta
    if isinstance(delta, dict) and isinstance(delta.get("text"), str):
        out.append(delta["text"])
    for cand in obj.get("candidates") or ():  # Gemini
        parts = (cand.get("content") or {}).get("parts") if isinstance(cand, dict) else None
        out += [p["text"] for p in parts or () if isinstance(p, dict) and isinstance(p.get("text"), str)]
    message = obj.get("message")  # Ollama chat
    if isinstance(message, dict) and isinstance(message.get("content"), str):
        out.append(message["content"])
    if isinstance(obj.get("response"), str):  # Ollama generate
        out.append(obj["response"])
    return out


def _event_pieces(line: bytes) -> list[str]:
    """Answer text in one line of a stream: a server-sent ``data:`` event or a JSON line (Ollama)."""
    line = line.strip()
    if line.startswith(b"data:"):
        line = line[5:].strip()
    if not line.startswith(b"{"):
        return []
    try:
        return _answer_pieces(json.loads(line))
    except ValueError:
        return []


class _Observer:
    """What one HTTP call has shown so far, and how to finish its span."""

    __slots__ = ("call", "name", "model", "body", "tokens", "events", "done", "status", "tail", "decoder",
                 "keep_text", "answer", "line", "content")

    def __init__(self, call: PendingCall, path: str, body: bytes) -> None:
        self.call = call
        path = path.rstrip("/")
        self.name = next((p.strip(":").replace("/", ".") for p in LLM_PATHS if path.endswith(p)), "llm")
        self.body = body
        found = _MODEL.search(self.body)
        self.model = found.group(1).decode("utf-8", "replace") if found else ""
        if not self.model and ":" in path:  # Gemini names the model in the URL
            url_model = _GEMINI_MODEL.search(path)
            self.model = url_model.group(1) if url_model else ""
        self.tokens: dict[str, int] = {}
        self.events = 0
        self.done = False
        self.status = 0
        self.tail = b""  # the end of the last streamed chunk: a usage field may straddle two chunks
        self.decoder: Any = None  # a stream's raw bytes are still compressed (Content-Encoding gzip/deflate)
        self.keep_text = call.tracer is not None and call.tracer.text_chars > 0
        self.answer: list[str] = []  # a stream's answer text so far
        self.line = b""  # a stream's unfinished last line
        self.content: bytes | None = None  # a whole (non-streamed) response body
        call.flush = self.finish

    def feed(self, chunk: bytes) -> None:
        """Read one chunk of a streamed (server-sent events) response."""
        if self.decoder is not None:
            try:
                chunk = self.decoder.decompress(chunk)
            except zlib.error:  # not what the header said: read nothing more from it
                self.decoder, chunk = None, b""
        self.events += chunk.count(b"data:") - chunk.count(b"[DONE]")
        self.scan(self.tail + chunk)
        self.tail = chunk[-_TAIL:]
        if self.keep_text:
            lines = (self.line + chunk).split(b"\n")
            self.line = lines.pop()
            for line in lines:
                self.answer += _event_pieces(line)

    def texts(self) -> tuple[str | None, str | None]:
        """The call's prompt and answer text (``None`` where not seen), when the tracer keeps text."""
        if not self.keep_text:
            return None, None
        if self.content is not None:
            try:
                answer = "".join(_answer_pieces(json.loads(self.content)))
            except ValueError:
                answer = ""
        else:
            answer = "".join(self.answer + _event_pieces(self.line))
        return _request_text(self.body), answer or None

    def scan(self, data: bytes) -> None:
        if b"_tokens" in data or b"TokenCount" in data or b"eval_count" in data:
            for key, value in _USAGE.findall(data):
                self.tokens[_USAGE_KEYS[key]] = int(value)
        if not self.model:
            found = _MODEL.search(data)
            if found:
                self.model = found.group(1).decode("utf-8", "replace")

    def finish(self, error: str = "", cancelled: bool = False) -> None:
        """Record the call: ``error`` when it failed, ``cancelled`` when the client gave up on it after sending it."""
        # A stream's end and its close may both get here (even from two threads): the first wins,
        # and finish_llm_call records a call once whatever happens.
        if self.done:
            return
        self.done = True
        ok = not error and 0 < self.status < 400
        if not error and not ok:
            cancelled = cancelled or not self.status
            error = f"HTTP {self.status}" if self.status else "no response when its evaluation ended"
        # Tokens the server reported, else estimated, for every call it computed or may have been computing:
        # an answered call, a stream cut after its status line, a call the client gave up on.
        computing = ok or cancelled or 0 < self.status < 400
        estimated = False
        t_in, t_out = self.tokens.get("in"), self.tokens.get("out")
        if computing and (t_in is None or t_out is None):
            estimated = True
            t_in = _estimate_prompt_tokens(self.body) if t_in is None else t_in
            t_out = max(0, self.events) if t_out is None else t_out
        prompt, answer = self.texts()
        finish_llm_call(self.call, name=self.name, model=self.model, tokens_in=t_in or 0, tokens_out=t_out or 0,
                        ok=ok, error=error, estimated=estimated, via="http", cancelled=cancelled,
                        input=prompt, output=answer)

    def fail(self, exc: BaseException) -> None:
        """Record the call as failed with ``exc`` (cancelled when the client gave up waiting)."""
        self.finish(f"{type(exc).__name__}: {exc}", cancelled=_gave_up(exc))


def _fed(observer: _Observer, chunks: Any) -> Any:
    """``chunks`` of a streamed response, each read by ``observer`` on the way; the call ends with them."""
    try:
        for chunk in chunks:
            observer.feed(chunk)
            yield chunk
    except BaseException as exc:
        observer.fail(exc)
        raise
    observer.finish()


@contextlib.contextmanager
def _recording(observer: _Observer) -> Any:
    """Around sending an observed request: inner layers record nothing, and a failure ends the call."""
    token = _IN_CALL.set(True)
    try:
        yield
    except BaseException as exc:
        observer.fail(exc)
        raise
    finally:
        _IN_CALL.reset(token)


def _stream_classes(mod: Any) -> tuple[type, type]:
    """Byte-stream wrappers for one HTTP module (httpx or httpx2) that feed an observer."""

    class TracedStream(mod.SyncByteStream):
        def __init__(self, inner: Any, observer: _Observer) -> None:
            self._inner, self._observer = inner, observer

        def __iter__(self) -> Any:
            return _fed(self._observer, self._inner)

        def close(self) -> None:
            try:
                self._inner.close()
            finally:
                self._observer.finish()

    class AsyncTracedStream(mod.AsyncByteStream):
        def __init__(self, inner: Any, observer: _Observer) -> None:
            self._inner, self._observer = inner, observer

        async def __aiter__(self) -> Any:
            observer = self._observer
            try:
                async for chunk in self._inner:
                    observer.feed(chunk)
                    yield chunk
            except BaseException as exc:
                observer.fail(exc)
                raise
            observer.finish()

        async def aclose(self) -> None:
            try:
                await self._inner.aclose()
            finally:
                self._observer.finish()

    return TracedStream, AsyncTracedStream


def _observe(observer: _Observer, response: Any, wrapper: type) -> None:
    observer.status = response.status_code
    content = getattr(response, "_content", None)  # set once the body was read (non-streamed requests)
    if content is not None:
        observer.scan(content)
        observer.content = content
        observer.finish()
    elif observer.status >= 400:  # an error body left unread: the call failed, whatever it says
        observer.finish()
    else:  # streamed: the span ends with the stream
        if response.headers.get("content-encoding", "").lower().strip() in ("gzip", "x-gzip", "deflate"):
            observer.decoder = zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib header, detected
        response.stream = wrapper(response.stream, observer)


def _self_traced(client: Any) -> bool:
    return bool(getattr(getattr(client, "_transport", None), "qd_self_traced", False))


def _patch_http(mod: Any) -> None:
    sync_wrapper, async_wrapper = _stream_classes(mod)
    send = mod.Client.send
    asend = mod.AsyncClient.send

    def observed(client: Any, request: Any) -> _Observer | None:
        if _IN_CALL.get() or _self_traced(client):
            return None
        if not _is_llm_post(request.method, request.url.path, lambda: _httpx_body(request)):
            return None
        return _Observer(begin_llm_call(), request.url.path, _httpx_body(request))

    def traced_send(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        observer = observed(self, request)
        if observer is None:
            return send(self, request, *args, **kwargs)
        with _recording(observer):
            response = send(self, request, *args, **kwargs)
        _observe(observer, response, sync_wrapper)
        return response

    async def traced_asend(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        observer = observed(self, request)
        if observer is None:
            return await asend(self, request, *args, **kwargs)
        with _recording(observer):
            response = await asend(self, request, *args, **kwargs)
        _observe(observer, response, async_wrapper)
        return response

    traced_send.__qd_original__ = send  # type: ignore[attr-defined]
    traced_asend.__qd_original__ = asend  # type: ignore[attr-defined]
    mod.Client.send = traced_send
    mod.AsyncClient.send = traced_asend


# -- requests ------------------------------------------------------------------------------------
def _requests_body(body: Any) -> bytes:
    if isinstance(body, bytes):
        return body
    return body.encode("utf-8", "replace") if isinstance(body, str) else b""  # a generator or file: unread


def _observe_requests(observer: _Observer, response: Any) -> None:
    observer.status = response.status_code
    if response._content_consumed and isinstance(response._content, bytes):  # read by Session.send (no stream)
        observer.scan(response._content)
        observer.content = response._content
        observer.finish()
        return
    if observer.status >= 400:
        observer.finish()
        return
    raw = response.raw  # streamed: iter_content/iter_lines read raw.stream, decoded; the span ends with it
    inner, close = raw.stream, response.close

    def stream(*args: Any, **kwargs: Any) -> Any:
        return _fed(observer, inner(*args, **kwargs))

    def closing() -> None:
        try:
            close()
        finally:
            observer.finish()

    raw.stream = stream
    response.close = closing


def _patch_requests(sessions: Any) -> None:
    send = sessions.Session.send

    def traced_send(self: Any, request: Any, **kwargs: Any) -> Any:
        if _IN_CALL.get():
            return send(self, request, **kwargs)
        path = urllib.parse.urlsplit(request.url or "").path
        if not _is_llm_post(request.method or "", path, lambda: _requests_body(request.body)):
            return send(self, request, **kwargs)
        observer = _Observer(begin_llm_call(), path, _requests_body(request.body))
        with _recording(observer):
            response = send(self, request, **kwargs)
        _observe_requests(observer, response)
        return response

    traced_send.__qd_original__ = send  # type: ignore[attr-defined]
    sessions.Session.send = traced_send


# -- DSPy ----------------------------------------------------------------------------------------
def _usage_tokens(usage: Any) -> tuple[int | None, int | None]:
    if not isinstance(usage, dict) or not usage:
        return None, None
    t_in = usage.get("prompt_tokens", usage.get("input_tokens"))
    t_out = usage.get("completion_tokens", usage.get("output_tokens"))
    return (None if t_in is None else int(t_in)), (None if t_out is None else int(t_out))


_DSPY_USAGE_FIELDS = ("prompt_tokens", "completion_tokens", "input_tokens", "output_tokens")


def _dspy_tokens(result: Any) -> tuple[int | None, int | None]:
    """A DSPy result's tokens: its ``usage``, else (a cache hit empties it) its responses' own."""
    t_in, t_out = _usage_tokens(getattr(result, "usage", None))
    if t_in is not None or t_out is not None:
        return t_in, t_out
    kept = [getattr(r, "usage", None) for r in getattr(result, "responses", None) or ()]
    pairs = [_usage_tokens(u if isinstance(u, dict) else
                           {k: v for k in _DSPY_USAGE_FIELDS if (v := getattr(u, k, None)) is not None})
             for u in kept if u is not None]
    pairs = [(a, b) for a, b in pairs if a is not None or b is not None]
    if not pairs:
        return None, None
    return sum(a or 0 for a, _ in pairs), sum(b or 0 for _, b in pairs)


def _dspy_texts(prepared: Any, result: Any) -> tuple[Any, Any]:
    """The prompt (messages or prompt) of a DSPy call and its answers (its outputs' text)."""
    prompt = getattr(prepared, "messages", None) or getattr(prepared, "prompt", None)
    outputs = getattr(result, "outputs", None) or ()
    texts = [o if isinstance(o, str) else o.get("text") for o in outputs if isinstance(o, (str, dict))]
    texts = [t for t in texts if isinstance(t, str)]
    return prompt, "\n".join(texts) if texts else None


def _finish_dspy(call: PendingCall, lm: Any, prepared: Any, result: Any, exc: BaseException | None = None) -> None:
    model = str(getattr(result, "response_model", None) or getattr(lm, "model", "") or "")
    t_in, t_out = _dspy_tokens(result)
    cached = bool(getattr(result, "cache_hit", False))
    error = "" if exc is None else f"{type(exc).__name__}: {exc}"
    prompt, answer = _dspy_texts(prepared, result)
    finish_llm_call(call, name="dspy", model=model, tokens_in=t_in or 0, tokens_out=t_out or 0, cached=cached,
                    ok=not error, error=error, estimated=not error and not cached and (t_in is None or t_out is None),
                    via="dspy", cancelled=exc is not None and _gave_up(exc), input=prompt, output=answer)


def _patch_dspy(execution: Any) -> None:
    execute, aexecute = execution.execute, execution.aexecute

    def traced_execute(lm: Any, call_: Any) -> Any:
        if _IN_CALL.get():
            return execute(lm, call_)
        call = begin_llm_call()
        token = _IN_CALL.set(True)
        try:
            result = execute(lm, call_)
        except BaseException as exc:
            _finish_dspy(call, lm, call_, None, exc)
            raise
        finally:
            _IN_CALL.reset(token)
        _finish_dspy(call, lm, call_, result)
        return result

    async def traced_aexecute(lm: Any, call_: Any) -> Any:
        if _IN_CALL.get():
            return await aexecute(lm, call_)
        call = begin_llm_call()
        token = _IN_CALL.set(True)
        try:
            result = await aexecute(lm, call_)
        except BaseException as exc:
            _finish_dspy(call, lm, call_, None, exc)
            raise
        finally:
            _IN_CALL.reset(token)
        _finish_dspy(call, lm, call_, result)
        return result

    traced_execute.__qd_original__ = execute  # type: ignore[attr-defined]
    traced_aexecute.__qd_original__ = aexecute  # type: ignore[attr-defined]
    execution.execute = traced_execute
    execution.aexecute = traced_aexecute


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Patch a module right after it is first imported (DSPy imported inside an evaluation)."""

    def __init__(self, targets: dict[str, Callable[[Any], None]]) -> None:
        self.targets = targets

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        patch = self.targets.get(fullname)
        if patch is None:
            return None
        spec = self._spec(fullname, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return None
        loader = spec.loader
        exec_module = loader.exec_module

        def exec_and_patch(module: Any) -> None:
            exec_module(module)
            _apply(fullname, patch, module)

        loader.exec_module = exec_and_patch  # type: ignore[method-assign]
        return spec

    def _spec(self, fullname: str, path: Any) -> Any:
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path)
            if spec is not None:
                return spec
        return None


def _apply(name: str, patch: Callable[[Any], None], module: Any) -> None:
    with _INSTALL_LOCK:
        _hook(name, patch, module)


def _hook(name: str, patch: Callable[[Any], None], module: Any) -> None:
    """Apply ``patch`` to ``module`` once (the caller holds ``_INSTALL_LOCK``)."""
    if name in _INSTALLED:
        return
    _INSTALLED.add(name)
    try:
        patch(module)
    except Exception as exc:  # an unexpected version must never break the user's import
        log.warning("qd could not hook %s (%s: %s); its LLM calls are not traced", name, type(exc).__name__, exc)


# -- threads -------------------------------------------------------------------------------------
def _patch_threads() -> None:
    submit = concurrent.futures.ThreadPoolExecutor.submit
    shutdown = concurrent.futures.ThreadPoolExecutor.shutdown
    result = concurrent.futures.Future.result
    start = threading.Thread.start
    join = threading.Thread.join
    create_task = asyncio.base_events.BaseEventLoop.create_task

    def traced_submit(self: Any, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        forked = fork_context()
        if forked is None:
            return submit(self, fn, *args, **kwargs)
        ctx, flow = forked
        future = submit(self, run_forked, ctx, flow, fn, *args, **kwargs)
        future._qd_flow = flow
        flows = self.__dict__.setdefault("_qd_flows", [])
        flows[:] = [f for f in flows if not f.joined] + [flow]
        return future

    def traced_result(self: Any, timeout: float | None = None) -> Any:
        try:
            return result(self, timeout)
        finally:
            flow = self.__dict__.get("_qd_flow")
            if flow is not None and self.done():
                flow_joined(flow)

    def traced_shutdown(self: Any, wait: bool = True, **kwargs: Any) -> None:
        shutdown(self, wait, **kwargs)
        if wait:
            for flow in self.__dict__.pop("_qd_flows", ()):
                flow_joined(flow)

    def traced_start(self: threading.Thread) -> None:
        forked = fork_context()
        if forked is not None:
            ctx, self._qd_flow = forked
            run = self.run
            self.run = lambda: ctx.run(run)  # type: ignore[method-assign]
        start(self)

    def traced_join(self: threading.Thread, timeout: float | None = None) -> None:
        join(self, timeout)
        flow = self.__dict__.get("_qd_flow")
        if flow is not None and not self.is_alive():
            flow_joined(flow)

    def traced_create_task(self: Any, coro: Any, *args: Any, **kwargs: Any) -> Any:
        forked = fork_context() if kwargs.get("context") is None else None
        if forked is None:
            return create_task(self, coro, *args, **kwargs)
        ctx, flow = forked
        kwargs["context"] = ctx
        task = create_task(self, coro, *args, **kwargs)
        task.add_done_callback(lambda _: flow_joined(flow))
        return task

    patches = ((concurrent.futures.ThreadPoolExecutor, "submit", traced_submit, submit),
               (concurrent.futures.ThreadPoolExecutor, "shutdown", traced_shutdown, shutdown),
               (concurrent.futures.Future, "result", traced_result, result),
               (threading.Thread, "start", traced_start, start),
               (threading.Thread, "join", traced_join, join),
               (asyncio.base_events.BaseEventLoop, "create_task", traced_create_task, create_task))
    for cls, name, fn, orig in patches:
        fn.__qd_original__ = orig  # type: ignore[attr-defined]
        setattr(cls, name, fn)


# Patched now if imported, else right after their import (httpx is imported by install itself; the
# others are heavy imports a domain that never uses them should not pay).
_DEFERRED = {"httpx": _patch_http, "httpx2": _patch_http, "requests.sessions": _patch_requests,
             "dspy.clients.execution": _patch_dspy}


def install() -> None:
    """Hook thread start-up, and the HTTP clients and DSPy now or when they are imported; idempotent.

    ``QD_AUTOTRACE=0`` in the environment turns it off (only ``qd.LLMClient`` calls are traced then).
    """
    if "done" in _INSTALLED:
        return
    with _INSTALL_LOCK:
        if "done" in _INSTALLED:
            return
        # httpx (the openai SDK's transport) is imported here, once, before any evaluation runs, with
        # tracing on or off: concurrent evaluations in one process (a Ray actor) importing it from
        # several threads at once could see it partially initialized ("no attribute 'Response'").
        with contextlib.suppress(ImportError):
            importlib.import_module("httpx")
        if os.environ.get("QD_AUTOTRACE", "1").strip() == "0":
            _INSTALLED.add("done")
            return
        _patch_threads()
        pending = {}
        for name, patch in _DEFERRED.items():
            module = sys.modules.get(name)
            if module is None:
                pending[name] = patch
                continue
            _hook(name, patch, module)
        if pending:
            sys.meta_path.insert(0, _PatchOnImport(pending))
        _INSTALLED.add("done")


def installed() -> bool:
    """True once :func:`install` has run in this process."""
    return "done" in _INSTALLED
