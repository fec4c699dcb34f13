"""Retrieval domain: static call prediction vs. traces, simulated backend, and one real evaluation."""
from __future__ import annotations

import collections
import copy
import itertools
import json
import math
import pickle
import threading
import time

import numpy as np
import pytest
from fake_openai import FakeOpenAI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qd.analysis import resolve_measures, summarize
from qd.analysis.elites import export_elite_traces
from qd.analysis.selection import spanning_elites as _spanning_elites
from qd.archives import GridArchive
from qd.cli import main, run_status
from qd.config import DEMO_CONFIG, demo_operators_note, dump_config, resolve_config
from qd.domains import get_domain
from qd.domains.retrieval import AGGREGATIONS, RetrievalDomain, predict_calls
from qd.domains.retrieval_sim import FEATURES, FIT_PATH, SimulatedLLM, instruction_features
from qd.domains.retrieval_task import (
    DEFAULT_INSTRUCTION,
    forward_prompt,
    make_instance,
    make_instances,
    parse_code,
    parse_prompt,
    prompt_head,
    reverse_prompt_with_example,
)
from qd.evaluation import evaluate_config
from qd.llm.pipeline import PipelineLLM
from qd.llm.prices import normalize_prices
from qd.runner import open_run

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
    # the domain runs the same check on every evaluation and stores it with the result
    assert result.metrics["traced_calls"] == summary["llm_calls"] and result.metrics["prediction_ok"] is True
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


@pytest.mark.parametrize("few_shot,instruction", [(0, DEFAULT_INSTRUCTION), (3, DEFAULT_INSTRUCTION), (2, ""),
                                                   (1, "Write a short story about a dragon.")])
def test_simulated_model_reads_few_shot_and_instruction_from_the_prompt(few_shot, instruction):
    llm = SimulatedLLM()
    assert llm.prompt is not None  # the fit file holds the measured prompt effects
    present = absent = 0
    trials = 600
    for seed in range(trials):
        inst = make_instance(9, 9000 + seed)
        others = tuple(r for r in inst.records if r[0] != inst.key)
        hit = llm.complete(forward_prompt(others[:8], inst.key if seed % 2 else others[0][0], instruction=instruction,
                                          few_shot=few_shot), temperature=0.2, seed=seed).text.strip()
        if seed % 2:  # the key is not among the 8 records: "none" is right
            absent += hit == "none"
        else:
            present += hit == others[0][1]
    p_hit, p_none = llm.p_correct(8, 0.2, few_shot=few_shot, instruction=instruction), llm.p_none(8, few_shot,
                                                                                                   instruction)
    half = trials / 2
    assert abs(present / half - p_hit) < 4 * math.sqrt(p_hit * (1 - p_hit) / half) + 1e-9
    assert abs(absent / half - p_none) < 4 * math.sqrt(p_none * (1 - p_none) / half) + 1e-9


def test_prompt_effects_follow_the_fit_and_a_fit_without_them_ignores_the_prompt(tmp_path):
    fit = json.loads(FIT_PATH.read_text())
    prompt = fit["prompt"]
    for kind in ("present", "absent"):
        assert len(prompt[kind]["shots"]) == 4 and set(prompt[kind]["features"]) == set(FEATURES)
        assert all(se >= 0 for se in prompt[kind]["features_se"].values())
    assert {c["instruction"] for c in prompt["cells"]} == set(prompt["instructions"])
    llm = SimulatedLLM()
    shift = prompt["present"]["shots"][3]  # 3 worked examples against none, on the logit scale
    logit = lambda p: math.log(p / (1 - p))  # noqa: E731
    assert logit(llm.p_correct(8, few_shot=3)) - logit(llm.p_correct(8)) == pytest.approx(shift)
    old = tmp_path / "fit.json"
    old.write_text(json.dumps({k: v for k, v in fit.items() if k != "prompt"}))
    plain = SimulatedLLM(str(old))
    assert plain.p_correct(8, few_shot=3, instruction="") == plain.p_correct(8)
    assert plain.p_none(8, 3, "") == fit["wrong"]["none"]
    assert instruction_features("Answer with the CODE, or none.") == {"has_code": 1.0, "has_none": 1.0, "words": 0.6}
    assert prompt_head(forward_prompt(make_instance(3, 1).records, "x", instruction=" Hi. ", few_shot=2)) == ("Hi.", 2)
    assert prompt_head(forward_prompt(make_instance(3, 1).records, "x", instruction="")) == ("", 0)


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
    # the score is the model's answer checked against the instance's code (one instance: 0 or 1)
    (answer,) = result.metrics["answers"]
    assert result.fitness == float(answer == dom.instances[0].code) and result.scores == [result.fitness]
    assert result.metrics["call_errors"] == 0
    summary = summarize(result.trace)
    assert summary["llm_calls"] == predict_calls(cfg, 4)["llm_calls"] == 4
    assert summary["critical_path"] == 3 and summary["tokens_in"] > 0 and result.metrics["prediction_ok"] is True
    assert "simulated" not in summary["models"] and "SIMULATED" not in result.feedback


