"""LLM operators inside whole searches.

Fault injection runs complete searches against the fake OpenAI server (``fake_openai.py``) with
every fault kind; the real-model tests run LMX searches on the embedded gemma-3-270m. Also:
adaptive operator weights, archive target regions for LLM mutation, ``qd status`` metrics, and
the API key staying out of everything a run writes.
"""
from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
from fake_openai import FakeOpenAI

from qd.analysis.descriptors import resolve_measures
from qd.archives import GridArchive
from qd.cli import main, run_status
from qd.config import resolve_config
from qd.domains.arm import ArmDomain
from qd.evaluators import SerialEvaluator
from qd.llm import LLMClient
from qd.operators.classic import IsoLineDD
from qd.operators.llm import LLMMutation, LMXCrossover
from qd.runner import run_search
from qd.search import Search

SECRET = "sk-qd-test-secret-abcdef0123456789"
JOINTS = 4
# Every fault the fake server can script that fails an HTTP attempt (all but "slow" and "ok").
FAULTS = ("timeout", "429", "500", "503", "400", "nonjson", "truncated", "empty_choices", "trickle")


def arm_reply(req: dict) -> str:
    """A valid 4-joint arm config, different per request seed, wrapped like model output."""
    rng = np.random.default_rng(req.get("seed") or 0)
    angles = [round(float(a), 3) for a in rng.uniform(-math.pi, math.pi, JOINTS)]
    return " " + json.dumps({"angles": angles}) + " | score: 0.1"


def arm_config(base_url: str, operators: dict, evaluations: int, **llm: object) -> dict:
    """A 4-joint arm run whose LLM operators get their weight's share (``wait_for_llm``), so counts are exact.

    ``noise = "none"``: the arm is deterministic, and ``auto`` would spend one evaluation finding that out.
    """
    return resolve_config({
        "run": {"name": "llm-search", "evaluations": evaluations, "init_random": 10, "seed": 1,
                "progress": False, "plot": False},
        "domain": {"name": "arm", "options": {"joints": JOINTS}},
        "archive": {"measures": ["x", "y"], "bins": [10, 10], "ranges": [[-JOINTS, JOINTS], [-JOINTS, JOINTS]],
                    "noise": "none"},
        "operators": {"wait_for_llm": True, **operators},
        "llm": {"base_url": base_url, "model": "fake", "cache": False, **llm},
        "evaluator": {"backend": "serial"},  # microsecond evaluations; Ray runs are tested elsewhere
    })


def arm_search(client_ops: dict, budget: int, **kwargs) -> Search:
    kwargs.setdefault("wait_for_llm", True)
    domain = ArmDomain(joints=JOINTS)
    archive = GridArchive(dims=[10, 10], ranges=domain.default_ranges, measure_names=["x", "y"],
                          qd_score_offset=domain.qd_score_offset)
    search = Search(domain, archive, SerialEvaluator(domain), operators=client_ops,
                    measures=resolve_measures(["x", "y"], domain), budget=budget, init_random=10, **kwargs)
    try:
        search.run()
    finally:
        search.close()
    return search


