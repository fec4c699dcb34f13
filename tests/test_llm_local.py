"""The embedded gemma-3-270m server (real model, no network)."""
from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from qd.llm import LLMClient
from qd.llm.local import MODEL_ALIAS, EmbeddedServer, ensure_local_server, model_path, stop_local_server


def test_model_file_is_assembled_locally():
    path = model_path()
    assert path.name == "gemma-3-270m-q4_k_m.gguf" and path.stat().st_size > 200_000_000


def test_server_lists_model_and_completes(local_llm):
    assert local_llm.startswith("http://127.0.0.1:") and local_llm.endswith("/v1")
    with urllib.request.urlopen(local_llm + "/models", timeout=5) as resp:
        ids = [m["id"] for m in json.loads(resp.read())["data"]]
    assert MODEL_ALIAS in ids
    client = LLMClient(base_url=local_llm, max_tokens=12)
    resp = client.complete("The capital of France is", seed=1, temperature=0.0)
    assert resp.text.strip() and 0 < resp.tokens_out <= 12 and resp.tokens_in > 0
    assert resp.cost_usd == 0.0 and client.usage.calls == 1
    chat = client.chat([{"role": "user", "content": "Say hi."}], max_tokens=8)
    assert chat.tokens_out > 0


def test_concurrent_requests_use_parallel_slots(local_llm):
    import concurrent.futures as cf

    client = LLMClient(base_url=local_llm, max_tokens=8, concurrency=4)
    with cf.ThreadPoolExecutor(4) as pool:
        out = list(pool.map(lambda i: client.complete(f"Count: {i},", seed=i), range(4)))
    assert all(r.tokens_out > 0 for r in out) and client.usage.failures == 0


def test_singleton_and_stop():
    with pytest.raises(ValueError, match="n_parallel"):
        EmbeddedServer(n_parallel=0)
    client = LLMClient(max_tokens=4)  # no base_url: the embedded server, started on demand
    assert client.is_local and "embedded" in repr(client)
    client.complete("Hello", seed=0)
    url = ensure_local_server()
    assert client.resolved_base_url() == url == ensure_local_server()
    stop_local_server()
    with pytest.raises((urllib.error.URLError, OSError)):
        urllib.request.urlopen(url.removesuffix("/v1") + "/health", timeout=2)