def test_the_runs_llm_settings_and_prices_reach_the_retrieval_client_and_price_its_spans():
    prices = normalize_prices({"house-model": (1.0, 2.0)})
    with FakeOpenAI(reply=lambda req: " 1234") as fake:
        pipeline = PipelineLLM(base_url=fake.base_url, model="house-model", api_key_env="QD_TEST_KEY")
        dom = get_domain("retrieval", pipeline_llm=pipeline, llm_prices=prices, n_pairs=4, n_instances=1)
        assert (dom.llm.base_url, dom.llm.model, dom.llm.api_key_env) == (fake.base_url, "house-model", "QD_TEST_KEY")
        result = evaluate_config(dom, config(chunk_size=2, samples=1, aggregation="first_hit", verify=False))
    assert result.status == "ok", result.error
    summary = summarize(result.trace)
    assert summary["llm_calls"] == 2 and summary["unpriced_models"] == []
    assert summary["cost_usd"] == pytest.approx(dom.llm.usage.cost_usd) and summary["cost_usd"] > 0
    # the simulated variant takes the same options and ignores them; [domain.options] win over [llm]
    sim = get_domain("retrieval-sim", pipeline_llm=pipeline, llm_prices=prices, n_pairs=4, n_instances=1)
    own = get_domain("retrieval", pipeline_llm=pipeline, n_pairs=4, n_instances=1, model="set-in-options")
    assert sim.backend == "simulated" and sim.pipeline_llm is pipeline and own.llm.model == "set-in-options"


def test_a_chunks_samples_are_asked_one_after_another_while_chunks_run_in_parallel():
    # A later sample sent only after the one before it was answered finds its prompt in the
    # server's cache; the first request is slow, so a sample sent alongside it would show.
    answered: dict[str, list[float]] = collections.defaultdict(list)
    lock, replies = threading.Lock(), itertools.count()

    def reply(req):
        time.sleep(0.3 if next(replies) == 0 else 0.02)
        with lock:
            answered[json.dumps(req.get("prompt") or req.get("messages"))].append(time.monotonic())
        return " 1234"

    with FakeOpenAI(reply=reply) as fake:
        pipeline = PipelineLLM(base_url=fake.base_url, model="house-model")
        dom = get_domain("retrieval", pipeline_llm=pipeline, n_pairs=8, n_instances=1, cache=False)
        result = evaluate_config(dom, config(chunk_size=2, samples=3, aggregation="first_hit", verify=False))
    assert result.status == "ok", result.error
    sent: dict[str, list[float]] = collections.defaultdict(list)
    for r in fake.requests:
        sent[json.dumps(r["body"].get("prompt") or r["body"].get("messages"))].append(r["time"])
    assert sorted(len(times) for times in sent.values()) == [3, 3, 3, 3]  # 4 chunks, 3 samples each
    for prompt, times in sent.items():
        times, done = sorted(times), sorted(answered[prompt])
        assert all(times[k] >= done[k - 1] for k in range(1, 3)), prompt
    assert fake.max_inflight >= 2  # the chunks themselves still overlap


# -- the default job (`qd run` with no config) and its summary ---------------------------------------
DEMO_OPTIONS = {k: v for k, v in DEMO_CONFIG["domain"]["options"].items() if k != "cache"}


