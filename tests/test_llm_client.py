"""LLMClient against a fake OpenAI server with scripted faults: retries, Retry-After, accounting,
cache, concurrency limits and secret hygiene."""
from __future__ import annotations

import asyncio
import concurrent.futures as cf
import pickle
import time

import pytest
from fake_openai import FakeOpenAI

from qd.analysis.tracer import Tracer
from qd.llm import LLMClient, LLMError, RequestCache
from qd.llm.client import TRANSIENT_CAUSES
from qd.llm.local import MODEL_ALIAS
from qd.llm.pipeline import PipelineLLM
from qd.llm.prices import DEFAULT_PRICES, cost_of

SECRET = "sk-test-very-secret-0123456789"


@pytest.fixture
def fake():
    with FakeOpenAI(reply=lambda req: f"echo seed={req.get('seed')}") as server:
        yield server


def make(fake: FakeOpenAI, **kw) -> LLMClient:
    opts = dict(base_url=fake.base_url, model="m", timeout_s=2.0, retries=3, backoff_s=0.001, max_backoff_s=2.0)
    opts.update(kw)
    return LLMClient(**opts)


def test_success_accounting_and_cost(fake):
    client = make(fake, prices={"m": (1.0, 2.0)})
    resp = client.complete("one two three", seed=7, name="gen")
    assert resp.text == "echo seed=7" and not resp.cached
    assert (resp.tokens_in, resp.tokens_out) == (3, 2)
    assert resp.cost_usd == pytest.approx((3 * 1.0 + 2 * 2.0) / 1e6)
    u = client.usage
    assert (u.calls, u.requests, u.failures, u.errors, u.tokens_in, u.tokens_out) == (1, 1, 0, 0, 3, 2)
    assert u.cost_usd == pytest.approx(resp.cost_usd)
    assert set(client.usage_by_tag) == {"gen"}
    assert dict(client.usage)["calls"] == 1  # usable as a mapping by the run store
    body = fake.requests[0]["body"]
    assert body["seed"] == 7 and body["model"] == "m" and body["prompt"] == "one two three"


def test_transient_errors_are_retried_and_each_counted(fake):
    client = make(fake, retries=6, timeout_s=0.3)
    for kind in ("500", "503", "nonjson", "truncated", "empty_choices", "timeout"):
        fake.push(kind, delay=0.8)
    resp = client.complete("hi")
    assert resp.text == "echo seed=None"
    assert len(fake.requests) == 7
    assert [r["kind"] for r in fake.requests] == ["500", "503", "nonjson", "truncated", "empty_choices", "timeout",
                                                  "ok"]
    assert client.usage.failures == 6 and client.usage.requests == 7
    assert client.usage.calls == 1 and client.usage.errors == 0


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_slow_stream_is_cut_off_by_the_total_deadline(fake, mode):
    """A body trickled over 20 s never trips a per-read timeout; the total deadline stops it."""
    client = make(fake, timeout_s=0.5, retries=1)
    client.complete("warm up")  # connection set-up and imports are not what this test times
    fake.push("trickle", delay=20.0)
    start = time.perf_counter()
    resp = client.complete("hi") if mode == "sync" else asyncio.run(client.acomplete("hi"))
    elapsed = time.perf_counter() - start
    assert resp.text.startswith("echo")
    assert [r["kind"] for r in fake.requests[1:]] == ["trickle", "ok"]
    assert elapsed < 2 * 0.5 + 0.5  # deadline plus at most one read timeout, not 20 s
    assert client.usage.failures == 1 and client.usage.calls == 2


def test_chat_garbage_without_content_is_retried(fake):
    client = make(fake, api="chat")
    fake.push("no_content")
    resp = client.complete("hello")  # api="chat": the prompt becomes one user message
    assert resp.text.startswith("echo")
    assert [r["path"] for r in fake.requests] == ["/v1/chat/completions"] * 2
    assert fake.requests[0]["body"]["messages"] == [{"role": "user", "content": "hello"}]
    assert client.usage.failures == 1


def test_retry_after_is_honoured(fake):
    client = make(fake, backoff_s=0.0001)
    fake.push("429", retry_after=0.4)
    fake.push("429", retry_after=0.2)
    client.complete("hi")
    t = [r["time"] for r in fake.requests]
    assert len(t) == 3
    # Exponential backoff alone would wait well under a millisecond here.
    assert t[1] - t[0] >= 0.4 * 0.98
    assert t[2] - t[1] >= 0.2 * 0.98
    assert client.usage.failures == 2


