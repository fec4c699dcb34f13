"""qd.llm.threads: the embedded model gets the cores the rest of the machine leaves free."""
from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qd.llm import local, threads
from qd.llm.threads import ThreadTuner, model_threads, other_cpu_cores

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


@given(cores=st.integers(1, 64), other=st.floats(0, 128), more=st.floats(0, 8))
def test_model_threads_stay_within_the_cores_and_shrink_as_others_use_more(cores, other, more):
    threads = model_threads(cores, other)
    assert 1 <= threads <= cores
    assert model_threads(cores, other + more) <= threads


def test_model_threads_give_every_core_to_an_llm_bound_run_and_leave_a_cpu_bound_one_its_cores():
    assert model_threads(2, 0.1) == 2  # evaluations wait on HTTP: the model takes both cores
    assert model_threads(2, 1.0) == 1  # one core computing: the model keeps to the other
    assert model_threads(2, 2.0) == 1  # never fewer than one thread
    assert model_threads(16, 4.2) == 12


def _share(pid: int, measure):
    """Run ``measure()``; return its value, ``pid``'s CPU cores and all cores busy meanwhile."""
    own0, busy0, t0 = threads.process_cpu_seconds(pid), threads._busy_seconds(), time.monotonic()
    value = measure()
    wall = time.monotonic() - t0
    return value, (threads.process_cpu_seconds(pid) - own0) / wall, (threads._busy_seconds() - busy0) / wall


def test_other_cpu_cores_counts_a_busy_process_unless_it_is_the_excluded_one():
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    idle = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        seen, busy_share, _ = _share(busy.pid, lambda: other_cpu_cores(idle.pid, 1.0))
        seen_without, busy_share2, total = _share(busy.pid, lambda: other_cpu_cores(busy.pid, 1.0))
    finally:
        busy.kill()
        idle.kill()
    assert busy_share > 0.2, "the busy loop did not run"
    assert seen >= busy_share - 0.15  # counted when another process is excluded
    assert abs(seen_without - (total - busy_share2)) < 0.15  # left out when it is the excluded one


def _complete(base_url: str) -> str:
    body = json.dumps({"prompt": "Records:\nabc: 1234\nQuestion: What is the code of abc?\nAnswer:",
                       "max_tokens": 3, "temperature": 0}).encode()
    request = urllib.request.Request(base_url + "/completions", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())["choices"][0]["text"]


def test_server_threads_change_on_the_same_address_and_the_tuner_records_its_decision():
    local.stop_local_server()
    try:
        local.set_local_server_threads(1)
        base_url = local.ensure_local_server()
        server = local.local_server()
        assert server is not None and server.n_threads == 1
        answer = _complete(base_url)
        assert local.set_local_server_threads(2) is True
        assert local.local_server().n_threads == 2 and local.ensure_local_server() == base_url
        assert _complete(base_url) == answer  # same model, same greedy answer, same address
        assert local.set_local_server_threads(2) is False  # nothing to change
        with ThreadTuner(window_s=0.5, first_window_s=0.5, cores=2) as tuner:
            for _ in range(100):
                if tuner.decisions:
                    break
                tuner._stop.wait(0.1)
        assert tuner.decisions, "the tuner measured no window"
        threads, other = tuner.decisions[0]
        assert threads == model_threads(2, other)
    finally:
        local.stop_local_server()
        local._requested_threads = None


def test_the_tuner_never_restarts_the_embedded_model_under_a_pipeline_that_calls_it():
    # A user's score function calls the model with its own client: a restart would fail its calls.
    from qd import FunctionDomain, PipelineLLM, pipeline_llm
    from qd.domains import get_domain
    from qd.runner import _embedded_model_threads
    from qd.space import Int, Space

    def user_domain(pipeline: PipelineLLM) -> FunctionDomain:
        domain = FunctionDomain(Space({"k": Int(0, 3)}), [1], lambda config, example: pipeline_llm().openai_client())
        assert domain.uses_llm  # read from the score function's code
        domain.pipeline_llm = pipeline
        return domain

    assert not isinstance(_embedded_model_threads(0, user_domain(PipelineLLM())), ThreadTuner)
    # the model serves only qd's operators, whose client retries a dropped connection
    assert isinstance(_embedded_model_threads(0, user_domain(PipelineLLM(base_url="http://127.0.0.1:9/v1"))),
                      ThreadTuner)
    assert isinstance(_embedded_model_threads(0, get_domain("arm", pipeline_llm=PipelineLLM())), ThreadTuner)


@given(decided=st.lists(st.integers(1, 2), min_size=1, max_size=30))
def test_the_tuner_restarts_on_its_first_window_and_then_only_on_a_change_that_holds_two_windows(decided):
    from qd.llm.threads import restart_to

    current, expected = 1, 1
    for i in range(1, len(decided) + 1):
        # the rule, written out: the first window restarts on any change; later ones on a change
        # the window before decided too
        wanted = decided[i - 1] if decided[i - 1] != expected and (i == 1 or decided[i - 2] == decided[i - 1]) \
            else None
        assert restart_to(decided[:i], current) == wanted
        if wanted is not None:
            current = expected = wanted


def test_a_call_made_while_the_embedded_model_restarts_waits_for_it_and_succeeds():
    import threading

    from qd.llm import LLMClient

    local.stop_local_server()
    try:
        local.set_local_server_threads(1)
        client = LLMClient(retries=1, backoff_s=0.01, max_backoff_s=0.01, cache=None, max_tokens=4)
        client.complete("warm up")
        restarting = threading.Thread(target=local.set_local_server_threads, args=(2,))
        restarting.start()
        time.sleep(0.05)  # the old server is stopping: this call meets a refused connection or 503
        reply = client.complete("The capital of France is")
        restarting.join()
        assert isinstance(reply.text, str) and local.local_server().n_threads == 2
        assert client.usage.failures >= 1  # the call did meet the restart, and got through it
    finally:
        local.stop_local_server()
        local._requested_threads = None
