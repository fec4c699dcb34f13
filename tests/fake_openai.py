"""A tiny OpenAI-compatible HTTP server with scripted faults, for testing clients and searches.

It speaks just enough of ``/v1/completions``, ``/v1/chat/completions`` and ``/v1/models`` for the
``openai`` package, and answers each request with the next scripted behaviour (or ``"ok"`` when the
script is empty)::

    with FakeOpenAI(reply=lambda req: '{"x": 1}') as fake:
        fake.push("429", retry_after=0.2)   # first request: rate limited
        fake.push("500")                     # second: server error
        client = LLMClient(base_url=fake.base_url, ...)
        client.complete("hi")                # third request succeeds
        assert len(fake.requests) == 3

Behaviours: ``ok``, ``slow`` (answer after ``delay`` s), ``timeout`` (sleep ``delay`` s, past the
client's timeout, then drop the connection), ``429`` (with ``Retry-After: retry_after``), ``500``,
``503``, ``400``, ``401`` (wrong key), ``404`` (unknown model), ``nonjson`` (200 with an HTML
body), ``truncated`` (200 with half a JSON body), ``empty_choices`` (200 with ``"choices": []``),
``no_content`` (chat message content null), ``null_choice`` (200 with ``"choices": [null]``),
``trickle`` (a slow stream: a valid body sent a few
bytes at a time over ``delay`` s, each piece well within a per-read timeout, so only a total
deadline stops it). ``default`` answers every unscripted request (``"401"``: an endpoint that
refuses the key). ``fail_rate`` makes every unscripted request fail with a random fault (seeded),
for search-level fault injection.
"""
from __future__ import annotations

import collections
import json
import random
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

KINDS = ("ok", "slow", "timeout", "429", "500", "503", "400", "401", "404", "nonjson", "truncated", "empty_choices",
         "no_content", "null_choice", "trickle")
# What the endpoint says for the client errors, worded like OpenAI's own.
_CLIENT_ERRORS = {
    "400": ("scripted 400", "invalid_request_error"),
    "401": ("Incorrect API key provided: sk-fake. You can find your API key at https://example.invalid/keys.",
            "invalid_api_key"),
    "404": ("The model `no-such-model` does not exist or you do not have access to it.", "model_not_found"),
}
_TRICKLE_PIECES = 40
_RANDOM_FAULTS = ("429", "500", "nonjson", "truncated", "empty_choices")


class Server(ThreadingHTTPServer):
    """http.server's threading server with a real server's accept backlog.

    Its default backlog of 5 refuses connections when many clients connect at once (a Ray actor's
    concurrent evaluations), which no production endpoint does.
    """

    request_queue_size = 256