def test_llm_error_after_exhausting_retries(fake):
    client = make(fake, retries=2)
    fake.push("500", times=5)
    with pytest.raises(LLMError, match=r"after 3 attempt\(s\): HTTP 500") as info:
        client.complete("hi", tag="op")
    assert info.value.attempts == 3 and info.value.retryable
    assert len(fake.requests) == 3
    u = client.usage
    assert (u.failures, u.errors, u.calls, u.requests) == (3, 1, 0, 3)
    assert client.usage_by_tag["op"].errors == 1


def test_client_errors_are_not_retried(fake):
    client = make(fake, retries=5)
    fake.push("400")
    with pytest.raises(LLMError, match="not retryable") as info:
        client.complete("hi")
    assert not info.value.retryable
    assert len(fake.requests) == 1 and client.usage.failures == 1


def test_cache_hit_makes_no_http_call(fake, tmp_path):
    path = tmp_path / "cache.sqlite"
    client = make(fake, cache=path)
    first = client.complete("same prompt", seed=1, max_tokens=20)
    again = client.complete("same prompt", seed=1, max_tokens=20)
    assert len(fake.requests) == 1
    assert again.cached and not first.cached and again.text == first.text
    assert (again.tokens_in, again.tokens_out) == (first.tokens_in, first.tokens_out)
    # Anything that can change the answer is part of the key.
    client.complete("same prompt", seed=2, max_tokens=20)
    client.complete("same prompt", seed=1, max_tokens=21)
    client.complete("same prompt", seed=1, max_tokens=20, sample=1)
    client.complete("same prompt", seed=1, max_tokens=20, temperature=0.1)
    client.complete("same prompt", seed=1, max_tokens=20, stop=["\n"])
    assert len(fake.requests) == 6
    u = client.usage
    assert (u.calls, u.cache_hits, u.requests) == (7, 1, 6)
    assert u.tokens_in == 6 * first.tokens_in  # cache hits cost no endpoint work
    # The cache persists: a new client (or process) reuses it.
    other = make(fake, cache=RequestCache(path))
    assert other.complete("same prompt", seed=1, max_tokens=20).cached
    assert len(fake.requests) == 6


def test_failures_are_not_cached(fake, tmp_path):
    client = make(fake, retries=0, cache=tmp_path / "c.sqlite")
    fake.push("500")
    with pytest.raises(LLMError, match=r"after 1 attempt\(s\): HTTP 500"):
        client.complete("p")
    assert not client.complete("p").cached
    assert len(fake.requests) == 2


def test_api_key_never_in_repr_or_pickle(fake, monkeypatch):
    monkeypatch.setenv("QD_TEST_KEY", SECRET)
    client = make(fake, api_key_env="QD_TEST_KEY")
    client.complete("hi")  # the openai client now exists and holds the key
    assert SECRET not in repr(client) and SECRET not in str(vars(client).keys())
    blob = pickle.dumps(client)
    assert SECRET.encode() not in blob
    assert SECRET not in str(client.__getstate__())
    # An unpickled client (a Ray worker) rebuilds its HTTP client lazily and works.
    clone = pickle.loads(blob)
    assert clone.complete("again").text.startswith("echo")
    assert clone.usage.calls == 2  # counters travel with the copy


def test_key_is_read_from_env_at_use(fake, monkeypatch):
    monkeypatch.delenv("QD_TEST_KEY", raising=False)
    make(fake, api_key_env="QD_TEST_KEY").complete("x")
    assert fake.requests[-1]["auth"] == "Bearer sk-local-no-key"  # local servers need no key
    monkeypatch.setenv("QD_TEST_KEY", SECRET)
    make(fake, api_key_env="QD_TEST_KEY").complete("x")
    assert fake.requests[-1]["auth"] == f"Bearer {SECRET}"
    assert SECRET not in str(fake.requests[-1]["body"])


def test_sync_concurrency_limit(fake):
    client = make(fake, concurrency=2)
    for _ in range(6):
        fake.push("slow", delay=0.15)
    with cf.ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda i: client.complete(f"p{i}"), range(6)))
    assert fake.max_inflight == 2
    assert client.usage.calls == 6


