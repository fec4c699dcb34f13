"""DSPy programs as domains: space from the program, configs back to programs, traced calls, export to DSPy."""
from __future__ import annotations

import json
import sys
import textwrap

import dspy
import numpy as np
import pytest
from counting_openai import CountingOpenAI

import qd
from qd.analysis import summarize
from qd.cli import main
from qd.domains.dspy_program import DSPyDomain, program_slots
from qd.evaluation import evaluate_config
from qd.space import Categorical, Float, Int, Text


class TwoStage(dspy.Module):
    def __init__(self) -> None:
        super().__init__()
        self.draft = dspy.ChainOfThought("question -> draft")
        self.answer = dspy.Predict("question, draft -> answer")

    def forward(self, question: str) -> dspy.Prediction:
        return self.answer(question=question, draft=self.draft(question=question).draft)


TRAIN = [dspy.Example(question=q, answer=a).with_inputs("question")
         for q, a in [("What is 2+2?", "4"), ("Capital of France?", "Paris"), ("Opposite of hot?", "cold")]]
DEMOS = [dspy.Example(question=q, answer=a).with_inputs("question")
         for q, a in [("What is 3+3?", "6"), ("Capital of Italy?", "Rome")]]


def exact(example: dspy.Example, prediction: dspy.Prediction) -> float:
    return float(example.answer.lower() in str(prediction.answer).lower())


def test_the_space_is_derived_from_the_program():
    domain = DSPyDomain(TwoStage(), TRAIN, exact, demoset=DEMOS, models=["a", "b"], max_demos=2)
    space = domain.space
    assert list(space.params) == ["draft", "answer", "temperature", "model"]
    draft = space["draft"]
    assert isinstance(draft["instruction"], Text) and isinstance(draft["demos"], Int)
    assert isinstance(draft["kind"], Categorical) and isinstance(space["temperature"], Float)
    assert draft["instruction"].default() == "Given the fields `question`, produce the fields `draft`."
    assert (draft["demos"].low, draft["demos"].high) == (0, 2)
    assert domain.default_measures == ("llm_calls_per_example", "tokens_total_per_example")
    assert domain.examples == TRAIN and domain.demo_pool == DEMOS
    # without a demoset, the first examples (at most half) are the demos and the rest are scored
    carved = DSPyDomain(TwoStage(), TRAIN, exact, max_demos=2)
    assert carved.demo_pool == TRAIN[:1] and carved.examples == TRAIN[1:]
    assert (carved.space["draft"]["demos"].low, carved.space["draft"]["demos"].high) == (0, 1)
    assert "demos" not in DSPyDomain(TwoStage(), TRAIN[:1], exact).space["draft"].params  # no pool, no demos
    with pytest.raises(ValueError, match="has no dspy.Predict or dspy.ChainOfThought"):
        DSPyDomain(dspy.Module(), TRAIN, exact)


def test_a_config_maps_back_to_a_runnable_program():
    domain = DSPyDomain(TwoStage(), TRAIN, exact, demoset=DEMOS)
    config = {"draft": {"instruction": "Think first.", "demos": 2, "kind": "Predict"},
              "answer": {"instruction": "Answer in one word.", "demos": 0, "kind": "ChainOfThought"},
              "temperature": 0.3}
    assert domain.space.validate(config) == []
    program = domain.program(config)
    slots = {path: module for path, _, _, module in program_slots(program)}
    assert type(slots["draft"]) is dspy.Predict and isinstance(slots["answer"], dspy.ChainOfThought)
    assert slots["draft"].signature.instructions == "Think first." and slots["draft"].demos == DEMOS
    assert slots["answer"].predict.signature.instructions == "Answer in one word."
    assert list(slots["answer"].predict.signature.output_fields) == ["reasoning", "answer"]
    original = {path: type(m) for path, _, _, m in program_slots(domain.base_program)}
    assert original == {"draft": dspy.ChainOfThought, "answer": dspy.Predict}  # the user's program is untouched


def test_evaluation_traces_every_call_and_export_loads_back_into_dspy(tmp_path):
    with CountingOpenAI() as server:
        domain = DSPyDomain(TwoStage(), TRAIN, exact, demoset=DEMOS)
        domain.pipeline_llm = qd.PipelineLLM(base_url=server.base_url, model="gpt-4o-mini")
        config = domain.space.sample(np.random.default_rng(1))
        result = evaluate_config(domain, config)
        served = server.served()
    summary = summarize(result.trace)
    assert result.status == "ok" and len(result.scores) == 3
    assert summary["llm_calls"] == served["calls"] == 6  # two stages x three examples
    assert (summary["tokens_in"], summary["tokens_out"]) == (served["tokens_in"], served["tokens_out"])
    assert {s["via"] for s in result.trace if s["kind"] == "llm"} == {"dspy"} and summary["critical_path"] == 2
    paths = domain.export(config, tmp_path / "elite")
    whole = dspy.load(str(paths["program"]), allow_pickle=True)
    # the state loads into a program of the same structure (same kinds), here with other instructions and no demos
    blank = {**config, **{p: {**config[p], "instruction": "x", "demos": 0} for p in ("draft", "answer")}}
    state_program = domain.program(blank)
    state_program.load(str(paths["state"]))
    for loaded in (whole, state_program):
        got = {p: (m.predict if isinstance(m, dspy.ChainOfThought) else m) for p, _, _, m in program_slots(loaded)}
        for path in ("draft", "answer"):
            assert got[path].signature.instructions == config[path]["instruction"]
            assert len(got[path].demos) == config[path]["demos"]


