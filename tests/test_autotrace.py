"""Automatic tracing: the user's own openai / LiteLLM / DSPy calls become spans equal to what the server served."""
from __future__ import annotations

import asyncio
import json
import os
import queue
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
from autotrace_domains import CALLS, PATTERNS, UserPipeline
from counting_openai import CountingOpenAI
from hypothesis import given, settings
from hypothesis import strategies as st

from qd.analysis import Tracer, autotrace, summarize
from qd.analysis.tracer import begin_llm_call, finish_llm_call, take_untraced
from qd.domain import Domain
from qd.evaluation import evaluate_config
from qd.llm import LLMClient
from qd.result import EvalResult
from qd.space import Categorical, Space

# Every pattern whose server reports usage (a chat stream without include_usage is estimated).
EXACT = [p for p in PATTERNS if p != "stream_no_usage"]


@pytest.fixture(scope="module")
def server():
    with CountingOpenAI() as srv:
        yield srv


def run(domain: Domain, server: CountingOpenAI, patterns: str) -> tuple[EvalResult, dict, dict]:
    server.reset()
    result = evaluate_config(domain, {"patterns": patterns})
    assert result.status == "ok", result.error
    return result, summarize(result.trace), server.served()


@pytest.mark.parametrize("pattern", EXACT)
def test_each_call_pattern_is_one_span_with_the_tokens_the_server_counted(server, pattern):
    result, summary, served = run(UserPipeline(server.base_url), server, pattern)
    assert served["calls"] == CALLS[pattern]
    assert summary["llm_calls"] == served["calls"]
    assert (summary["tokens_in"], summary["tokens_out"]) == (served["tokens_in"], served["tokens_out"])
    assert not any(s.get("tokens_estimated") for s in result.trace)
    assert "untraced_llm_calls" not in result.metrics
    via = {s["via"] for s in result.trace}
    assert via == ({"dspy"} if pattern.startswith("dspy") else {"http"})  # DSPy -> LiteLLM -> openai: one span


def test_a_stream_without_usage_is_counted_and_its_tokens_marked_estimated(server):
    result, summary, served = run(UserPipeline(server.base_url), server, "stream_no_usage")
    assert summary["llm_calls"] == served["calls"] == 1
    (span,) = result.trace
    assert span["tokens_estimated"] is True and span["ok"] is True
    assert span["tokens_out"] == served["tokens_out"]  # one streamed event per token on this server
    assert span["tokens_in"] > 0


def test_unannotated_data_flow_gives_critical_path_and_fanout(server):
    domain = UserPipeline(server.base_url)
    _, sequential, _ = run(domain, server, "sync")  # three calls, each after the previous
    assert (sequential["critical_path"], sequential["max_fanout"]) == (3, 1)
    _, pool, _ = run(domain, server, "pool")  # five in a thread pool, then one combining them
    assert (pool["critical_path"], pool["max_fanout"]) == (2, 5)
    _, gather, _ = run(domain, server, "gather")  # asyncio.gather of three, then one
    assert (gather["critical_path"], gather["max_fanout"]) == (2, 3)
    _, threads, _ = run(domain, server, "thread")  # two threading.Threads, nothing after
    assert (threads["critical_path"], threads["max_fanout"]) == (1, 2)


def test_explicit_deps_win_over_inferred_ones():
    with Tracer() as tracer:
        a = finish_llm_call(begin_llm_call(), name="a", model="m", tokens_in=1, tokens_out=1)
        b = finish_llm_call(begin_llm_call(deps=[]), name="b", model="m", tokens_in=1, tokens_out=1)
        finish_llm_call(begin_llm_call(), name="c", model="m", tokens_in=1, tokens_out=1)
    deps = {s["name"]: s["deps"] for s in tracer.spans}
    assert deps == {"a": [], "b": [], "c": [b]} and a == 0


