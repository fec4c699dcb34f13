"""Retrieval domain: static call prediction vs. traces, simulated backend, and one real evaluation."""
from __future__ import annotations

import json
import math
import pickle

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domains.retrieval import AGGREGATIONS, RetrievalDomain, predict_calls
from domains.retrieval_sim import FIT_PATH, SimulatedLLM
from domains.retrieval_task import (
    DEFAULT_INSTRUCTION, forward_prompt, make_instance, make_instances, parse_code, parse_prompt,
    reverse_prompt_with_example,
)
from qd.analysis import resolve_measures, summarize
from qd.evaluation import evaluate_config

SIM = RetrievalDomain(n_pairs=12, n_instances=3, backend="simulated")


def config(**kw):
    base = dict(chunk_size=4, samples=2, few_shot=1, instruction=DEFAULT_INSTRUCTION, aggregation="llm_fusion",
                verify=True, temperature=0.3)
    return {**base, **kw}


configs = st.fixed_dictionaries({
    "chunk_size": st.integers(1, 12), "samples": st.integers(1, 5), "few_shot": st.integers(0, 3),
    "instruction": st.text("abc xyz.", max_size=40), "aggregation": st.sampled_from(AGGREGATIONS),
    "verify": st.booleans(), "temperature": st.floats(0.0, 1.5),
})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configs)
def test_traced_calls_equal_static_prediction(cfg):
    result = evaluate_config(SIM, cfg)
    assert result.status == "ok", result.error
    summary = summarize(result.trace)
    predicted = predict_calls(cfg, SIM.n_pairs)
    assert summary["llm_calls"] == predicted["llm_calls"] * SIM.n_instances
    assert summary["critical_path"] == predicted["critical_path"]
    calls = [s for s in result.trace if s["kind"] == "llm"]
    assert {s["model"] for s in calls} == {"simulated"}
    chunk_calls = [s for s in calls if s["name"] == "chunk"]
    assert all(s["deps"] == [] for s in chunk_calls)
    n_chunks = math.ceil(12 / cfg["chunk_size"])
    assert summary["max_fanout"] >= n_chunks * cfg["samples"]  # the map step's width
    for fuse in (s for s in calls if s["name"] == "fuse"):
        siblings = [s["id"] for s in chunk_calls if s["parent_id"] == fuse["parent_id"]]
        assert fuse["deps"] == siblings and len(siblings) == n_chunks * cfg["samples"]


def test_simulated_backend_is_deterministic_and_labelled():
    cfg = config(temperature=0.9, samples=3)
    a, b = evaluate_config(SIM, cfg), evaluate_config(SIM, cfg)
    assert a.fitness == b.fitness and a.metrics["answers"] == b.metrics["answers"]
    assert [s["tokens_in"] for s in a.trace] == [s["tokens_in"] for s in b.trace]
    assert SIM.name == "retrieval-sim" and a.metrics["simulated"] is True and "SIMULATED" in a.feedback
    # greedy votes are identical; sampled votes differ across seeds
    llm = SimulatedLLM()
    prompt = forward_prompt(make_instance(40, 3).records, make_instance(40, 3).key)
    assert len({llm.complete(prompt, temperature=0.0, seed=s).text for s in range(20)}) == 1
    assert len({llm.complete(prompt, temperature=1.0, seed=s).text for s in range(20)}) > 1


def test_simulated_accuracy_falls_with_context_and_chunking_buys_it_back():
    llm = SimulatedLLM()
    assert llm.p_correct(4) > llm.p_correct(16) > llm.p_correct(64)
    assert llm.p_correct(8, temperature=1.0) < llm.p_correct(8, temperature=0.0)
    dom = RetrievalDomain(n_pairs=32, n_instances=30, backend="simulated")
    one_call = evaluate_config(dom, config(chunk_size=32, samples=1, aggregation="majority", verify=False,
                                           temperature=0.0))
    chunked = evaluate_config(dom, config(chunk_size=4, samples=1, few_shot=0, aggregation="llm_fusion",
                                          verify=False, temperature=0.0))
    assert chunked.fitness > one_call.fitness
    assert summarize(chunked.trace)["max_prompt_tokens"] < summarize(one_call.trace)["max_prompt_tokens"]


