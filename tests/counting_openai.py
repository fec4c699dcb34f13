"""An OpenAI-compatible HTTP server that counts the calls and tokens it served.

Speaks ``/v1/chat/completions``, ``/v1/completions`` and ``/v1/responses``, plain and streamed
(Server-Sent Events; the final usage event only when the request asks for it with
``stream_options={"include_usage": true}``, as OpenAI does; the responses API always reports it).
``served`` counts requests and the tokens each response reported (or would have reported, for a
stream without usage), and ``log`` keeps each request's prompt text and reply, so tests compare a
trace with what the server did. A request for the model
``error-NNN`` is answered with HTTP status NNN and not counted.

The default reply answers DSPy's chat format: every output field the prompt asks for
(``[[ ## name ## ]]``) followed by the completion marker, so DSPy programs parse it.
"""
from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any

from fake_openai import Server

_FIELD = re.compile(r"\[\[ ## (\w+) ## \]\]")


def dspy_reply(req: dict[str, Any]) -> str:
    """Text naming every DSPy output field the last user message asks for (else a short text)."""
    messages = req.get("messages") or [{"content": req.get("prompt") or req.get("input") or ""}]
    last = str(messages[-1].get("content", "")) if isinstance(messages[-1], dict) else ""
    fields = [f for f in dict.fromkeys(_FIELD.findall(last.split("Respond with", 1)[-1])) if f != "completed"]
    if not fields:
        return "fine thanks"
    return "\n\n".join(f"[[ ## {f} ## ]]\nvalue of {f}" for f in fields) + "\n\n[[ ## completed ## ]]"


def count_tokens(text: str) -> int:
    """The server's tokenizer: whitespace-separated words (at least one)."""
    return max(1, len(text.split()))


def _prompt_text(req: dict[str, Any]) -> str:
    if "messages" in req:
        return " ".join(str(m.get("content", "")) for m in req["messages"])
    if "input" in req:
        value = req["input"]
        return value if isinstance(value, str) else json.dumps(value)
    return str(req.get("prompt", ""))


class CountingOpenAI:
    """Threaded server on 127.0.0.1 (OS-chosen port) that counts what it served.

    Parameters
    ----------
    reply : callable, optional
        ``reply(request_json) -> str``; defaults to :func:`dspy_reply`.
    delay_s : float
        Time to wait before answering each request (makes concurrency observable).
    """

    def __init__(self, reply: Callable[[dict[str, Any]], str] | None = None, delay_s: float = 0.0) -> None:
        self.reply = reply or dspy_reply
        self.delay_s = delay_s
        self._lock = threading.Lock()
        self.calls = 0
        self.tokens_in = 0
        self.tokens_out = 0
        self.log: list[dict[str, Any]] = []
        self._httpd = Server(("127.0.0.1", 0), _handler(self))
        self._httpd.daemon_threads = True

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def served(self) -> dict[str, int]:
        """Requests answered and the tokens they reported: ``{"calls", "tokens_in", "tokens_out"}``."""
        with self._lock:
            return {"calls": self.calls, "tokens_in": self.tokens_in, "tokens_out": self.tokens_out}

    def reset(self) -> None:
        """Forget what was counted."""
        with self._lock:
            self.calls = self.tokens_in = self.tokens_out = 0
            self.log.clear()

    def _count(self, path: str, t_in: int, t_out: int, stream: bool, prompt: str = "", reply: str = "") -> None:
        with self._lock:
            self.calls += 1
            self.tokens_in += t_in
            self.tokens_out += t_out
            self.log.append({"path": path, "tokens_in": t_in, "tokens_out": t_out, "stream": stream,
                             "time": time.monotonic(), "prompt": prompt, "reply": reply})

    def __enter__(self) -> CountingOpenAI:
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def _handler(server: CountingOpenAI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall

        def log_message(self, *args: Any) -> None:
            pass

        def handle(self) -> None:
            try:
                super().handle()
            except (ConnectionResetError, BrokenPipeError):  # the client closed a kept-alive connection
                pass

        def _json(self, status: int, obj: Any) -> None:
            body = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _sse(self, events: list[Any]) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for event in events:
                data = event if isinstance(event, str) else json.dumps(event)
                piece = f"data: {data}\n\n".encode()
                self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")

        def do_GET(self) -> None:
            self._json(200, {"object": "list", "data": [{"id": "counting", "object": "model"}]})

        def do_POST(self) -> None:
            req = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            path = self.path.rstrip("/")
            if str(req.get("model", "")).startswith("error-"):  # model "error-503": answer that status, uncounted
                self._json(int(req["model"][6:]), {"error": {"message": "scripted", "type": "server_error"}})
                return
            if server.delay_s:
                time.sleep(server.delay_s)
            text = server.reply(req)
            prompt = _prompt_text(req)
            t_in, t_out = count_tokens(prompt), count_tokens(text)
            model = req.get("model", "counting")
            stream = bool(req.get("stream"))
            server._count(path, t_in, t_out, stream, prompt, text)
            usage = {"prompt_tokens": t_in, "completion_tokens": t_out, "total_tokens": t_in + t_out}
            words = text.split(" ")
            pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]
            if path.endswith("chat/completions") or path.endswith("completions"):
                chat = path.endswith("chat/completions")
                obj = "chat.completion" if chat else "text_completion"
                if not stream:
                    choice = ({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                              if chat else {"index": 0, "text": text, "finish_reason": "stop", "logprobs": None})
                    self._json(200, {"id": "c-1", "object": obj, "created": int(time.time()), "model": model,
                                     "choices": [choice], "usage": usage})
                    return
                events: list[Any] = []
                for i, piece in enumerate(pieces):
                    last = i == len(pieces) - 1
                    choice = ({"index": 0, "delta": {"content": piece}, "finish_reason": "stop" if last else None}
                              if chat else {"index": 0, "text": piece, "finish_reason": "stop" if last else None})
                    events.append({"id": "c-1", "object": obj + ".chunk", "created": int(time.time()),
                                   "model": model, "choices": [choice]})
                if (req.get("stream_options") or {}).get("include_usage"):
                    events.append({"id": "c-1", "object": obj + ".chunk", "created": int(time.time()),
                                   "model": model, "choices": [], "usage": usage})
                self._sse(events + ["[DONE]"])
                return
            if path.endswith("responses"):
                r_usage = {"input_tokens": t_in, "output_tokens": t_out, "total_tokens": t_in + t_out}
                response = {"id": "r-1", "object": "response", "created_at": int(time.time()), "model": model,
                            "status": "completed", "output": [{
                                "type": "message", "id": "m-1", "role": "assistant", "status": "completed",
                                "content": [{"type": "output_text", "text": text, "annotations": []}]}],
                            "usage": r_usage, "parallel_tool_calls": True, "tool_choice": "auto", "tools": []}
                if not stream:
                    self._json(200, response)
                    return
                events = [{"type": "response.created", "sequence_number": 0,
                           "response": {**response, "status": "in_progress", "output": [], "usage": None}}]
                for i, piece in enumerate(pieces):
                    events.append({"type": "response.output_text.delta", "sequence_number": i + 1, "item_id": "m-1",
                                   "output_index": 0, "content_index": 0, "delta": piece, "logprobs": []})
                events.append({"type": "response.completed", "sequence_number": len(pieces) + 1,
                               "response": response})
                self._sse(events)
                return
            self._json(404, {"error": {"message": f"no route {path}"}})

    return Handler