class FakeOpenAI:
    """Threaded fake OpenAI endpoint on 127.0.0.1 (port chosen by the OS).

    Parameters
    ----------
    reply : callable, optional
        ``reply(request_json) -> str``, the text of a successful completion; default echoes a
        short fixed text.
    fail_rate : float
        Probability that an unscripted request gets a random fault (429/500/garbage).
    seed : int
        Seed of the random faults.
    default : str
        Behaviour of every unscripted request (``"401"``: an endpoint that refuses the key).
    """

    def __init__(
        self,
        reply: Callable[[dict[str, Any]], str] | None = None,
        fail_rate: float = 0.0,
        seed: int = 0,
        default: str = "ok",
        answer_model: str | None = None,
    ) -> None:
        if default not in KINDS:
            raise ValueError(f"unknown default {default!r}; expected one of {KINDS}")
        self.default = default
        self.answer_model = answer_model  # the model name answers carry (default: the one asked for)
        self.reply = reply or (lambda req: "fake completion")
        self.fail_rate = fail_rate
        self._rng = random.Random(seed)
        self._script: collections.deque[dict[str, Any]] = collections.deque()
        self._lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []  # every POST: path, body, time, behaviour
        self.inflight = 0  # requests being answered right now
        self.max_inflight = 0  # most requests answered at once (checks clients' concurrency limits)
        self._httpd = Server(("127.0.0.1", 0), _make_handler(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def push(self, kind: str, *, retry_after: float | None = None, delay: float = 1.0, times: int = 1) -> None:
        """Script the behaviour of the next ``times`` requests (after those already scripted)."""
        if kind not in KINDS:
            raise ValueError(f"unknown fault {kind!r}; expected one of {KINDS}")
        with self._lock:
            for _ in range(times):
                self._script.append({"kind": kind, "retry_after": retry_after, "delay": delay})

    def _next(self) -> dict[str, Any]:
        with self._lock:
            if self._script:
                return self._script.popleft()
            if self.fail_rate > 0 and self._rng.random() < self.fail_rate:
                return {"kind": self._rng.choice(_RANDOM_FAULTS), "retry_after": 0.01, "delay": 0.0}
            return {"kind": self.default, "retry_after": None, "delay": 0.0}

    def start(self) -> FakeOpenAI:
        """Serve in a daemon thread."""
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def count(self, path_suffix: str = "completions") -> int:
        """Number of POSTs whose path ends with ``path_suffix``."""
        return sum(1 for r in self.requests if r["path"].endswith(path_suffix))


def _tokens(text: str) -> int:
    return max(1, len(text.split()))


def _body(req: dict[str, Any], chat: bool, text: str, kind: str, model: str | None = None) -> dict[str, Any]:
    if chat:
        prompt = " ".join(str(m.get("content", "")) for m in req.get("messages", []))
        content = None if kind == "no_content" else text
        choice = {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        obj = "chat.completion"
    else:
        prompt = str(req.get("prompt", ""))
        choice = {"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}
        obj = "text_completion"
    return {
        "id": "fake-1",
        "object": obj,
        "created": int(time.time()),
        "model": model or req.get("model", "fake"),
        "choices": [] if kind == "empty_choices" else [choice],
        "usage": {
            "prompt_tokens": _tokens(prompt),
            "completion_tokens": _tokens(text),
            "total_tokens": _tokens(prompt) + _tokens(text),
        },
    }


def _make_handler(fake: FakeOpenAI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # keep test output clean
            pass

        def _send(self, status: int, body: bytes, ctype: str = "application/json", headers: dict | None = None,
                  trickle_s: float = 0.0) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            if trickle_s <= 0:
                self.wfile.write(body)
                return
            step = max(1, -(-len(body) // _TRICKLE_PIECES))
            for i in range(0, len(body), step):
                self.wfile.write(body[i : i + step])
                self.wfile.flush()
                time.sleep(trickle_s / _TRICKLE_PIECES)

        def do_GET(self) -> None:
            if self.path.rstrip("/").endswith("/models"):
                self._send(200, json.dumps({"object": "list", "data": [{"id": "fake", "object": "model"}]}).encode())
            elif self.path.endswith("/health"):
                self._send(200, b'{"status":"ok"}')
            else:
                self._send(404, b'{"error":{"message":"not found"}}')

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            try:
                req = json.loads(raw or b"{}")
            except ValueError:
                self._send(400, b'{"error":{"message":"bad json"}}')
                return
            behaviour = fake._next()
            kind = behaviour["kind"]
            with fake._lock:
                fake.requests.append({"path": self.path, "body": req, "time": time.monotonic(), "kind": kind,
                                      "auth": self.headers.get("Authorization", "")})
            chat = self.path.rstrip("/").endswith("chat/completions")
            if not (chat or self.path.rstrip("/").endswith("completions")):
                self._send(404, b'{"error":{"message":"not found"}}')
                return
            with fake._lock:
                fake.inflight += 1
                fake.max_inflight = max(fake.max_inflight, fake.inflight)
            try:
                self._respond(req, chat, behaviour)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout faults)
            finally:
                with fake._lock:
                    fake.inflight -= 1

        def _respond(self, req: dict[str, Any], chat: bool, behaviour: dict[str, Any]) -> None:
            kind = behaviour["kind"]
            if kind in ("slow", "timeout"):
                time.sleep(behaviour["delay"])
            if kind == "timeout":
                self.close_connection = True
                return
            if kind == "429":
                headers = {} if behaviour["retry_after"] is None else {"Retry-After": str(behaviour["retry_after"])}
                err = {"error": {"message": "rate limited", "type": "rate_limit", "code": 429}}
                self._send(429, json.dumps(err).encode(), headers=headers)
                return
            if kind in ("500", "503"):
                err = {"error": {"message": f"scripted {kind}", "type": "server_error", "code": int(kind)}}
                self._send(int(kind), json.dumps(err).encode())
                return
            if kind in _CLIENT_ERRORS:
                message, code = _CLIENT_ERRORS[kind]
                err = {"error": {"message": message, "type": "invalid_request_error", "code": code}}
                self._send(int(kind), json.dumps(err).encode())
                return
            if kind == "null_choice":
                self._send(200, b'{"id": "x", "object": "chat.completion", "model": "fake", "choices": [null]}')
                return
            if kind == "nonjson":
                self._send(200, b"<html><body>502 Bad Gateway</body></html>", ctype="text/html")
                return
            text = fake.reply(req)
            body = json.dumps(_body(req, chat, text, kind, fake.answer_model)).encode()
            if kind == "truncated":
                body = body[: len(body) // 2]
            self._send(200, body, trickle_s=behaviour["delay"] if kind == "trickle" else 0.0)

    return Handler
