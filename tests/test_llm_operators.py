"""LMXCrossover and LLMMutation: prompts, parsing, counters, seeding and the real embedded model."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest
from fake_openai import FakeOpenAI

from qd.llm import LLMClient
from qd.operators.base import Parent
from qd.operators.llm import LLM_OPERATORS, LLMMutation, LMXCrossover
from qd.space import Bool, Categorical, Float, Int, Space

SPACE = Space({
    "temperature": Float(0.0, 2.0),
    "n_samples": Int(1, 16),
    "strategy": Categorical(["cot", "direct", "vote", "refine"]),
    "verify": Bool(),
})


def score(config: dict) -> float:
    return round(1 - abs(config["temperature"] - 0.7) / 2 - abs(config["n_samples"] - 8) / 16
                 + (0.2 if config["strategy"] == "vote" else 0.0), 3)


def parents(k: int, seed: int = 0) -> list[Parent]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(k):
        config = SPACE.sample(rng)
        out.append(Parent(config=config, fitness=score(config), measures={"llm_calls": config["n_samples"]},
                          feedback=f"parent {i}: too slow", id=i))
    return out


GOOD = {"temperature": 0.7, "n_samples": 8, "strategy": "vote", "verify": True}


def client_for(fake: FakeOpenAI, **kw) -> LLMClient:
    return LLMClient(base_url=fake.base_url, model="m", retries=1, backoff_s=0.001, timeout_s=2.0, **kw)


@pytest.fixture
def fake():
    with FakeOpenAI(reply=lambda req: " " + json.dumps(GOOD) + " and more text") as server:
        yield server


def test_registry():
    assert LLM_OPERATORS == {"lmx": LMXCrossover, "llm_mutation": LLMMutation}


def test_lmx_prompt_orders_parents_and_conditions_on_a_better_score(fake):
    op = LMXCrossover(SPACE, client_for(fake), k=4)
    ps = parents(4)
    child = op.vary(ps, np.random.default_rng(1))
    assert child == [GOOD] and op.num_parents == 4
    body = fake.requests[0]["body"]
    lines = body["prompt"].split("\n")
    assert len(lines) == 5 and body["stop"] == ["\n"]
    shown = [float(line.split("|")[0].split(":")[1]) for line in lines]
    assert shown[:4] == sorted(p.fitness for p in ps)  # worst to best
    assert shown[4] > shown[3]  # the line to complete asks for better than the best parent
    assert lines[4].endswith("config:")
    for p in ps:  # every parent, floats shortened to 4 significant digits
        shown_config = {**json.loads(SPACE.canonical(p.config)), "temperature": float(f"{p.config['temperature']:.4g}")}
        assert json.dumps(shown_config, separators=(", ", ": ")) in body["prompt"]
        assert repr(p.config["temperature"]) not in body["prompt"]
    stats = op.stats()
    assert stats["offspring"] == 1 and stats["calls"] == 1 and stats["invalid"] == 0
    assert stats["tokens_in"] > 0 and stats["tokens_out"] > 0
    assert op.client.usage_by_tag["lmx"].calls == 1


def test_seed_comes_from_rng_so_cached_runs_replay(fake, tmp_path):
    cache = tmp_path / "cache.sqlite"
    fake.reply = lambda req: json.dumps({**GOOD, "n_samples": 1 + req["seed"] % 16})
    first = LMXCrossover(SPACE, client_for(fake, cache=cache))
    run1 = [first.vary(parents(4, s), np.random.default_rng(s)) for s in range(3)]
    seeds = [r["body"]["seed"] for r in fake.requests]
    assert len(set(seeds)) == 3
    second = LMXCrossover(SPACE, client_for(fake, cache=cache))
    run2 = [second.vary(parents(4, s), np.random.default_rng(s)) for s in range(3)]
    assert run2 == run1 and len(fake.requests) == 3  # every call served by the cache
    assert second.client.usage.cache_hits == 3


def test_unparseable_output_returns_nothing_and_counts(fake):
    fake.reply = lambda req: " I would rather not write JSON today."
    op = LMXCrossover(SPACE, client_for(fake))
    assert op.vary(parents(3), np.random.default_rng(0)) == []
    assert op.stats()["invalid"] == 1 and op.stats()["offspring"] == 0


def test_llm_failure_returns_nothing_and_counts(fake):
    fake.push("500", times=10)
    op = LLMMutation(SPACE, client_for(fake))
    assert op.vary(parents(1), np.random.default_rng(0)) == []
    stats = op.stats()
    assert stats["llm_failures"] == 1 and stats["calls"] == 0 and stats["invalid"] == 0


def test_mutation_completion_continues_the_prefilled_object(fake):
    fake.reply = lambda req: 'strategy": "vote", "n_samples": 8}'  # the model continues after {"
    op = LLMMutation(SPACE, client_for(fake))
    (parent,) = parents(1)
    (child,) = op.vary([parent], np.random.default_rng(0))
    assert child == {**parent.config, "strategy": "vote", "n_samples": 8}


def test_partial_output_is_repaired_from_the_parent(fake):
    fake.reply = lambda req: ' {"strategy": "Vote", "n_samples": 99, "bogus": 1'
    op = LLMMutation(SPACE, client_for(fake))
    (parent,) = parents(1)
    (child,) = op.vary([parent], np.random.default_rng(0))
    assert SPACE.validate(child) == []
    assert child["strategy"] == "vote" and child["n_samples"] == 16
    assert child["temperature"] == parent.config["temperature"] and "bogus" not in child


def test_mutation_completion_template(fake):
    op = LLMMutation(SPACE, client_for(fake), target="fewer llm_calls")
    (parent,) = parents(1)
    assert op.vary([parent], np.random.default_rng(0)) == [GOOD]
    prompt = fake.requests[0]["body"]["prompt"]
    assert SPACE.to_prompt() in prompt and "parent 0: too slow" in prompt
    assert "fewer llm_calls" in prompt and prompt.endswith('config: {"')
    assert f"llm_calls: {parent.config['n_samples']}" in prompt


def test_mutation_chat_template(fake):
    fake.reply = lambda req: "Here is the new configuration:\n```json\n" + json.dumps(GOOD, indent=2) + "\n```"
    op = LLMMutation(SPACE, client_for(fake, api="chat"))
    op.target = {"llm_calls": 2}
    assert op.vary(parents(1), np.random.default_rng(0)) == [GOOD]
    req = fake.requests[0]
    assert req["path"].endswith("/chat/completions")
    system, user = req["body"]["messages"]
    assert system["role"] == "system" and "JSON" in system["content"]
    assert SPACE.to_prompt() in user["content"] and "llm_calls: 2" in user["content"]


def test_lmx_chat_api_and_duplicates_counted(fake):
    ps = parents(2)
    fake.reply = lambda req: json.dumps(ps[0].config)
    op = LMXCrossover(SPACE, client_for(fake, api="chat"), k=2)
    assert op.vary(ps, np.random.default_rng(0)) == [ps[0].config]
    assert op.stats()["unchanged"] == 1
    assert fake.requests[0]["path"].endswith("/chat/completions")


def test_operators_need_a_client():
    with pytest.raises(ValueError, match="LLMClient"):
        LMXCrossover(SPACE, None)
    with pytest.raises(ValueError, match="k must be"):
        LMXCrossover(SPACE, LLMClient(base_url="http://127.0.0.1:9/v1"), k=0)


@pytest.mark.slow  # 5 sequential calls of the real embedded model
def test_lmx_with_the_embedded_model(local_llm):
    """The real base model writes valid children (after repair) for most LMX prompts."""
    client = LLMClient(base_url=local_llm, max_tokens=80, temperature=0.8)
    op = LMXCrossover(SPACE, client, k=4, max_tokens=80)
    rng = np.random.default_rng(123)
    start = time.perf_counter()
    children = [op.vary(parents(4, seed), rng) for seed in range(5)]
    elapsed = time.perf_counter() - start
    valid = sum(len(c) for c in children)
    for c in children:
        for child in c:
            assert SPACE.validate(child) == []
    stats = op.stats()
    print(f"\nLMX embedded: {valid}/5 valid, {elapsed / 5:.2f} s/child, "
          f"{stats['tokens_out'] / elapsed:.1f} generated tok/s, stats={stats}")
    assert stats["calls"] == 5 and stats["llm_failures"] == 0
    assert valid >= 4


def test_generate_reports_failures_invalid_output_and_tokens(fake):
    op = LLMMutation(SPACE, client_for(fake))
    ok = op.generate(parents(1), np.random.default_rng(0))
    assert ok.configs == [GOOD] and not ok.failed and not ok.invalid and ok.tokens > 0
    fake.reply = lambda req: "no idea"
    bad = op.generate(parents(1), np.random.default_rng(0))
    assert bad.configs == [] and bad.invalid and not bad.failed and bad.tokens > 0
    fake.push("500", times=10)
    down = op.generate(parents(1), np.random.default_rng(0))
    assert down.configs == [] and down.failed and not down.invalid and down.tokens == 0
    assert op.stats()["llm_failures"] == 1 and op.stats()["invalid"] == 1


def test_target_per_call_leaves_the_operator_unchanged(fake):
    mutation = LLMMutation(SPACE, client_for(fake))
    assert mutation.accepts_target and not LMXCrossover.accepts_target
    mutation.generate(parents(1), np.random.default_rng(0), target={"llm_calls": 2.5, "latency_s": 0.12345})
    mutation.generate(parents(1), np.random.default_rng(0))
    first, second = (r["body"]["prompt"] for r in fake.requests)
    assert "# Goal: reach llm_calls: 2.5, latency_s: 0.1235 with a high score" in first
    assert "# Goal: a higher score" in second and mutation.target is None
    lmx = LMXCrossover(SPACE, client_for(fake), k=2)
    lmx.generate(parents(2), np.random.default_rng(0), target={"llm_calls": 3})
    assert fake.requests[-1]["body"]["prompt"].split("\n")[-1].endswith("| llm_calls: 3 | config:")