def test_token_estimate_matches_the_fit_and_fit_file_is_complete():
    fit = json.loads(FIT_PATH.read_text())
    for key in ("forward", "reverse", "wrong", "tokens", "measured"):
        assert key in fit
    assert set(fit["measured"]["forward_greedy_accuracy"]) == {"4", "8", "16", "32", "64"}
    llm = SimulatedLLM()
    prompt = forward_prompt(make_instance(16, 1).records, "amber-otter")
    assert llm.count_tokens(prompt) == round(fit["tokens"]["per_char"] * len(prompt) + fit["tokens"]["offset"])


def test_prompts_round_trip_and_instances_are_seeded():
    inst = make_instance(10, 5)
    assert make_instance(10, 5) == inst and len({k for k, _ in inst.records}) == 10
    assert len({c for _, c in inst.records}) == 10 and (inst.key, inst.code) in inst.records
    records, kind, target = parse_prompt(forward_prompt(inst.records, inst.key, few_shot=3))
    assert (records, kind, target) == (list(inst.records), "forward", inst.key)
    records, kind, target = parse_prompt(reverse_prompt_with_example(inst.records[:2], "1234"))
    assert kind == "reverse" and target == "1234" and records == list(inst.records[:2])
    assert parse_code(" 4821\n") == "4821" and parse_code(" none") is None
    assert [i.seed for i in make_instances(4, 3, 1)] == [100003, 100004, 100005]


def test_descriptors_defaults_and_invalid_configs():
    fns = resolve_measures(list(SIM.default_measures) + ["predicted_calls", "n_chunks", "chunk_size", "critical_path",
                                                         "prompt_chars"], SIM)
    rng = np.random.default_rng(1)
    for _ in range(5):
        cfg = SIM.space.sample(rng)
        result = evaluate_config(SIM, cfg)
        values = [f(cfg, result) for f in fns]
        for v, (lo, hi) in zip(values[:2], SIM.default_ranges):
            assert lo <= v <= hi
        assert 2 ** values[0] == pytest.approx(values[2])  # log2_calls vs static prediction
        assert values[6] == len(cfg["instruction"])
    bad = evaluate_config(SIM, config(aggregation="vote", chunk_size=0))
    assert bad.status == "invalid" and "aggregation" in bad.error and "chunk_size" in bad.error
    with pytest.raises(ValueError, match="backend"):
        RetrievalDomain(backend="fake")


def test_feedback_names_failed_instances_and_domains_pickle():
    dom = RetrievalDomain(n_pairs=32, n_instances=4, backend="simulated")
    result = evaluate_config(dom, config(chunk_size=32, samples=1, aggregation="majority", verify=False))
    assert result.fitness < 1.0
    assert "expected" in result.feedback and "chunk 1/1 holding the key answered" in result.feedback
    for d in (dom, RetrievalDomain(n_pairs=8, n_instances=1, backend="real", base_url="http://127.0.0.1:9/v1")):
        clone = pickle.loads(pickle.dumps(d))
        assert clone.name == d.name and clone.space.to_dict() == d.space.to_dict()


def test_real_backend_evaluates_one_config(local_llm):
    dom = RetrievalDomain(n_pairs=4, n_instances=1, backend="real", base_url=local_llm)
    cfg = config(chunk_size=2, samples=1, few_shot=0, aggregation="llm_fusion", verify=True, temperature=0.0)
    result = evaluate_config(dom, cfg)
    assert result.status == "ok", result.error
    assert result.fitness in (0.0, 1.0) and result.metrics["call_errors"] == 0
    summary = summarize(result.trace)
    assert summary["llm_calls"] == predict_calls(cfg, 4)["llm_calls"] == 4
    assert summary["critical_path"] == 3 and summary["tokens_in"] > 0
    assert "simulated" not in summary["models"] and "SIMULATED" not in result.feedback
