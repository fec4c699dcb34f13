"""Issue 11 item 4: LLM failures are shown by cause (progress line, end-of-run summary, `qd status`),
and a run whose first LLM calls all fail for one persistent cause stops early with the endpoint's
own message and the config key to fix."""
from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
from fake_openai import FakeOpenAI

from qd.cli import main, run_status
from qd.config import dump_config, resolve_config
from qd.llm import LLMClient, LLMError

JOINTS = 4
MESSAGE_401 = "Incorrect API key provided: sk-fake"


def arm_reply(req: dict) -> str:
    rng = np.random.default_rng(req.get("seed") or 0)
    return " " + json.dumps({"angles": [round(float(a), 3) for a in rng.uniform(-math.pi, math.pi, JOINTS)]})


def write_config(path, base_url: str, evaluations: int = 200, wait_for_llm: bool = False, **llm) -> str:
    config = resolve_config({
        "run": {"name": "llm-fail", "evaluations": evaluations, "init_random": 10, "seed": 1, "plot": False},
        "domain": {"name": "arm", "options": {"joints": JOINTS}},
        "archive": {"measures": ["x", "y"], "bins": [10, 10], "ranges": [[-JOINTS, JOINTS], [-JOINTS, JOINTS]]},
        "operators": {"lmx": 1.0, "llm_mutation": 1.0, "mutation": 1.0, "wait_for_llm": wait_for_llm},
        "llm": {"base_url": base_url, "model": "fake", "cache": False, "retries": 0, **llm},
        "evaluator": {"backend": "serial"},
    })
    path.write_text(dump_config(config))
    return str(path)


def test_a_run_against_an_endpoint_that_answers_401_stops_early_naming_the_cause_and_the_key(tmp_path, capsys):
    with FakeOpenAI(default="401") as fake:
        config = write_config(tmp_path / "run.toml", fake.base_url, evaluations=100_000)
        code = main(["run", config, "--out", str(tmp_path / "run"), "--no-progress"])
        asked = len(fake.requests)
    out, err = capsys.readouterr()
    assert code == 3
    # stopped after the first 5 calls (and the few already in flight: 4 LLM threads)
    assert 5 <= asked <= 5 + 4
    assert "qd: stopped early: the first 5 LLM calls to http://127.0.0.1" in err
    assert f"all failed (authentication): HTTP 401: {MESSAGE_401}" in err
    assert "fix llm.api_key_env" in err
    status = run_status(tmp_path / "run")
    assert status["evaluations"] < 20_000  # of 100_000: the budget was not spent silently
    failed = status["llm"]["failed_by_cause"]["authentication"]
    assert 5 <= failed <= asked and status["llm"]["failed_by_cause"] == {"authentication": failed}
    assert MESSAGE_401 in status["llm"]["last_errors"]["authentication"]
    # the end-of-run summary shows the failures by cause, with the endpoint's message
    assert f"LLM calls failed: {failed} of {failed}" in out
    assert f"authentication {failed}: HTTP 401: {MESSAGE_401}" in out
    assert main(["status", str(tmp_path / "run")]) == 0
    assert f"authentication {failed}: HTTP 401" in capsys.readouterr().out


def test_with_fail_fast_off_the_run_finishes_and_status_and_progress_show_the_causes(tmp_path, capsys):
    with FakeOpenAI(reply=arm_reply) as fake:
        fake.push("404", times=3)
        fake.push("429", times=2)  # with retries = 0 a rate limit fails its call too
        # waiting for the model makes the LLM operators' calls (more than 5) whatever the machine's speed
        config = write_config(tmp_path / "run.toml", fake.base_url, evaluations=80, wait_for_llm=True, fail_fast=0)
        assert main(["run", config, "--out", str(tmp_path / "run")]) == 0  # progress bar on (stderr)
    out, err = capsys.readouterr()
    status = run_status(tmp_path / "run")
    assert status["evaluations"] == 80
    assert status["llm"]["failed_by_cause"] == {"not_found": 3, "rate_limit": 2}
    assert "llm_failed=not found 3, rate limit 2" in err  # the progress line
    assert "not found 3: HTTP 404: The model `no-such-model` does not exist" in out  # the summary


