"""LMXCrossover and LLMMutation: prompts, parsing, several proposals, counters, seeding and the real embedded model."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest
from fake_openai import FakeOpenAI

from qd.archives import GridArchive
from qd.domains.k_module import KModuleDomain
from qd.llm import LLMClient
from qd.operators import Mutation, UniformCrossover
from qd.operators.base import Parent
from qd.operators.llm import LLM_OPERATORS, LLMMutation, LMXCrossover
from qd.operators.parse import render_pairs
from qd.scheduler import GenerationJob, Scheduler, SchedulerOptions
from qd.space import Bool, Categorical, Float, Int, Seq, Space

SPACE = Space({
    "temperature": Float(0.0, 2.0),
    "n_samples": Int(1, 16),
    "strategy": Categorical(["cot", "direct", "vote", "refine"]),
    "verify": Bool(),
})
NESTED = Space({"layers": Seq(Space({"k": Int(1, 4)}), 1, 3), "t": Float(0.0, 1.0)})


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
GOOD_LINE = "temperature=0.70 n_samples=8 strategy=vote verify=true"


def client_for(fake: FakeOpenAI, **kw) -> LLMClient:
    return LLMClient(base_url=fake.base_url, model="m", retries=1, backoff_s=0.001, timeout_s=2.0, **kw)


@pytest.fixture
def fake():
    with FakeOpenAI(reply=lambda req: " " + json.dumps(GOOD) + " and more text") as server:
        yield server


def test_registry():
    assert LLM_OPERATORS == {"lmx": LMXCrossover, "llm_mutation": LLMMutation}


# -- prompts (no model needed) ------------------------------------------------------------------
def test_lmx_prompt_lists_parents_worst_to_best_as_pairs_and_asks_for_more_at_the_target():
    op = LMXCrossover(SPACE, LLMClient(base_url="http://127.0.0.1:9/v1"), k=4)
    ps = parents(4)
    prompt, fallback, rendered = op.prompt(ps, {"llm_calls": 3.0})
    lines = prompt.split("\n")
    assert len(lines) == 5 and op.num_parents == 4 and op.parents_near_target and op.accepts_target
    shown = [float(line.split("score ")[1].split(":")[0]) for line in lines]
    assert shown[:4] == sorted(round(p.fitness, 2) for p in ps)  # worst to best
    assert shown[4] > shown[3]  # the line to complete asks for better than the best parent
    assert lines[4] == f"llm_calls 3, score {shown[4]:.2f}: temperature="  # the target's measures, then the first key
    best = max(ps, key=lambda p: p.fitness)
    assert fallback == best.config and lines[3].endswith(render_pairs(SPACE, best.config))
    assert lines[3].startswith(f"llm_calls {best.config['n_samples']}, score ")
    assert all(repr(p.config["temperature"]) not in prompt for p in ps)  # floats to 1% of their range


def test_lmx_without_a_target_completes_the_best_parents_cell():
    op = LMXCrossover(SPACE, LLMClient(base_url="http://127.0.0.1:9/v1"), k=2)
    ps = parents(2)
    best = max(ps, key=lambda p: p.fitness)
    last = op.prompt(ps)[0].split("\n")[-1]
    assert last.startswith(f"llm_calls {best.config['n_samples']}, score ")


def test_lmx_leaves_long_texts_out_of_its_lines_and_fills_them_from_the_best_parent():
    from qd.domains import get_domain

    domain = get_domain("retrieval-sim")
    op = LMXCrossover(domain.space, LLMClient(base_url="http://127.0.0.1:9/v1"), k=3)
    rng = np.random.default_rng(0)
    ps = [Parent(domain.space.sample(rng), float(i), {"log2_calls": 1.0 + i}) for i in range(3)]
    prompt, fallback, _ = op.prompt(ps)
    assert "instruction" not in prompt and fallback == ps[-1].config
    assert prompt.endswith(": chunk_size=")


def test_lmx_on_a_nested_space_writes_json_lines():
    op = LMXCrossover(NESTED, LLMClient(base_url="http://127.0.0.1:9/v1"), k=2)
    ps = [Parent({"layers": [{"k": 1}], "t": 0.25}, 0.1, {"m": 1.0}), Parent({"layers": [{"k": 2}], "t": 0.5}, 0.2)]
    prompt = op.prompt(ps)[0]
    assert '{"layers": [{"k": 2}], "t": 0.5}' in prompt and prompt.endswith("score 0.21:")


def test_mutation_prompt_shows_feedback_lines_goal_and_choices():
    op = LLMMutation(SPACE, LLMClient(base_url="http://127.0.0.1:9/v1"))
    parent = Parent(GOOD, 0.5, {"llm_calls": 8.0},
                    feedback="2 of 4 right\nstage strategy: vote is wrong\n\nverify: on is wrong\nmore\nand more")
    prompt = op.completion_prompt(parent)
    lines = prompt.split("\n")
    assert lines[0] == "values: temperature 0..2; n_samples 1..16; strategy cot|direct|vote|refine; verify true|false"
    assert f"config: {GOOD_LINE}" in lines and "result: score 0.50, llm_calls 8" in lines
    assert [line for line in lines if line.startswith("wrong: ")] == [
        "wrong: 2 of 4 right", "wrong: stage strategy: vote is wrong", "wrong: verify: on is wrong", "wrong: more"]
    assert "goal: score above 0.50" in lines and lines[-1] == "fix: strategy="  # the first parameter it names
    targeted = op.completion_prompt(parent, {"llm_calls": 2.0, "latency_s": 0.1234})
    assert "goal: llm_calls 2, latency_s 0.12, score above 0.50" in targeted
    assert "edit:" not in targeted  # no predictor: no predicted edits
    quiet = op.completion_prompt(Parent(GOOD, 0.5, {}, feedback="3 of 4 right"))
    assert quiet.endswith("\nfix: ") and "result: score 0.50\n" in quiet  # nothing named: the model starts


def test_mutation_samples_start_their_fix_with_each_named_parameter_in_turn():
    domain = KModuleDomain()
    op = LLMMutation(domain.space, LLMClient(base_url="http://127.0.0.1:9/v1"))
    config = {**domain.default_config(), "model": "tree", "postprocess": "clip"}
    parent = Parent(config, 0.5, {}, feedback=domain.evaluate(config).feedback)
    assert op.named(parent.feedback) == ["model", "postprocess", "threshold"]
    starts = [r.prompt.rsplit("\n", 1)[1] for r in op.requests([parent], None, 4)]
    assert starts == ["fix: model=", "fix: postprocess=", "fix: threshold=", "fix: model="]
    assert len({r.prompt.rsplit("\n", 1)[0] for r in op.requests([parent], None, 4)}) == 1  # one shared prefix
    assert op.named("the loaders and pre-processing were fine; batch size too small") == ["batch_size"]


def test_a_second_parent_whose_feedback_names_a_parameter_shows_a_fix_first():
    domain = KModuleDomain()
    op = LLMMutation(domain.space, LLMClient(base_url="http://127.0.0.1:9/v1"))
    first, second = domain.default_config(), {**domain.default_config(), "loader": "json", "batch_size": 3}
    parents_ = [Parent(c, domain.evaluate(c).fitness, domain.predict_measures(c), feedback=domain.evaluate(c).feedback)
                for c in (first, second)]
    prompt = op.completion_prompt(parents_[0], other=parents_[1])
    example = prompt.split("\n\n")[1].split("\n")
    assert example[0] == f"config: {render_pairs(domain.space, second)}"
    assert "wrong: stage loader: json is wrong" in example
    assert example[-1] == "fix: loader=parquet"  # the next choice: a different value for what it names
    assert op.completion_prompt(parents_[0], other=parents_[0]).count("config: ") == 1  # no example from itself


def test_mutation_shows_the_single_edits_predicted_to_reach_the_target():
    domain = KModuleDomain()
    op = LLMMutation(domain.space, LLMClient(base_url="http://127.0.0.1:9/v1"))
    op.predict_measures = domain.predict_measures  # what the scheduler sets
    config = domain.default_config()
    parent = Parent(config, 0.5, domain.predict_measures(config))
    target = {"cost": parent.measures["cost"], "log2_batch": 5.0}
    edits = op.edits(parent, target)
    assert edits and edits[0].startswith("batch_size=32 gives log2_batch 5")  # the exact edit first
    assert all(" gives " in e for e in edits) and len(edits) <= 3
    assert f"edit: {edits[0]}" in op.completion_prompt(parent, target)


def test_mutation_on_a_nested_space_writes_the_schema_and_json():
    op = LLMMutation(NESTED, LLMClient(base_url="http://127.0.0.1:9/v1"))
    prompt = op.completion_prompt(Parent({"layers": [{"k": 1}], "t": 0.25}, 0.1, feedback="t is wrong"))
    assert NESTED.to_prompt() in prompt and prompt.endswith('fixed config: {"')


# -- calls, parsing and counters (scripted answers and faults) -----------------------------------
def test_json_answers_are_read_too_and_counted(fake):
    op = LMXCrossover(SPACE, client_for(fake), k=4)
    assert op.vary(parents(4), np.random.default_rng(1)) == [GOOD]
    stats = op.stats()
    assert stats["offspring"] == 1 and stats["calls"] == 1 and stats["invalid"] == 0
    assert stats["tokens_in"] > 0 and stats["tokens_out"] > 0
    assert op.client.usage_by_tag["lmx"].calls == 1
    assert fake.requests[0]["body"]["stop"] == ["\n"]


def test_a_pairs_answer_continues_the_prefilled_first_key(fake):
    fake.reply = lambda req: "0.70 n_samples=8 strategy=Vote, verify=yes"
    (child,) = LMXCrossover(SPACE, client_for(fake), k=2).vary(parents(2), np.random.default_rng(0))
    assert child == GOOD
    fake.reply = lambda req: f"{GOOD_LINE} and so on"  # the model wrote the first key again
    (child,) = LLMMutation(SPACE, client_for(fake)).vary(parents(1), np.random.default_rng(0))
    assert child == GOOD


def test_a_partial_pairs_answer_is_repaired_from_the_parent(fake):
    fake.reply = lambda req: "5 n_samples=99 bogus=1"
    op = LLMMutation(SPACE, client_for(fake))
    (parent,) = parents(1)
    parent.feedback = "temperature is too high"  # the fix starts with temperature=
    (child,) = op.vary([parent], np.random.default_rng(0))
    assert SPACE.validate(child) == [] and child["n_samples"] == 16 and child["temperature"] == 2.0
    assert child["strategy"] == parent.config["strategy"] and "bogus" not in child


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


def test_propose_samples_one_prompt_several_times_at_spread_temperatures(fake):
    fake.reply = lambda req: json.dumps({**GOOD, "n_samples": 1 + req["seed"] % 16})
    op = LLMMutation(SPACE, client_for(fake), temperature=0.8)
    generation = op.propose(parents(1), np.random.default_rng(0), 4)
    bodies = [r["body"] for r in fake.requests]
    assert len(generation.configs) == 4 and len({b["prompt"] for b in bodies}) == 1
    assert [b["temperature"] for b in bodies] == pytest.approx([0.8, 1.0, 0.7, 0.4])  # its own first, then spread
    first = op.generate(parents(1), np.random.default_rng(0))  # a single child is the first proposal
    assert fake.requests[-1]["body"] == bodies[0] and first.configs == generation.configs[:1]
    assert len({b["seed"] for b in bodies}) == 4 and generation.tokens > 0
    assert op.stats()["calls"] == 5 and op.stats()["offspring"] == 5


def test_unparseable_output_returns_nothing_and_counts(fake):
    fake.reply = lambda req: " I would rather not write a configuration today."
    op = LMXCrossover(SPACE, client_for(fake))
    assert op.vary(parents(3), np.random.default_rng(0)) == []
    assert op.stats()["invalid"] == 1 and op.stats()["offspring"] == 0


def test_llm_failure_returns_nothing_and_counts(fake):
    fake.push("500", times=10)
    op = LLMMutation(SPACE, client_for(fake))
    assert op.vary(parents(1), np.random.default_rng(0)) == []
    stats = op.stats()
    assert stats["llm_failures"] == 1 and stats["calls"] == 0 and stats["invalid"] == 0


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


def test_mutation_chat_template(fake):
    fake.reply = lambda req: "Here is the new configuration:\n```json\n" + json.dumps(GOOD, indent=2) + "\n```"
    op = LLMMutation(SPACE, client_for(fake, api="chat"))
    op.target = {"llm_calls": 2}
    assert op.vary(parents(1), np.random.default_rng(0)) == [GOOD]
    req = fake.requests[0]
    assert req["path"].endswith("/chat/completions")
    system, user = req["body"]["messages"]
    assert system["role"] == "system" and "configuration" in system["content"]
    assert "Goal: llm_calls 2, score above" in user["content"] and "- parent 0: too slow" in user["content"]


def test_lmx_chat_api_and_duplicates_counted(fake):
    ps = parents(2)
    fake.reply = lambda req: json.dumps(ps[0].config)
    op = LMXCrossover(SPACE, client_for(fake, api="chat"), k=2)
    assert op.vary(ps, np.random.default_rng(0)) == [ps[0].config]
    assert op.stats()["unchanged"] == 1
    assert fake.requests[0]["path"].endswith("/chat/completions")
    assert not fake.requests[0]["body"]["messages"][0]["content"].endswith("temperature=")


def test_operators_need_a_client():
    with pytest.raises(ValueError, match="LLMClient"):
        LMXCrossover(SPACE, None)
    with pytest.raises(ValueError, match="k must be"):
        LMXCrossover(SPACE, LLMClient(base_url="http://127.0.0.1:9/v1"), k=0)


def test_target_per_call_leaves_the_operator_unchanged(fake):
    mutation = LLMMutation(SPACE, client_for(fake))
    mutation.generate(parents(1), np.random.default_rng(0), target={"llm_calls": 2.5, "latency_s": 0.12345})
    mutation.generate(parents(1), np.random.default_rng(0))
    first, second = (r["body"]["prompt"] for r in fake.requests)
    assert "goal: llm_calls 2.5, latency_s 0.12, score above" in first
    assert "goal: score above" in second and mutation.target is None


# -- the real embedded model ----------------------------------------------------------------------
def k_module_archive(seed: int = 0, evaluations: int = 60) -> tuple[KModuleDomain, GridArchive, set[str]]:
    """A k-module archive filled by a classic search, with the hashes it evaluated."""
    domain = KModuleDomain()
    archive = GridArchive(dims=domain.default_bins, ranges=domain.default_ranges,
                          measure_names=list(domain.default_measures))
    scheduler = Scheduler(archive, domain.space, {"mutation": (Mutation(domain.space), 1.0),
                                                  "uniform_crossover": (UniformCrossover(domain.space), 1.0)},
                          SchedulerOptions(seed=seed, init_random=20))
    seen = set()
    for _ in range(evaluations):
        candidate = scheduler.ask()
        result = domain.evaluate(candidate.config)
        scheduler.tell(candidate, result.fitness, list(result.measures.values()), feedback=result.feedback)
        seen.add(candidate.hash)
    return domain, archive, seen


def test_lmx_receives_a_target_and_its_neighbourhood_and_writes_toward_it(local_llm):
    domain, archive, seen = k_module_archive()
    lmx = LMXCrossover(domain.space, LLMClient(base_url=local_llm, cache=None), k=6)
    scheduler = Scheduler(archive, domain.space, {"lmx": (lmx, 1.0)},
                          SchedulerOptions(seed=3, init_random=0, target_rate=1.0, filter=True, proposals=3),
                          predict=domain.predict_measures)
    scheduler.resume(seen)
    job = scheduler.propose()
    assert isinstance(job, GenerationJob) and job.target is not None and job.proposals == 3
    occupied, _ = archive.retrieve_single([job.target[n] for n in archive.measure_names])
    assert not occupied  # the target is an empty cell ...
    span = archive.interval_size

    def distance(p):
        return max(abs(p.measures[n] - job.target[n]) / span[i] for i, n in enumerate(archive.measure_names))

    # ... the context is the elites nearest it (after the one it was drawn near) ...
    rest = sorted(distance(p) for p in archive_parents(archive) if p.id not in {q.id for q in job.parents})
    assert len(job.parents) == 6 and max(distance(p) for p in job.parents[1:]) <= rest[0]
    # ... and the prompt ends at the target's measures
    last = lmx.prompt(job.parents, job.target)[0].split("\n")[-1]
    assert last.startswith(f"cost {round(job.target['cost'])}, log2_batch ")
    generation = job.run()
    assert not generation.failed and len(generation.configs) >= 2  # the base model completes the pattern
    assert all(domain.space.validate(c) == [] for c in generation.configs)
    candidate = scheduler.complete(job, generation)
    assert candidate.operator in ("lmx", "fallback") and domain.space.validate(candidate.config) == []


def archive_parents(archive):
    data = archive.data()
    return [Parent(s, o, dict(zip(archive.measure_names, m)), id=int(i))
            for s, o, m, i in zip(data["solution"], data["objective"], data["measures"], data["id"])]


def test_mutation_on_the_embedded_model_writes_valid_children_from_feedback(local_llm):
    domain = KModuleDomain()
    op = LLMMutation(domain.space, LLMClient(base_url=local_llm, cache=None))
    op.predict_measures = domain.predict_measures
    config = domain.default_config()
    result = domain.evaluate(config)
    parent = Parent(config, result.fitness, result.measures, feedback=result.feedback)
    generation = op.propose([parent], np.random.default_rng(0), 3, {"cost": 12.0, "log2_batch": 5.0})
    assert not generation.failed and generation.configs
    assert all(domain.space.validate(c) == [] for c in generation.configs)
    assert op.stats()["calls"] == 3


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


def test_a_score_functions_feedback_text_reaches_the_mutation_prompt():
    """(score, "what went wrong") from a user's score function → the evaluation's feedback → the elite → the prompt."""
    from qd import FunctionDomain
    from qd.evaluation import evaluate_config

    space = Space({"strategy": Categorical(["cot", "direct", "vote"]), "n_samples": Int(1, 16)})

    def graded(config, example):
        if config["strategy"] == "vote":
            return 1.0, ""
        return 0.0, f"question {example}: strategy {config['strategy']} gave two answers"

    domain = FunctionDomain(space, [1, 2], graded, measures={"n_components": (0, 4)}, uses_llm=False)
    archive = GridArchive(dims=[4], ranges=[(0, 4)], measure_names=["n_components"])
    op = LLMMutation(space, LLMClient(base_url="http://127.0.0.1:9/v1"))
    config = {"strategy": "cot", "n_samples": 3}
    scheduler = Scheduler(archive, space, {"llm_mutation": (op, 1.0)}, SchedulerOptions(seeds=[config], init_random=0))
    candidate = scheduler.ask()
    result = evaluate_config(domain, candidate.config)
    scheduler.tell(candidate, result.fitness, [1.0], feedback=result.feedback)
    job = scheduler.propose()
    assert isinstance(job, GenerationJob) and job.parents[0].config == config
    prompt = op.requests(job.parents, job.target, 1)[0].prompt
    assert "wrong: #0 (score 0): question 1: strategy cot gave two answers" in prompt
    assert prompt.endswith("fix: strategy=")  # the feedback names the strategy: the fix starts there
