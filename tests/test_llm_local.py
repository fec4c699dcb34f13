"""The embedded gemma-3-270m server (real model, no network)."""
from __future__ import annotations

import json
import pickle
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
    client = LLMClient(base_url=local_llm, max_tokens=12, timeout_s=120)
    resp = client.complete("The capital of France is", seed=1, temperature=0.0)
    assert resp.text.strip() and 0 < resp.tokens_out <= 12 and resp.tokens_in > 0
    assert resp.cost_usd == 0.0 and client.usage.calls == 1
    chat = client.chat([{"role": "user", "content": "Say hi."}], max_tokens=8)
    assert chat.tokens_out > 0


def test_concurrent_requests_use_parallel_slots(local_llm):
    import concurrent.futures as cf

    client = LLMClient(base_url=local_llm, max_tokens=8, concurrency=4, timeout_s=120)
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
    # A pickled copy (a Ray worker on this machine) shares this server; on another host it starts its own.
    fresh = LLMClient(max_tokens=4)
    state = fresh.__getstate__()
    assert pickle.loads(pickle.dumps(fresh)).resolved_base_url() == url
    elsewhere = LLMClient.__new__(LLMClient)
    elsewhere.__setstate__({**state, "_resolved_on": "another-host"})
    assert elsewhere.is_local and elsewhere._resolved_url is None
    stop_local_server()
    with pytest.raises((urllib.error.URLError, OSError)):
        urllib.request.urlopen(url.removesuffix("/v1") + "/health", timeout=2)


def test_stopping_with_requests_in_flight_does_not_hang():
    """Releasing a busy xllamacpp server blocks forever; both ways of running it avoid that."""
    import threading
    import time

    from qd.llm import LLMError
    from qd.llm.local import ServerProcess

    for server in (ServerProcess(n_parallel=2), EmbeddedServer(n_parallel=2)):
        url = server.start()
        client = LLMClient(base_url=url, max_tokens=48, retries=0, timeout_s=30)
        outcomes = []

        def ask(i, client=client, outcomes=outcomes):
            try:
                outcomes.append(client.complete(f"Once upon a time, {i}", seed=i).tokens_out)
            except LLMError as exc:  # ServerProcess: the connection drops at once
                outcomes.append(exc)

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        start = time.perf_counter()
        server.stop()
        for t in threads:
            t.join(timeout=30)
        assert time.perf_counter() - start < 30 and len(outcomes) == 2, server
        assert not server.running


def test_server_process_exits_when_its_parent_dies():
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    code = ("from qd.llm.local import ensure_local_server; import time; "
            "print(ensure_local_server(), flush=True); time.sleep(600)")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).resolve().parents[1])
    try:
        url = parent.stdout.readline().strip()
        with urllib.request.urlopen(url.removesuffix("/v1") + "/health", timeout=5) as resp:
            assert resp.status == 200
    finally:
        parent.send_signal(signal.SIGKILL)  # no atexit, no cleanup: only the stdin watch can stop the child
        parent.wait()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url.removesuffix("/v1") + "/health", timeout=1).close()
        except (urllib.error.URLError, OSError):
            return
        time.sleep(0.2)
    pytest.fail(f"the server at {url} outlived its parent")


def test_qd_llm_serve_runs_an_endpoint_for_other_processes(tmp_path):
    """``qd llm serve --port P`` prints its base URL, answers completions, and stops on SIGINT."""
    import signal
    import socket
    import subprocess
    import sys
    import time
    from pathlib import Path

    with socket.socket() as s:  # a free port to ask for
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = Path(__file__).resolve().parents[1]
    # Ctrl-C's default in the child even when the tests run as a background job, whose children
    # start with SIGINT ignored (and Python then leaves it ignored)
    proc = subprocess.Popen([sys.executable, "-m", "qd.cli", "llm", "serve", "--port", str(port)], cwd=root,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        line = proc.stdout.readline().strip()  # blocks until the model is loaded and healthy
        assert line == f"http://127.0.0.1:{port}/v1"
        resp = LLMClient(base_url=line, max_tokens=4).complete("One, two,", seed=0, temperature=0.0)
        assert resp.tokens_out > 0
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    time.sleep(0.2)
    with pytest.raises((urllib.error.URLError, OSError)):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)


def test_the_embedded_server_reuses_a_shared_prefix_and_restores_an_evicted_prompt():
    # A and B share their first two thirds (an instruction), as a pipeline's chunk prompts do.
    # One slot. B must compute only what follows the shared part (Gemma's sliding-window layers
    # keep every position: params.swa_full), and A, asked again after B took its slot, must come
    # back from the host-memory prompt cache (at llama.cpp's default slot similarity B's slot is
    # reused in place and A's last third is computed again).
    head = "Each record pairs a key with its code. Answer with the code of the asked key, or none.\n\n" * 6
    prompt_a = head + "Records:\n" + "".join(f"alpha-{i}: {1000 + i}\n" for i in range(4)) + "Answer:"
    prompt_b = head + "Records:\n" + "".join(f"beta-{i}: {2000 + i}\n" for i in range(4)) + "Answer:"

    def computed(base_url: str, prompt: str) -> int:
        body = json.dumps({"prompt": prompt, "max_tokens": 1, "cache_prompt": True}).encode()
        request = urllib.request.Request(base_url + "/completions", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read())["timings"]["prompt_n"]

    with EmbeddedServer(n_parallel=1, n_threads=1) as url:
        first, other, again = computed(url, prompt_a), computed(url, prompt_b), computed(url, prompt_a)
    assert first > 100 and other < first / 3 and again <= 2, (first, other, again)