def test_async_calls_limit_retry_and_account(fake):
    client = make(fake, concurrency=3)
    for _ in range(8):
        fake.push("slow", delay=0.1)
    fake.push("429", retry_after=0.05)

    async def main():
        out = await asyncio.gather(*(client.acomplete(f"p{i}", seed=i, tag="async") for i in range(8)))
        chat = await client.achat([{"role": "user", "content": "hi"}])
        return out, chat

    out, chat = asyncio.run(main())
    assert [r.text for r in out] == [f"echo seed={i}" for i in range(8)]
    assert chat.text.startswith("echo")
    assert fake.max_inflight == 3
    assert client.usage_by_tag["async"].calls == 8
    assert client.usage.failures == 1 and client.usage.calls == 9
    # A second event loop gets its own async HTTP client and semaphore.
    assert asyncio.run(client.acomplete("later")).text.startswith("echo")


def test_constructor_validation():
    with pytest.raises(ValueError, match="api must be"):
        LLMClient(base_url="http://x/v1", api="responses")
    with pytest.raises(ValueError, match="retries"):
        LLMClient(base_url="http://x/v1", retries=-1)
    with pytest.raises(ValueError, match="price for model 'm'"):
        LLMClient(base_url="http://x/v1", prices={"m": (1.0,)})


def test_calls_are_traced_when_a_tracer_is_active(fake, tmp_path):
    tracer_mod = pytest.importorskip("qd.analysis.tracer")
    client = make(fake, cache=tmp_path / "c.sqlite")
    with tracer_mod.Tracer() as tracer:
        first = client.complete("a", name="plan")
        second = client.complete("a", name="plan", deps=[first.span_id])
        fake.push("500", times=9)
        with pytest.raises(LLMError, match="HTTP 500"):
            client.complete("b", name="broken")
    spans = [s for s in tracer.spans if s["kind"] == "llm"]
    assert [s["name"] for s in spans] == ["plan", "plan", "broken"]
    assert [s["cached"] for s in spans] == [False, True, False]
    assert [s["ok"] for s in spans] == [True, True, False]
    assert spans[1]["deps"] == [first.span_id] and second.span_id == spans[1]["id"]
    assert spans[1]["tokens_in"] == spans[0]["tokens_in"]  # a cache hit still counts as a logical call
    # prompt and answer text on every span: the cache hit carries the answer it replays, a failure its prompt
    assert [s["input"] for s in spans] == ["a", "a", "b"]
    assert spans[0]["output"] == spans[1]["output"] == first.text != "" and "output" not in spans[2]


def test_chat_messages_are_kept_as_role_lines(fake):
    tracer_mod = pytest.importorskip("qd.analysis.tracer")
    client = make(fake, api="chat")
    with tracer_mod.Tracer() as tracer:
        answer = client.chat([{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}])
    (span,) = tracer.spans
    assert (span["input"], span["output"]) == ("system: be brief\nuser: hi", answer.text)


def test_two_servers_with_one_model_name_never_share_cached_answers(tmp_path):
    """Issue 11 item 5: the cache key includes the endpoint."""
    path = tmp_path / "shared.sqlite"
    with FakeOpenAI(reply=lambda req: "answer from A") as a, FakeOpenAI(reply=lambda req: "answer from B") as b:
        first = make(a, cache=path).complete("same prompt", seed=1)
        other = make(b, cache=path).complete("same prompt", seed=1)
        assert (first.text, other.text) == ("answer from A", "answer from B") and not other.cached
        assert len(b.requests) == 1
        again = make(a, cache=RequestCache(path)).complete("same prompt", seed=1)  # same endpoint: a hit
        assert again.cached and again.text == "answer from A" and len(a.requests) == 1


def test_endpoint_identity_ignores_case_and_trailing_slash_and_the_embedded_port():
    assert LLMClient(base_url="HTTP://Host:8000/v1/").endpoint == LLMClient(base_url="http://host:8000/v1").endpoint
    assert LLMClient(base_url="http://host:8000/v1").endpoint != LLMClient(base_url="http://host:8001/v1").endpoint
    assert LLMClient().endpoint == "embedded"


@pytest.mark.parametrize(("kind", "cause", "transient"), [
    ("429", "rate_limit", True), ("500", "server_error", True), ("timeout", "timeout", True),
    ("nonjson", "unusable_output", True), ("400", "bad_request", False), ("401", "authentication", False),
    ("404", "not_found", False)])