def test_fail_fast_needs_the_same_persistent_cause_for_all_first_calls():
    with FakeOpenAI(reply=lambda req: "ok") as fake:
        client = LLMClient(base_url=fake.base_url, model="m", retries=0, fail_fast=3)
        fake.push("401", times=2)
        for _ in range(2):
            with pytest.raises(LLMError, match="HTTP 401"):
                client.complete("p")
        client.complete("p")  # the third call works: not fatal
        fake.push("401", times=5)
        for _ in range(5):
            with pytest.raises(LLMError, match="HTTP 401"):
                client.complete("p")
        assert client.fatal is None  # only the first calls decide
        transient = LLMClient(base_url=fake.base_url, model="m", retries=0, fail_fast=3)
        fake.push("500", times=3)
        for _ in range(3):
            with pytest.raises(LLMError, match="HTTP 500"):
                transient.complete("p")
        assert transient.fatal is None  # a server error may pass
        assert transient.usage.by_cause() == {"server_error": 3}
        wrong_model = LLMClient(base_url=fake.base_url, model="m", retries=0, fail_fast=2)
        fake.push("404", times=2)
        for _ in range(2):
            with pytest.raises(LLMError, match="HTTP 404"):
                wrong_model.complete("p")
        assert wrong_model.fatal is not None and wrong_model.fatal.cause == "not_found"
        assert "fix llm.model" in str(wrong_model.fatal)


def test_an_unreachable_endpoint_is_a_connection_failure_that_stops_the_run(tmp_path, capsys):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = write_config(tmp_path / "run.toml", f"http://127.0.0.1:{port}/v1", evaluations=500)
    assert main(["run", config, "--out", str(tmp_path / "run"), "--no-progress"]) == 3
    err = capsys.readouterr().err
    assert "all failed (connection)" in err and "fix llm.base_url" in err


def test_odd_answers_are_retried_under_their_cause_not_raised():
    with FakeOpenAI(reply=lambda req: "fine") as fake:
        client = LLMClient(base_url=fake.base_url, model="m", retries=1, backoff_s=0.01, api="chat")
        fake.push("429", retry_after="soon")  # a Retry-After that is neither seconds nor a date: usual backoff
        assert client.complete("p").text == "fine"
        fake.push("null_choice")  # {"choices": [null]}: unusable output, retried
        assert client.complete("q").text == "fine"
        assert [r["kind"] for r in fake.requests] == ["429", "ok", "null_choice", "ok"]


def test_fail_fast_counts_only_calls_that_reached_the_endpoint(tmp_path):
    cache = tmp_path / "cache.sqlite"
    with FakeOpenAI(reply=lambda req: "fine", default="401") as fake:
        fake.push("ok")
        LLMClient(base_url=fake.base_url, model="m", retries=0, cache=cache).complete("cached")
        # a rerun whose key stopped working
        client = LLMClient(base_url=fake.base_url, model="m", retries=0, cache=cache, fail_fast=2)
        assert client.complete("cached").cached  # a cache hit says nothing about the endpoint
        for prompt in ("a", "b"):
            with pytest.raises(LLMError, match="HTTP 401"):
                client.complete(prompt)
        assert client.fatal is not None and client.fatal.cause == "authentication"


def test_an_endpoint_that_never_answers_stops_the_run_naming_the_timeout_too():
    with FakeOpenAI() as fake:
        fake.push("timeout", delay=1.0, times=2)  # answers nothing within the client's 0.2 s
        client = LLMClient(base_url=fake.base_url, model="m", retries=0, timeout_s=0.2, fail_fast=2)
        for _ in range(2):
            with pytest.raises(LLMError):
                client.complete("p")
        assert client.fatal is not None and client.fatal.cause == "timeout"
        assert "fix llm.base_url (an endpoint that answers) or llm.timeout_s" in str(client.fatal)


def test_the_run_summary_counts_llm_answers_that_held_no_configuration(tmp_path, capsys):
    with FakeOpenAI(reply=lambda req: " no configuration here") as fake:
        config = write_config(tmp_path / "run.toml", fake.base_url, evaluations=30)
        assert main(["run", config, "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("LLM answers with no usable configuration: "))
    assert re.search(r"llm_mutation [1-9]", line)