def exact_with_feedback(example: dspy.Example, prediction: dspy.Prediction) -> dspy.Prediction:
    """A GEPA feedback metric: the score and what the answer should have been."""
    score = exact(example, prediction)
    return dspy.Prediction(score=score, feedback="" if score else f"expected {example.answer}, got {prediction.answer}")


def test_a_metric_returning_a_score_with_feedback_reaches_the_evaluations_feedback():
    with CountingOpenAI() as server:  # answers every field "value of answer": every example is wrong
        domain = DSPyDomain(TwoStage(), TRAIN, exact_with_feedback, demoset=DEMOS)  # every TRAIN example scored
        domain.pipeline_llm = qd.PipelineLLM(base_url=server.base_url, model="gpt-4o-mini")
        result = evaluate_config(domain, domain.space.sample(np.random.default_rng(1)))
    assert result.status == "ok" and result.scores == [0.0, 0.0, 0.0]
    assert "#0 (score 0): expected 4, got value of answer" in result.feedback.split("\n")
    assert "#1 (score 0): expected Paris, got value of answer" in result.feedback.split("\n")


class CountingBuilds(DSPyDomain):
    """Counts the programs and LMs it builds (each still built for real)."""

    def __init__(self, *args, fail_lm: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.built = {"program": 0, "lm": 0}
        self.fail_lm = fail_lm

    def program(self, config):
        self.built["program"] += 1
        return super().program(config)

    def lm(self, config):
        self.built["lm"] += 1
        if self.fail_lm:
            raise RuntimeError("no endpoint for this model")
        return super().lm(config)


def test_one_evaluation_builds_its_program_and_lm_once_for_all_its_examples():
    with CountingOpenAI() as server:
        domain = CountingBuilds(TwoStage(), TRAIN, exact, demoset=DEMOS, concurrency=3)
        domain.pipeline_llm = qd.PipelineLLM(base_url=server.base_url, model="gpt-4o-mini")
        config = domain.space.sample(np.random.default_rng(2))
        result = evaluate_config(domain, config)
        served = server.served()
    assert domain.built == {"program": 1, "lm": 1}
    assert result.status == "ok" and len(result.scores) == 3 and result.metrics["failed_examples"] == 0
    assert summarize(result.trace)["llm_calls"] == served["calls"] == 6  # every example's calls, traced
    # a build that fails is tried once and fails the evaluation with its error (no example runs)
    failing = CountingBuilds(TwoStage(), TRAIN, exact, demoset=DEMOS, fail_lm=True)
    result = evaluate_config(failing, config)
    assert failing.built == {"program": 1, "lm": 1}
    assert result.status == "error" and "RuntimeError: no endpoint for this model" in result.error
    assert not result.scores


DSPY_MODULE = '''
import dspy
from qd.domains.dspy_program import DSPyDomain


class TwoStage(dspy.Module):
    def __init__(self):
        super().__init__()
        self.draft = dspy.Predict("question -> draft")
        self.answer = dspy.Predict("question, draft -> answer")

    def forward(self, question):
        return self.answer(question=question, draft=self.draft(question=question).draft)


def exact(example, prediction):
    return float(example.answer.lower() in str(prediction.answer).lower())


TRAIN = [dspy.Example(question=q, answer=a).with_inputs("question")
         for q, a in [("What is 2+2?", "4"), ("Capital of France?", "Paris")]]
domain = DSPyDomain(TwoStage(), TRAIN, exact, max_tokens=MAX_TOKENS)
'''


def _dspy_run(tmp_path, monkeypatch, base_url: str, evaluations: int, max_tokens: int):
    name = f"dspyuser_{abs(hash(tmp_path)) % 10**8}"
    (tmp_path / f"{name}.py").write_text(DSPY_MODULE.replace("MAX_TOKENS", str(max_tokens)))
    (tmp_path / "run.toml").write_text(textwrap.dedent(f"""
        [run]
        evaluations = {evaluations}
        init_random = {evaluations}
        plot = false
        [domain]
        name = "{name}:domain"
        [operators]
        mutation = 1.0
        [llm]
        base_url = "{base_url}"
        [evaluator]
        backend = "serial"
    """))
    monkeypatch.chdir(tmp_path)
    return name


def _check_elite_loads(tmp_path, capsys):
    assert main(["elites", "out", "--top", "1", "--export", "exported"]) == 0
    (elite,) = json.loads(capsys.readouterr().out)
    program = dspy.load(str(tmp_path / "exported" / f"elite-{elite['id']}" / "program"), allow_pickle=True)
    draft = program.draft.predict if isinstance(program.draft, dspy.ChainOfThought) else program.draft
    assert draft.signature.instructions == elite["config"]["draft"]["instruction"]
    assert type(program.draft).__name__ == elite["config"]["draft"]["kind"]
    return elite


def test_qd_run_on_a_dspy_module_and_elites_export(tmp_path, monkeypatch, capsys):
    with CountingOpenAI() as server:
        name = _dspy_run(tmp_path, monkeypatch, server.base_url, evaluations=4, max_tokens=64)
        try:
            assert main(["run", "run.toml", "--out", "out", "--no-progress"]) == 0
            served = server.served()
            capsys.readouterr()
            assert main(["status", "out", "--json"]) == 0
            status = json.loads(capsys.readouterr().out)
            # 4 evaluations x 2 stages x 1 scored example (of 2: the other is the demo pool)
            assert status["spend"]["pipeline"]["calls"] == served["calls"] == 4 * 2 * 1
            _check_elite_loads(tmp_path, capsys)
        finally:
            sys.modules.pop(name, None)


def test_a_short_search_of_a_real_dspy_program_on_the_embedded_model(tmp_path, monkeypatch, capsys, local_llm):
    # The 270M base model rarely follows DSPy's output format (AdapterParseError): this checks tracing,
    # the map over trace descriptors and the round trip to DSPy, not accuracy.
    name = _dspy_run(tmp_path, monkeypatch, local_llm, evaluations=3, max_tokens=32)
    try:
        assert main(["run", "run.toml", "--out", "out", "--no-progress"]) == 0
        capsys.readouterr()
        assert main(["status", "out", "--json"]) == 0
        status = json.loads(capsys.readouterr().out)
        assert status["evaluations"] == 3 and status["statuses"]["ok"] == 3
        assert status["spend"]["pipeline"]["calls"] >= 3 and status["spend"]["pipeline"]["tokens_in"] > 0
        assert status["num_elites"] >= 1  # placed by llm_calls_per_example x tokens_total_per_example
        _check_elite_loads(tmp_path, capsys)
    finally:
        sys.modules.pop(name, None)


def repeat_shown_answers(req: dict) -> str:
    """A stub model that answers every field with the first value a demo showed for it (answer leakage)."""
    import re

    from counting_openai import dspy_reply

    shown: dict[str, str] = {}
    for message in req.get("messages", [])[:-1]:
        if message.get("role") == "assistant":
            for field, value in re.findall(r"\[\[ ## (\w+) ## \]\]\n(.*?)\n", str(message.get("content")) + "\n"):
                shown.setdefault(field, value)
    reply = dspy_reply(req)
    return re.sub(r"\[\[ ## (\w+) ## \]\]\nvalue of \w+",
                  lambda m: f"[[ ## {m[1]} ## ]]\n{shown.get(m[1], 'value of ' + m[1])}", reply)


LEAKY = [dspy.Example(question=q, answer=a).with_inputs("question")
         for q, a in [("What is 2+2?", "4"), ("Capital of France?", "Paris"), ("Opposite of hot?", "cold"),
                      ("Colour of the sky?", "blue"), ("Legs of a spider?", "eight"), ("Frozen water?", "ice")]]


def test_demos_come_from_examples_the_evaluation_does_not_score():
    with CountingOpenAI(reply=repeat_shown_answers) as server:
        domain = DSPyDomain(TwoStage(), LEAKY, exact, max_demos=3)
        domain.pipeline_llm = qd.PipelineLLM(base_url=server.base_url, model="gpt-4o-mini")
        fitness = {}
        for demos in range(domain.space["answer"]["demos"].high + 1):
            config = {"draft": {"instruction": "Draft.", "demos": 0, "kind": "Predict"},
                      "answer": {"instruction": "Answer.", "demos": demos, "kind": "Predict"}, "temperature": 0.0}
            result = evaluate_config(domain, config)
            assert result.status == "ok" and result.metrics["failed_examples"] == 0, result.metrics
            fitness[demos] = result.fitness
    assert set(fitness) == {0, 1, 2, 3}
    assert all(f == 0.0 for f in fitness.values()), fitness  # repeating a shown answer never scores