def test_search_completes_its_budget_under_every_fault_and_counts_each(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("QD_TEST_KEY", SECRET)
    with FakeOpenAI(reply=arm_reply) as fake:
        for kind in FAULTS:
            fake.push(kind, retry_after=0.05 if kind == "429" else None, delay=0.6 if kind == "timeout" else 5.0)
            fake.push("slow", delay=0.05)  # a slow but successful answer between faults
        fake.push("400")  # not retryable: its call fails at once
        cache = tmp_path / "cache" / "llm.sqlite"
        config = arm_config(fake.base_url, {"lmx": 1.0, "llm_mutation": 1.0, "iso_line_dd": 1.0}, 80,
                            timeout_s=0.3, retries=1, api_key_env="QD_TEST_KEY", cache=str(cache))
        run_dir = tmp_path / "run"
        start = time.perf_counter()
        run_search(config, run_dir, progress=False)
        elapsed = time.perf_counter() - start
        requests = list(fake.requests)

    faulted = sum(r["kind"] in FAULTS for r in requests)
    assert faulted == len(FAULTS) + 1  # every scripted fault was served
    assert elapsed < 30  # the trickled body (5 s each) was cut off at the 0.3 s deadline

    status = run_status(run_dir)
    assert status["evaluations"] == 80 == status["budget"] and status["statuses"]["ok"] == 80
    llm, ops = status["llm"], status["operators"]
    assert llm["failures"] == faulted  # every failed HTTP attempt is counted, once
    gave_up = ops["lmx"]["llm_failures"] + ops["llm_mutation"]["llm_failures"]
    assert 1 <= gave_up <= llm["errors"]  # calls that failed after retries (the 400, at least)
    assert llm["calls"] + llm["errors"] >= ops["lmx"]["spent"] + ops["llm_mutation"]["spent"]
    assert sum(o["spent"] for o in ops.values()) == 80  # each evaluation charged to one choice
    for name in ("lmx", "llm_mutation"):
        o = ops[name]
        assert o["offspring"] > 0 and o["validity_rate"] == 1.0 and o["tokens"] > 0
        assert o["spent"] <= o["offspring"] + o["llm_failures"]
        assert llm["by_operator"][name]["calls"] >= o["offspring"]
    assert ops["fallback"]["evaluated"] >= gave_up - 4  # failed calls were replaced (up to 4 in flight)

    assert main(["status", str(run_dir)]) == 0
    text = capsys.readouterr().out
    assert "llm_fail" in text and "dup" in text and "tok/gain" in text
    assert f"failures {faulted}" in text

    # The key was sent, and nothing the run wrote holds it.
    assert all(r["auth"] == f"Bearer {SECRET}" for r in requests)
    written = [p for p in [*run_dir.rglob("*"), *cache.parent.rglob("*")] if p.is_file()]
    assert any(p.name == "run.sqlite" for p in written) and any(p.name == "llm.sqlite" for p in written)
    for path in written:
        assert SECRET.encode() not in path.read_bytes(), path
    assert SECRET not in json.dumps(status) + text
    assert "QD_TEST_KEY" in (run_dir / "config.toml").read_text()  # the variable's name only


def test_search_completes_when_every_llm_call_fails(tmp_path):
    with FakeOpenAI(reply=arm_reply, fail_rate=1.0) as fake:
        config = arm_config(fake.base_url, {"lmx": 1.0, "llm_mutation": 1.0}, 40, retries=0, timeout_s=1.0)
        run_search(config, tmp_path / "run", progress=False)
        served = len(fake.requests)
    status = run_status(tmp_path / "run")
    ops = status["operators"]
    assert status["evaluations"] == 40
    assert ops["lmx"]["offspring"] == ops["llm_mutation"]["offspring"] == 0
    assert ops["lmx"]["llm_failures"] + ops["llm_mutation"]["llm_failures"] >= 30 - 4
    assert ops["fallback"]["evaluated"] == 30  # every evaluation after the random ones is a fallback
    assert status["llm"]["failures"] == status["llm"]["errors"] == served


def test_invalid_and_duplicate_llm_offspring_are_counted_not_evaluated(tmp_path):
    """Prose (invalid) and a fixed config (a duplicate after its first use) are replaced by classics."""
    fixed = {"angles": [0.5] * JOINTS}
    answers = iter(["I cannot write JSON.", json.dumps(fixed)] * 100)

    with FakeOpenAI(reply=lambda req: next(answers)) as fake:
        client = LLMClient(base_url=fake.base_url, model="fake", retries=0)
        space = ArmDomain(joints=JOINTS).space
        ops = {"lmx": (LMXCrossover(space, client, k=3), 1.0)}
        search = arm_search(ops, budget=40, llm_threads=1)
    s, fb = search.stats["lmx"], search.stats["fallback"]
    assert s.offspring == s.spent == 30 and s.valid == 15  # one call per evaluation, half of them prose
    assert s.evaluated == 1 and s.duplicates == 14  # the fixed config is evaluated once
    assert fb.evaluated == 29 and s.llm_failures == 0


def test_evaluations_never_wait_on_a_busy_llm_unless_asked():
    """An LLM operator drawn while its only thread is busy yields the slot to a classic operator.

    Each LLM answer takes 2 s while a 4-joint arm evaluation takes microseconds, so nearly every
    evaluation is classic: the classic operator when one is configured, else the fallback mutation.
    The call in flight at the budget is still counted (drained), not evaluated.
    """
    def slow(req: dict) -> str:
        time.sleep(2.0)
        return arm_reply(req)

    with FakeOpenAI(reply=slow) as fake:
        client = LLMClient(base_url=fake.base_url, model="fake", retries=0, timeout_s=10.0)
        space = ArmDomain(joints=JOINTS).space
        mixed = arm_search({"lmx": (LMXCrossover(space, client), 1.0), "iso_line_dd": (IsoLineDD(space), 1.0)},
                           budget=200, llm_threads=1, wait_for_llm=False)
        alone = arm_search({"lmx": (LMXCrossover(space, client), 1.0)}, budget=100, llm_threads=1,
                           wait_for_llm=False)
    for search, classic, budget in ((mixed, "iso_line_dd", 200), (alone, "fallback", 100)):
        lmx = search.stats["lmx"]
        assert search.finished == budget
        assert lmx.spent <= 3 and lmx.offspring >= 1 and lmx.tokens > 0  # the drained call counts
        assert search.stats[classic].spent >= budget - 10 - 3
        assert sum(s.spent for s in search.stats.values()) == budget
    assert "fallback" not in mixed.stats  # a configured classic operator stands in, not the fallback


def test_adaptive_weights_move_away_from_an_operator_that_never_gains():
    with FakeOpenAI(reply=lambda req: "Sorry, here is no configuration.") as fake:
        client = LLMClient(base_url=fake.base_url, model="fake", retries=0)
        space = ArmDomain(joints=JOINTS).space
        ops = {"lmx": (LMXCrossover(space, client), 1.0), "iso_line_dd": (IsoLineDD(space), 1.0)}
        fixed = arm_search(ops, budget=150, seed=2)
        adaptive = arm_search(ops, budget=150, seed=2, adaptive=True, adapt_every=10)
    assert fixed.weights == {"lmx": 1.0, "iso_line_dd": 1.0}
    share = adaptive.weights["lmx"] / sum(adaptive.weights.values())
    assert share < 0.2
    assert adaptive.stats["lmx"].spent < fixed.stats["lmx"].spent  # fewer evaluations wasted on it
    assert adaptive.stats["lmx"].gains == 0 and adaptive.stats["lmx"].valid == 0


def test_llm_mutation_is_asked_for_empty_regions_near_its_parent():
    def prompts(target_rate: float) -> list[str]:
        with FakeOpenAI(reply=arm_reply) as fake:
            client = LLMClient(base_url=fake.base_url, model="fake", retries=0)
            ops = {"llm_mutation": (LLMMutation(ArmDomain(joints=JOINTS).space, client), 1.0)}
            arm_search(ops, budget=40, target_rate=target_rate)
            return [r["body"]["prompt"] for r in fake.requests]

    targeted = [p for p in prompts(1.0) if "\ngoal: x " in p]
    assert len(targeted) >= 20  # near-empty neighbourhoods are rare in a 10x10 grid this sparse
    for prompt in targeted:
        goal = prompt.split("\ngoal: ")[1].split(", score above")[0]
        values = dict(part.split(" ") for part in goal.split(", "))
        assert set(values) == {"x", "y"} and all(-JOINTS <= float(v) <= JOINTS for v in values.values())
    assert not any("\ngoal: x " in p for p in prompts(0.0))


# -- the real embedded model ----------------------------------------------------------------------
def test_lmx_search_on_the_arm_with_the_embedded_model(local_llm, tmp_path):
    """A whole run (config → store → status) whose offspring come from LMX on gemma-3-270m."""
    config = arm_config(local_llm, {"lmx": 1.0}, 15, model="gemma-3-270m", timeout_s=120.0)
    start = time.perf_counter()
    run_search(config, tmp_path / "run", progress=False)
    elapsed = time.perf_counter() - start
    status = run_status(tmp_path / "run")
    lmx = status["operators"]["lmx"]
    print(f"\nLMX arm search on the embedded model: {elapsed:.1f} s, lmx={lmx}, llm={status['llm']}")
    assert status["evaluations"] == 15 and status["statuses"]["ok"] == 15
    assert lmx["llm_failures"] == 0 and lmx["offspring"] >= 5 and lmx["tokens"] > 0
    assert lmx["validity_rate"] >= 0.8  # valid after repair
    assert lmx["spent"] == 5 and lmx["evaluated"] + status["operators"].get("fallback", {}).get("evaluated", 0) == 5
    assert status["llm"]["calls"] >= 5 and status["llm"]["failures"] == 0


@pytest.mark.slow
def test_lmx_validity_on_the_embedded_model_over_many_calls(local_llm):
    """≥ 80% of LMX children are valid after repair, over 40 calls on two spaces."""
    from test_llm_operators import SPACE, parents

    client = LLMClient(base_url=local_llm, concurrency=4)
    arm = ArmDomain(joints=6)
    rng = np.random.default_rng(7)
    arm_parents = []
    for _ in range(6):
        config = arm.space.sample(rng)
        result = arm.evaluate(config)
        from qd.operators.base import Parent

        arm_parents.append(Parent(config, result.fitness, dict(result.measures)))
    ops = [(LMXCrossover(SPACE, client, k=4), lambda s: parents(4, s)),
           (LMXCrossover(arm.space, client, k=3), lambda s: [arm_parents[(s + i) % 6] for i in range(3)])]
    import concurrent.futures as cf

    with cf.ThreadPoolExecutor(4) as pool:
        jobs = [pool.submit(op.generate, make(seed), np.random.default_rng(seed)) for op, make in ops
                for seed in range(20)]
        results = [j.result() for j in jobs]
    valid = sum(bool(g.configs) for g in results)
    print(f"\nLMX validity on the embedded model: {valid}/{len(results)}")
    assert not any(g.failed for g in results)
    assert valid / len(results) >= 0.8


def test_resumed_run_keeps_counting_llm_usage_and_tokens(tmp_path):
    from qd.runner import resolve_run_config

    run_dir = tmp_path / "run"
    with FakeOpenAI(reply=arm_reply) as fake:
        run_search(arm_config(fake.base_url, {"lmx": 1.0}, 30), run_dir, progress=False)
        first = run_status(run_dir)
        config = resolve_run_config(None, run_dir, True, {"run": {"evaluations": 50}})
        run_search(config, run_dir, resume=True, progress=False)
        served = len(fake.requests)
    second = run_status(run_dir)
    assert first["evaluations"] == 30 and second["evaluations"] == 50
    assert second["llm"]["calls"] == served > first["llm"]["calls"]  # both sessions' calls
    assert second["operators"]["lmx"]["tokens"] > first["operators"]["lmx"]["tokens"] > 0
    assert second["operators"]["lmx"]["spent"] == 40