def test_llm_client_calls_to_an_unknown_model_are_marked_unpriced(server):
    client = LLMClient(base_url=server.base_url, model="house-model", api="chat", retries=0)
    with Tracer() as tracer:
        client.complete("one")
    (span,) = tracer.spans
    assert span["unpriced"] is True and span["cost_usd"] == 0


def test_llm_client_calls_are_recorded_once_not_again_at_http(server):
    class ClientDomain(Domain):
        space = Space({"patterns": Categorical(["x"])})

        def evaluate(self, config: dict) -> EvalResult:
            client = LLMClient(base_url=server.base_url, model="gpt-4o-mini", api="chat", retries=0)
            client.complete("one")
            client.complete("two")
            return EvalResult(fitness=0.0)

    result, summary, served = run(ClientDomain(), server, "x")
    assert summary["llm_calls"] == served["calls"] == 2
    assert summary["tokens_in"] == served["tokens_in"] and summary["cost_usd"] > 0


def test_calls_are_priced_from_the_tracer_table_and_unknown_models_marked_unpriced(server):
    priced, summary, served = run(UserPipeline(server.base_url, model="gpt-4o-mini"), server, "sync")
    expected = (served["tokens_in"] * 0.15 + served["tokens_out"] * 0.60) / 1e6
    assert summary["cost_usd"] == pytest.approx(expected)
    unpriced, summary, _ = run(UserPipeline(server.base_url, model="house-model-7b"), server, "sync")
    assert summary["cost_usd"] == 0 and all(s["unpriced"] for s in unpriced.trace)
    custom = UserPipeline(server.base_url, model="house-model-7b")
    custom.llm_prices = {"house-model-7b": (1.0, 2.0)}
    _, summary, served = run(custom, server, "sync")
    assert summary["cost_usd"] == pytest.approx((served["tokens_in"] + 2 * served["tokens_out"]) / 1e6)


class BackgroundCaller(Domain):
    """Hands its call to a thread it did not start (a worker made before any evaluation)."""

    space = Space({"patterns": Categorical(["x"])})

    def __init__(self, base_url: str, inner_tracer: bool):
        self.base_url, self.inner_tracer = base_url, inner_tracer
        self.jobs: queue.Queue = queue.Queue()
        self.done: queue.Queue = queue.Queue()
        threading.Thread(target=self._worker, daemon=True).start()

    def _worker(self) -> None:
        client = openai.OpenAI(base_url=self.base_url, api_key="sk-test", max_retries=0)
        while True:
            self.jobs.get()
            client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "bg"}])
            self.done.put(1)

    def evaluate(self, config: dict) -> EvalResult:
        if self.inner_tracer:  # a second open tracer: nobody can tell whose the call is
            with Tracer():
                self.jobs.put(1)
                self.done.get(timeout=30)
        else:
            self.jobs.put(1)
            self.done.get(timeout=30)
        return EvalResult(fitness=0.0)


def test_a_call_from_a_foreign_thread_belongs_to_the_only_open_evaluation(server):
    autotrace.install()
    result, summary, served = run(BackgroundCaller(server.base_url, inner_tracer=False), server, "x")
    assert summary["llm_calls"] == served["calls"] == 1
    assert result.trace[0]["attributed"] == "process"


def test_an_unattributable_call_is_counted_as_untraced_never_dropped(server):
    autotrace.install()
    take_untraced()
    result, summary, served = run(BackgroundCaller(server.base_url, inner_tracer=True), server, "x")
    assert served["calls"] == 1 and summary["llm_calls"] == 0
    assert result.metrics["untraced_llm_calls"] == 1 and result.metrics["untraced_tokens"] > 0
    assert take_untraced()["calls"] == 0  # reported once


def test_a_stream_left_unread_is_recorded_when_the_evaluation_ends(server):
    class Abandons(Domain):
        space = Space({"patterns": Categorical(["x"])})

        def evaluate(self, config: dict) -> EvalResult:
            client = openai.OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0)
            self.stream = client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "never read"}], stream=True)
            return EvalResult(fitness=0.0)

    result, summary, served = run(Abandons(), server, "x")
    assert summary["llm_calls"] == served["calls"] == 1