def test_demo_space_sampled_configs_trace_what_static_analysis_predicts():
    dom = RetrievalDomain(backend="simulated", **DEMO_OPTIONS)
    (x_low, x_high), (y_low, y_high) = DEMO_CONFIG["archive"]["ranges"]
    fns = resolve_measures(DEMO_CONFIG["archive"]["measures"], dom)
    rng = np.random.default_rng(3)
    seen_calls = set()
    for _ in range(60):
        cfg = dom.space.sample(rng)
        assert cfg["samples"] <= 3 and cfg["few_shot"] <= 2
        result = evaluate_config(dom, cfg)
        summary = summarize(result.trace)
        predicted = dom.predict(cfg)
        assert summary["llm_calls"] == predicted["llm_calls"] * dom.n_instances
        assert summary["critical_path"] == predicted["critical_path"]
        log2_calls = fns[0](cfg, result)
        assert log2_calls == pytest.approx(math.log2(predicted["llm_calls"]))
        assert x_low <= log2_calls < x_high  # the demo's x range holds every configuration
        seen_calls.add(predicted["llm_calls"])
    assert max(seen_calls) <= 3 * 8 + 2 and len(seen_calls) >= 8
    with pytest.raises(ValueError, match="max_samples"):
        RetrievalDomain(backend="simulated", max_samples=9)
    with pytest.raises(ValueError, match="max_few_shot"):
        RetrievalDomain(backend="simulated", max_few_shot=0)


def _grid(elites):
    archive = GridArchive(dims=[5, 5], ranges=[[0, 5], [0, 100]], measure_names=["calls", "tokens"],
                          objective_name="accuracy")
    for i, (acc, calls, tokens) in enumerate(elites):
        archive.add([{"i": i}], [acc], [[calls, tokens]], id=[i])
    return archive


def test_spanning_elites_pick_best_cheapest_near_best_and_the_front():
    archive = _grid([(0.25, 0.5, 90),   # 0: cheapest overall, poor
                     (0.5, 1.5, 70),    # 1: front step
                     (1.0, 4.5, 10),    # 2: best, expensive, short prompts
                     (1.0, 3.5, 50),    # 3: best too, fewer calls -> "best" by the tie-break
                     (0.95, 2.5, 90),   # 4: near-best with the fewest calls
                     (0.75, 3.5, 30)])  # 5: off the front (4 is cheaper and better)
    picks = _spanning_elites(archive, "accuracy")
    by_id = {int(e["id"]): label for label, e in picks}
    assert by_id[3] == "best accuracy"
    assert by_id[4] == "lowest calls, accuracy >= 0.9"
    assert by_id[2] == "lowest tokens, accuracy >= 0.9"
    assert by_id[0] == by_id[1] == "calls vs accuracy front"
    assert 5 not in by_id and [int(e["id"]) for _, e in picks] == [3, 4, 2, 0, 1]
    assert _spanning_elites(_grid([]), "accuracy") == []
    one = _spanning_elites(_grid([(0.5, 1.0, 10)]), "accuracy")
    assert len(one) == 1 and one[0][0].startswith("best accuracy; lowest calls")