def test_a_failure_is_retried_exactly_when_its_cause_is_transient(fake, kind, cause, transient):
    client = make(fake, retries=1, timeout_s=0.3, max_backoff_s=0.01)
    fake.push(kind, times=2, delay=0.8, retry_after=0)
    with pytest.raises(LLMError) as info:
        client.complete("hi")
    assert (cause in TRANSIENT_CAUSES) == transient
    assert (info.value.cause, info.value.retryable, info.value.attempts) == (cause, transient, 2 if transient else 1)
    assert client.usage.by_cause() == {cause: 1} and len(fake.requests) == info.value.attempts
    assert ("check the API key in $OPENAI_API_KEY" in str(info.value)) == (cause == "authentication")


def test_a_span_costs_what_the_client_charged_and_a_model_it_cannot_price_is_unpriced(fake):
    priced = make(fake, prices={"m": (1.0, 2.0)})  # the tracer's default table does not know "m"
    unknown = make(fake, model="house-model", retries=0)
    with Tracer() as tracer:
        charged = priced.complete("one two three")
        free = unknown.complete("one two three")
        fake.push("500")
        with pytest.raises(LLMError):
            unknown.complete("again")
    ok, unpriced, failed = tracer.spans
    assert ok["cost_usd"] == charged.cost_usd == priced.usage.cost_usd > 0 and "unpriced" not in ok
    assert unpriced["cost_usd"] == free.cost_usd == unknown.usage.cost_usd == 0 and unpriced["unpriced"] is True
    assert failed["ok"] is False and failed["unpriced"] is True


def test_cost_of_follows_the_price_table_and_is_none_for_an_unpriced_model():
    table = {**DEFAULT_PRICES, "m": (1.0, 2.0)}
    assert cost_of(table, "m", 3, 2) == pytest.approx(7e-6)
    assert cost_of(table, "openai/gpt-4o-mini-2024-07-18", 10**6, 0) == pytest.approx(0.15)  # family, no prefix
    assert cost_of(table, MODEL_ALIAS, 10**6, 10**6) == 0.0
    assert cost_of(table, "house-model", 1, 1) is None


def test_the_pipeline_and_the_client_default_to_the_embedded_model_with_one_key_rule(monkeypatch):
    assert LLMClient().model == PipelineLLM().model == PipelineLLM.from_config({}).model == MODEL_ALIAS
    assert LLMClient().is_local and PipelineLLM(base_url="").is_local
    monkeypatch.delenv("QD_TEST_KEY", raising=False)
    client, pipeline = LLMClient(api_key_env="QD_TEST_KEY"), PipelineLLM(api_key_env="QD_TEST_KEY")
    assert client.api_key() == pipeline.api_key() == "sk-local-no-key"  # local servers need none
    monkeypatch.setenv("QD_TEST_KEY", SECRET)
    assert client.api_key() == pipeline.api_key() == SECRET and SECRET not in repr(pipeline)


@pytest.mark.parametrize("cls", [LLMClient, PipelineLLM])
def test_copies_of_an_embedded_endpoint_share_its_server_on_this_host_only(cls):
    here = cls()
    here._resolved_url = "http://127.0.0.1:9/v1"  # as if the embedded server ran here already
    assert pickle.loads(pickle.dumps(here)).resolved_base_url() == "http://127.0.0.1:9/v1"
    elsewhere = cls.__new__(cls)
    elsewhere.__setstate__({**here.__getstate__(), "_resolved_on": "another-host"})
    assert elsewhere.is_local and elsewhere._resolved_url is None  # it starts a server of its own there
    remote = pickle.loads(pickle.dumps(cls(base_url="http://host:8000/v1")))
    assert remote.resolved_base_url() == "http://host:8000/v1" and not remote.is_local


def test_a_401_says_when_the_key_variable_is_not_set(fake, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    fake.push("401")
    with pytest.raises(LLMError, match=r"check the API key in \$OPENAI_API_KEY, which is not set\)"):
        make(fake, retries=0).complete("hi")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    fake.push("401")
    with pytest.raises(LLMError, match=r"check the API key in \$OPENAI_API_KEY\)"):
        make(fake, retries=0).complete("hi")


def test_a_call_is_priced_by_the_model_asked_for_when_the_answer_names_another():
    with FakeOpenAI(reply=lambda req: "four words of text", answer_model="deployment-7") as renamed:
        reply = make(renamed, model="my-model", retries=0, prices={"my-model": (1.0, 2.0)}).complete("a prompt")
    assert reply.cost_usd > 0
    assert reply.cost_usd == pytest.approx((reply.tokens_in * 1.0 + reply.tokens_out * 2.0) / 1e6)