def test_failed_http_calls_are_failed_spans(server):
    class Fails(Domain):
        space = Space({"patterns": Categorical(["x"])})

        def evaluate(self, config: dict) -> EvalResult:
            client = openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0)
            with pytest.raises(openai.NotFoundError):
                client.chat.completions.create(model="error-404", messages=[{"role": "user", "content": "x"}])
            return EvalResult(fitness=0.0)

    result, summary, _ = run(Fails(), server, "x")
    assert summary["llm_calls"] == summary["failed_calls"] == 1
    assert result.trace[0]["error"] == "HTTP 404"


@pytest.mark.parametrize("mode", ["task", "actor"])
def test_ray_modes_store_the_calls_and_tokens_the_server_counted(ray_session, server, mode):
    from qd.evaluators import RayEvaluator

    domain = UserPipeline(server.base_url)
    patterns = "+".join(EXACT)
    server.reset()
    with RayEvaluator(domain, mode=mode, timeout_s=240) as ev:
        for key in range(3):  # actor mode runs them at once in one process
            ev.submit(key, {"patterns": patterns})
        results = []
        deadline = time.monotonic() + 300
        while len(results) < 3 and time.monotonic() < deadline:
            results += ev.collect(timeout=1.0)
    assert len(results) == 3 and all(r.status == "ok" for _, r in results), [r.error for _, r in results]
    summaries = [summarize(r.trace) for _, r in results]
    served = server.served()
    assert sum(s["llm_calls"] for s in summaries) == served["calls"] == 3 * sum(CALLS[p] for p in EXACT)
    assert sum(s["tokens_in"] for s in summaries) == served["tokens_in"]
    assert sum(s["tokens_out"] for s in summaries) == served["tokens_out"]
    assert all(s["llm_calls"] == sum(CALLS[p] for p in EXACT) for s in summaries)
    assert not any("untraced_llm_calls" in r.metrics for _, r in results)


# -- inferred data flow on random programs of calls, threads and joins ---------------------------
def _programs():
    from hypothesis import strategies as st

    leaf = st.just("call")
    return st.recursive(st.lists(leaf, min_size=0, max_size=3),
                        lambda inner: st.lists(st.one_of(leaf, st.lists(inner, min_size=1, max_size=3)),
                                               min_size=0, max_size=4),
                        max_leaves=12)


def _expected_depth(program, start: int) -> int:
    """Critical path the rule gives: a call adds one to its flow; a fork's threads start from the
    starter's depth and the starter continues from the deepest of them."""
    cur = start
    for step in program:
        if step == "call":
            cur += 1
        else:
            cur = max([cur] + [_expected_depth(child, cur) for child in step])
    return cur


def _call(ok: bool = True) -> None:
    """One LLM call recorded through the same begin/finish pair the HTTP hooks use."""
    finish_llm_call(begin_llm_call(), name="c", model="m", tokens_in=1, tokens_out=1, ok=ok,
                    error="" if ok else "HTTP 500")


def _run_program(program) -> None:
    for step in program:
        if step == "call":
            _call()
        else:
            with ThreadPoolExecutor(len(step)) as pool:
                list(pool.map(_run_program, step))


@settings(max_examples=40, deadline=None)
@given(program=_programs())
def test_inferred_critical_path_follows_calls_threads_and_joins(program):
    from qd.analysis import trace_critical_path

    autotrace.install()
    with Tracer() as tracer:
        _run_program(program)
    spans = tracer.spans
    assert trace_critical_path(spans) == _expected_depth(program, 0)
    assert all(d < s["id"] for s in spans for d in s["deps"])  # deps are calls that finished earlier