def test_demo_job_on_the_simulated_backend_prints_the_trade_off(tmp_path, capsys, ray_session):
    raw = copy.deepcopy(DEMO_CONFIG)
    raw["domain"] = {"name": "retrieval-sim", "options": DEMO_OPTIONS}
    raw["operators"] = {"mutation": 1.0}  # the LLM operators are exercised by the slow test below
    raw["run"].update(evaluations=80, init_random=20)
    path = tmp_path / "demo-sim.toml"
    path.write_text(dump_config(resolve_config(raw)))
    assert main(["run", str(path), "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "best accuracy" in out and "lowest log2_calls, accuracy >= " in out and "chunk_size=" in out
    assert (tmp_path / "run" / "heatmap.png").stat().st_size > 5000
    status = run_status(tmp_path / "run")
    assert status["evaluations"] == 80 and status["statuses"]["ok"] == 80 and status["num_elites"] >= 4
    # the printed elites are the archive's: the cheapest near-best one has the fewest calls among them
    archive = open_run(tmp_path / "run").archive
    picks = dict(_spanning_elites(archive, "accuracy"))
    assert all(f"(id {e['id']})" in out for e in picks.values())
    label = next(k for k in picks if "lowest log2_calls" in k)
    cutoff = float(label.rsplit(">= ", 1)[1].split(";")[0])
    near_best = [e["measures"][0] for e in archive.top() if e["objective"] >= cutoff]
    assert picks[label]["measures"][0] == min(near_best)
    # `qd elites --traces` writes the traces the run stored; `--rerun` runs the elites again: the same calls
    store = open_run(tmp_path / "run").store
    rows = {r.id: r for r in store.evaluations()}
    assert main(["elites", str(tmp_path / "run"), "--top", "2", "--traces", str(tmp_path / "traces")]) == 0
    records = json.loads(capsys.readouterr().out)
    assert len(records) == 2
    for record in records:
        trace = json.loads((tmp_path / "traces" / f"elite-{record['id']}.json").read_text())
        assert trace["meta"]["config"] == record["config"] and trace["meta"]["source"] == "stored"
        assert [{k: v for k, v in s.items() if k != "rel_start_s"} for s in trace["spans"]] == store.trace(record["id"])
        assert {k: v for k, v in trace["summary"].items() if v} == rows[record["id"]].trace_summary  # stored: non-zero
    assert main(["elites", str(tmp_path / "run"), "--top", "2", "--rerun", "--traces", str(tmp_path / "rerun")]) == 0
    for record in json.loads(capsys.readouterr().out):
        trace = json.loads((tmp_path / "rerun" / f"elite-{record['id']}.json").read_text())
        assert trace["meta"]["config"] == record["config"] and trace["meta"]["rerun_status"] == "ok"
        assert trace["summary"]["llm_calls"] == rows[record["id"]].trace_summary["llm_calls"] > 0


def test_export_elite_traces_replays_the_configuration(tmp_path):
    cfgs = [config(aggregation="majority", verify=False), config(samples=1, chunk_size=12)]
    elites = [{"id": 7 + i, "objective": 0.5, "measures": [0.0], "solution": c} for i, c in enumerate(cfgs)]
    paths = export_elite_traces(SIM, elites, tmp_path / "traces")
    assert [p.name for p in paths] == ["elite-7.json", "elite-8.json"]
    for path, cfg in zip(paths, cfgs):
        data = json.loads(path.read_text())
        assert data["meta"]["config"] == cfg and data["meta"]["rerun_status"] == "ok"
        assert data["summary"]["llm_calls"] == predict_calls(cfg, 12)["llm_calls"] * SIM.n_instances
        assert len(data["spans"]) == data["summary"]["spans"] and all("rel_start_s" in s for s in data["spans"])


@pytest.mark.slow
def test_demo_job_says_which_operators_it_uses_and_why_the_llm_ones_are_off(tmp_path, monkeypatch, capsys):
    # The README's main job itself (`qd run`, no config: the real retrieval pipeline on the embedded
    # model), budget cut to 8: it says which operators it uses before it starts, and makes no operator call.
    monkeypatch.setenv("QD_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["run", "--out", str(tmp_path / "demo"), "--evals", "8", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert demo_operators_note(resolve_config(DEMO_CONFIG)) in err
    assert "the LLM operators (lmx, llm_mutation) are off" in err
    status = run_status(tmp_path / "demo")
    assert status["evaluations"] == 8 and set(status["operators"]) <= {"random", "mutation", "uniform_crossover",
                                                                       "resample", "seed", "fallback"}
    assert not status["llm"]["by_operator"], status["llm"]  # the model served the pipeline only


@pytest.mark.slow
def test_the_main_jobs_pipeline_with_llm_operators_reaches_them_on_the_embedded_model(tmp_path, monkeypatch, capsys):
    # The README's main job (the demo config: the real retrieval pipeline on the embedded model),
    # budget cut to 10: its 6 random configurations, then operators, here the LLM ones only (the
    # job's own are classic) and noise handling off: otherwise the 4 evaluations left could all go
    # to re-evaluations, and whether an LLM operator ran would be chance.
    monkeypatch.setenv("QD_CACHE_DIR", str(tmp_path / "cache"))
    assert DEMO_CONFIG["run"]["init_random"] < 10
    demo = copy.deepcopy(DEMO_CONFIG)
    demo["operators"] = {"lmx": 0.5, "llm_mutation": 0.5}
    demo["archive"]["noise"] = "none"
    (tmp_path / "demo.toml").write_text(dump_config(resolve_config(demo)))
    assert main(["run", str(tmp_path / "demo.toml"), "--out", str(tmp_path / "demo"), "--evals", "10",
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "best accuracy" in out and (tmp_path / "demo" / "heatmap.png").exists()
    status = run_status(tmp_path / "demo")
    assert status["domain"] == "retrieval" and status["evaluations"] == 10 and status["statuses"]["ok"] == 10
    rows = list(open_run(tmp_path / "demo").store.evaluations())
    assert all(r.metrics["prediction_ok"] is True and r.metrics["simulated"] is False for r in rows)
    assert sum(r.operator != "random" for r in rows) == 4
    # the LLM operators ran on the embedded model: their calls are counted per operator
    llm_ops = {"lmx", "llm_mutation"}
    calls = {op: u["calls"] for op, u in status["llm"]["by_operator"].items() if op in llm_ops}
    assert sum(calls.values()) > 0, status["llm"]
    assert sum(status["operators"][op]["offspring"] for op in llm_ops if op in status["operators"]) > 0