def test_clients_imported_after_install_are_traced_too(server):
    import subprocess

    code = textwrap.dedent(f"""
        import sys
        from qd.analysis import Tracer, autotrace
        autotrace.install()
        assert "httpx2" not in sys.modules and "openai" not in sys.modules
        import openai
        with Tracer() as t:
            openai.OpenAI(base_url="{server.base_url}", api_key="k").chat.completions.create(
                model="m", messages=[{{"role": "user", "content": "late import"}}])
        print(len(t.spans), t.spans[0]["via"])
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "http"]


def test_a_dspy_cache_hit_is_a_cached_span_and_no_request(server, tmp_path):
    import dspy

    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=True)
    try:
        lm = dspy.LM("openai/gpt-4o-mini", api_base=server.base_url, api_key="k", cache=True)
        predict = dspy.Predict("question -> answer")
        server.reset()
        with Tracer() as tracer:
            autotrace.install()
            with dspy.context(lm=lm):
                predict(question="cache me")
                predict(question="cache me")
        assert server.served()["calls"] == 1
        first, second = tracer.spans
        assert (first["cached"], second["cached"]) == (False, True)
        assert second["via"] == "dspy" and second["deps"] == [first["id"]]
        # the hit carries the tokens of the answer it replays (DSPy keeps them in its responses)
        assert (second["tokens_in"], second["tokens_out"]) == (first["tokens_in"], first["tokens_out"]) != (0, 0)
    finally:
        dspy.configure_cache()


@pytest.mark.parametrize("path, body, reply, expected", [
    ("/v1/messages", {"model": "claude-x", "messages": []},
     {"type": "message", "usage": {"input_tokens": 11, "cache_read_input_tokens": 99, "output_tokens": 7}},
     ("claude-x", 11, 7)),
    ("/v1beta/models/gemini-2.0-flash:generateContent", {"contents": []},
     {"candidates": [], "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 3, "totalTokenCount": 8}},
     ("gemini-2.0-flash", 5, 3)),
    ("/api/chat", {"model": "llama3", "messages": []},
     {"model": "llama3", "message": {}, "prompt_eval_count": 9, "eval_count": 4}, ("llama3", 9, 4)),
])
def test_other_providers_wire_formats_are_read(path, body, reply, expected):
    # Providers qd cannot run here: a real httpx client over a transport answering canned bodies.
    import httpx

    autotrace.install()
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=reply))
    with httpx.Client(transport=transport, base_url="https://provider.example") as http, Tracer() as tracer:
        http.post(path, json=body)
        http.post("/api/responses", json={"model_id": "x"})  # a generic path without a model: not an LLM call
    (span,) = tracer.spans
    assert (span["model"], span["tokens_in"], span["tokens_out"]) == expected and "tokens_estimated" not in span


def test_autotrace_can_be_turned_off(server):
    import subprocess

    code = textwrap.dedent(f"""
        import openai
        from qd.analysis import Tracer, autotrace
        autotrace.install()
        with Tracer() as t:
            openai.OpenAI(base_url="{server.base_url}", api_key="k").chat.completions.create(
                model="m", messages=[{{"role": "user", "content": "off"}}])
        print(len(t.spans))
    """)
    env = {**os.environ, "QD_AUTOTRACE": "0"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0"]


class LazyWorker(Domain):
    """Starts a long-lived worker thread in its first evaluation (as libraries do lazily) and hands it calls."""

    space = Space({"patterns": Categorical(["x"])})

    def __init__(self, base_url: str):
        self.base_url = base_url
        self.jobs: queue.Queue = queue.Queue()
        self.done: queue.Queue = queue.Queue()
        self.started = False

    def _worker(self) -> None:
        client = openai.OpenAI(base_url=self.base_url, api_key="sk-test", max_retries=0)
        while True:
            self.jobs.get()
            client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "lazy"}])
            self.done.put(1)

    def evaluate(self, config: dict) -> EvalResult:
        if not self.started:
            self.started = True
            threading.Thread(target=self._worker, daemon=True).start()  # inherits this evaluation's context
        self.jobs.put(1)
        self.done.get(timeout=30)
        return EvalResult(fitness=0.0)


def test_a_thread_that_outlives_its_evaluation_does_not_feed_the_closed_trace(server):
    domain = LazyWorker(server.base_url)
    first, summary1, _ = run(domain, server, "x")
    second, summary2, served = run(domain, server, "x")
    assert summary1["llm_calls"] == 1 and "attributed" not in first.trace[0]
    assert summary2["llm_calls"] == served["calls"] == 1  # the only open evaluation owns it
    assert second.trace[0]["attributed"] == "process"


@pytest.mark.parametrize("tracing", ["1", "0"])
def test_install_imports_httpx_before_any_evaluation_thread_needs_it_with_tracing_on_or_off(tracing):
    # Evaluations running at once in one process (a Ray actor) must not be the first to import
    # httpx: several threads importing it together could see it partially initialized.
    code = ("import sys; from qd.analysis import autotrace; assert 'httpx' not in sys.modules; autotrace.install(); "
            "assert 'httpx' in sys.modules; import httpx; "
            "print(hasattr(httpx.Client.send, '__qd_original__'))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "QD_AUTOTRACE": tracing})
    assert done.stdout.strip() == ("True" if tracing == "1" else "False"), done.stderr


def test_fan_out_counts_each_join_once_and_a_chain_through_threads_stays_a_chain():
    from qd.analysis import trace_critical_path, trace_max_fanout

    autotrace.install()
    with Tracer() as fanned:  # one call, five at once after it, one that joins them
        _call()
        with ThreadPoolExecutor(5) as pool:
            [f.result() for f in [pool.submit(_call) for _ in range(5)]]
        _call()
    assert (trace_critical_path(fanned.spans), trace_max_fanout(fanned.spans)) == (3, 5)
    with Tracer() as chained, ThreadPoolExecutor(1) as pool:  # three calls one after another, each in a thread
        _call()
        for _ in range(3):
            pool.submit(_call).result()
        _call()
    assert (trace_critical_path(chained.spans), trace_max_fanout(chained.spans)) == (5, 1)


def test_calls_through_asyncio_to_thread_keep_their_chain():
    from qd.analysis import trace_critical_path, trace_max_fanout

    async def three_in_a_row() -> None:
        for _ in range(3):
            await asyncio.to_thread(_call)

    async def three_at_once() -> None:
        await asyncio.gather(*(asyncio.to_thread(_call) for _ in range(3)))
        _call()

    autotrace.install()
    with Tracer() as chained:
        asyncio.run(three_in_a_row())
    assert (trace_critical_path(chained.spans), trace_max_fanout(chained.spans)) == (3, 1)
    with Tracer() as joined:
        asyncio.run(three_at_once())
    assert trace_critical_path(joined.spans) == 2 and len(joined.spans[-1]["deps"]) == 3


def test_a_retried_call_lengthens_no_chain_and_widens_no_fan_out():
    from qd.analysis import trace_critical_path, trace_max_fanout

    with Tracer() as retried:  # a call, one that fails twice and then succeeds, a last call
        _call()
        _call(ok=False)
        _call(ok=False)
        _call()
        _call()
    spans = retried.spans
    assert [s["deps"] for s in spans] == [[], [0], [0], [0], [3]]
    assert (trace_critical_path(spans), trace_max_fanout(spans)) == (3, 1)


def test_a_compressed_stream_keeps_its_reported_tokens():
    import gzip
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    events = [{"choices": [{"index": 0, "delta": {"content": w}}]} for w in ("one", " two")]
    events.append({"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}})
    body = gzip.compress(b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n")

    class Gzipped(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Gzipped)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        autotrace.install()
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{httpd.server_address[1]}/v1", api_key="k", max_retries=0)
        with Tracer() as tracer:
            stream = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}],
                                                    stream=True, stream_options={"include_usage": True})
            text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert text == "one two"
    (span,) = tracer.spans
    assert (span["tokens_in"], span["tokens_out"]) == (11, 7) and "tokens_estimated" not in span


@pytest.mark.parametrize("pattern", PATTERNS)
def test_each_call_pattern_keeps_the_prompt_it_sent_and_the_answer_it_got(server, pattern):
    domain = UserPipeline(server.base_url)
    domain.trace_text_chars = 100_000  # nothing clipped: the whole text is compared
    result, _, _ = run(domain, server, pattern)
    served = list(server.log)
    assert sorted(s["output"] for s in result.trace) == sorted(e["reply"] for e in served)
    for entry in served:  # every word the server read is in the input of the span that got its reply
        assert any(s["output"] == entry["reply"] and set(entry["prompt"].split()) <= set(s["input"].split())
                   for s in result.trace), (entry, [s["input"] for s in result.trace])


def test_text_is_clipped_to_the_tracer_limit_and_absent_at_zero(server):
    domain = UserPipeline(server.base_url)
    domain.trace_text_chars = 12
    result, _, _ = run(domain, server, "sync")
    first = result.trace[0]
    assert first["input"] == "user: one" and first["output"] == "fine thanks"  # short texts are whole
    third = result.trace[2]  # prompt "three fine thanks": head, an ellipsis, the last third
    assert len(third["input"]) == 12 and third["input"] == "three f" + "…" + "anks"
    domain.trace_text_chars = 0
    result, _, _ = run(domain, server, "sync")
    assert not any("input" in s or "output" in s for s in result.trace)


@pytest.mark.parametrize("path, body, reply, expected", [
    ("/v1/messages", {"model": "claude-x", "system": "be brief", "messages": [{"role": "user", "content": "hi"}]},
     {"type": "message", "content": [{"type": "text", "text": "hello"}], "usage": {"input_tokens": 3,
                                                                                    "output_tokens": 1}},
     ("be brief\nuser: hi", "hello")),
    ("/v1beta/models/gemini-2.0-flash:generateContent", {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]},
     {"candidates": [{"content": {"parts": [{"text": "hel"}, {"text": "lo"}]}}],
      "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 3}}, ("user: hi", "hello")),
    ("/api/generate", {"model": "llama3", "prompt": "hi"}, {"model": "llama3", "response": "hello",
                                                            "prompt_eval_count": 9, "eval_count": 4}, ("hi", "hello")),
])
def test_other_providers_prompts_and_answers_are_kept(path, body, reply, expected):
    import httpx

    autotrace.install()
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=reply))
    with httpx.Client(transport=transport, base_url="https://provider.example") as http, Tracer() as tracer:
        http.post(path, json=body)
    (span,) = tracer.spans
    assert (span["input"], span["output"]) == expected
# -- requests, and calls the client gave up on -----------------------------------------------------
class RequestsPipeline(Domain):
    """Calls the chat API with `requests`, plain and streamed, as hand-written clients do."""

    space = Space({"patterns": Categorical(["plain", "stream"])})

    def __init__(self, base_url: str):
        self.base_url = base_url

    def evaluate(self, config: dict) -> EvalResult:
        import requests

        url = self.base_url + "/chat/completions"
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "over requests"}]}
        if config["patterns"] == "plain":
            requests.post(url, json=body, timeout=30).json()
        else:
            with requests.post(url, json={**body, "stream": True, "stream_options": {"include_usage": True}},
                               stream=True, timeout=30) as response:
                lines = [line for line in response.iter_lines() if line]
            assert lines[-1] == b"data: [DONE]"
        return EvalResult(fitness=1.0)


@pytest.mark.parametrize("pattern", ["plain", "stream"])
def test_calls_made_with_requests_are_spans_with_the_tokens_the_server_counted(server, pattern):
    result, summary, served = run(RequestsPipeline(server.base_url), server, pattern)
    assert summary["llm_calls"] == served["calls"] == 1
    assert (summary["tokens_in"], summary["tokens_out"]) == (served["tokens_in"], served["tokens_out"])
    (span,) = result.trace
    assert span["via"] == "http" and span["ok"] and "tokens_estimated" not in span
    assert "untraced_llm_calls" not in result.metrics


def test_a_call_the_client_cancelled_is_a_failed_span_marked_cancelled_with_estimated_tokens():
    with CountingOpenAI(delay_s=1.0) as slow:
        class GivesUp(Domain):
            space = Space({"patterns": Categorical(["x"])})

            def evaluate(self, config: dict) -> EvalResult:
                async def main() -> None:
                    client = openai.AsyncOpenAI(base_url=slow.base_url, api_key="k", max_retries=0)
                    with pytest.raises(TimeoutError):
                        await asyncio.wait_for(client.chat.completions.create(
                            model="gpt-4o-mini", messages=[{"role": "user", "content": "a prompt of some words"}]),
                            timeout=0.2)
                asyncio.run(main())
                return EvalResult(fitness=0.0)

        result, summary, _ = run(GivesUp(), slow, "x")
        deadline = time.monotonic() + 10
        while slow.served()["calls"] < 1 and time.monotonic() < deadline:  # the server computes it all the same
            time.sleep(0.05)
        assert slow.served()["calls"] == 1
    (span,) = result.trace
    assert (span["ok"], span["cancelled"], span["tokens_estimated"]) == (False, True, True)
    assert span["tokens_in"] > 0 and "CancelledError" in span["error"]
    assert (summary["llm_calls"], summary["failed_calls"], summary["cancelled_calls"]) == (1, 1, 1)


# -- examples: structure per example ---------------------------------------------------------------
@settings(max_examples=30, deadline=None)
@given(programs=st.lists(_programs(), min_size=1, max_size=4), workers=st.integers(1, 4), reverse=st.booleans())
def test_each_examples_structure_is_its_own_whatever_the_concurrency_and_order(programs, workers, reverse):
    from qd.analysis import trace_critical_path, trace_max_fanout
    from qd.analysis.descriptors import split_examples
    from qd.analysis.tracer import example_scope

    autotrace.install()
    alone = []
    for program in programs:  # each program run by itself, in a trace of its own
        with Tracer() as tracer:
            _run_program(program)
        alone.append((trace_critical_path(tracer.spans), trace_max_fanout(tracer.spans)))

    def example(item: tuple) -> None:
        index, program = item
        with example_scope(index):
            _run_program(program)

    order = list(enumerate(programs))[::-1] if reverse else list(enumerate(programs))
    with Tracer() as together:
        if workers == 1:
            for item in order:
                example(item)
        else:
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(example, order))
    spans = together.spans
    assert {s["example"] for s in spans} == set(range(len(programs)))
    for group in split_examples(spans):
        index = group[0]["example"]
        assert (trace_critical_path(group), trace_max_fanout(group)) == alone[index]
    assert trace_critical_path(spans) == max(c for c, _ in alone)
    assert trace_max_fanout(spans) == max(f for _, f in alone)


def test_a_failed_call_counts_as_a_call_and_is_no_node_of_the_data_flow():
    from qd.analysis import trace_critical_path, trace_max_fanout

    with Tracer() as tracer:  # an answer, then a call that fails and is not retried
        _call()
        _call(ok=False)
    summary = summarize(tracer.spans)
    assert (summary["llm_calls"], summary["failed_calls"]) == (2, 1)
    assert (trace_critical_path(tracer.spans), trace_max_fanout(tracer.spans)) == (1, 1)
    with Tracer() as alone:
        _call(ok=False)
    assert (summarize(alone.spans)["llm_calls"], trace_critical_path(alone.spans), trace_max_fanout(alone.spans)) \
        == (1, 0, 0)
