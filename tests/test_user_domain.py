"""A user's own system: a domain in a few lines, found from the working directory, run with `qd run`."""
from __future__ import annotations

import json
import math
import sys
import textwrap
import threading
import time
import warnings

import pytest
from counting_openai import CountingOpenAI
from hypothesis import given, settings
from hypothesis import strategies as st

import qd
from qd.cli import main
from qd.domain import VALIDATION, evaluate_draw
from qd.domains import get_domain
from qd.evaluation import evaluate_config
from qd.evaluators import SerialEvaluator
from qd.operators import CLASSIC
from qd.references import UnresolvedReference, resolve_reference
from qd.space import Categorical, Float, Int, Space

SPACE = Space({"k": Int(0, 10)})


def test_objective_is_the_mean_and_every_example_score_is_kept():
    domain = qd.FunctionDomain(SPACE, [1, 2, 3, 4], lambda config, ex: float(config["k"] >= ex))
    result = evaluate_config(domain, {"k": 2})
    assert result.status == "ok" and result.fitness == 0.5 and result.scores == [1.0, 1.0, 0.0, 0.0]
    assert result.metrics["failed_examples"] == 0


BAD = {1: ValueError("boom"), 2: None, 3: float("nan"), 4: "0.9", 5: float("inf")}


def flaky_score(config: dict, example: int) -> float:
    if example in BAD:
        bad = BAD[example]
        if isinstance(bad, Exception):
            raise bad
        return bad  # type: ignore[return-value]
    return 1.0


def test_bad_scores_count_zero_and_are_reported_with_their_index():
    domain = qd.FunctionDomain(SPACE, list(range(8)), flaky_score)
    result = evaluate_config(domain, {"k": 1})
    assert result.status == "ok" and result.scores == [1.0, 0, 0, 0, 0, 0, 1.0, 1.0]
    assert result.fitness == pytest.approx(3 / 8)
    errors = {e["index"]: e["error"] for e in result.metrics["example_errors"]}
    assert sorted(errors) == [1, 2, 3, 4, 5] and result.metrics["failed_examples"] == 5
    assert "ValueError: boom" in errors[1] and "NoneType" in errors[2] and "nan" in errors[3]
    assert "str '0.9'" in errors[4] and "#1: raised ValueError" in result.feedback


def said(config: dict, example: int):
    """GEPA-style feedback metric: the score with what went wrong."""
    if config["k"] >= example:
        return 1.0, ""
    return 0.0, f"k={config['k']} is below {example}"


class Scored:
    def __init__(self, score, feedback):
        self.score, self.feedback = score, feedback


@pytest.mark.parametrize("score", [
    said,
    lambda config, ex: Scored(*said(config, ex)),
    lambda config, ex: __import__("dspy").Prediction(score=said(config, ex)[0], feedback=said(config, ex)[1]),
], ids=["pair", "object", "dspy.Prediction"])
def test_a_score_with_a_feedback_text_reaches_the_evaluations_feedback(score):
    domain = qd.FunctionDomain(SPACE, [1, 2, 3, 4, 5, 6, 7], score, concurrency=2)
    result = evaluate_config(domain, {"k": 2})
    assert result.status == "ok" and result.scores == [1.0, 1.0, 0, 0, 0, 0, 0]
    assert result.metrics["failed_examples"] == 0  # a text is not an error
    lines = result.feedback.split("\n")
    assert lines[0].startswith("mean score 0.2857 over 7 examples")
    assert lines[1:] == [f"#{i} (score 0): k=2 is below {i + 1}" for i in (2, 3, 4, 5)]  # lowest scores, four
    assert "below" not in evaluate_config(domain, {"k": 9}).feedback  # nothing went wrong: nothing said


async def said_async(config: dict, example: int):
    return said(config, example)


def test_an_async_score_with_a_feedback_text():
    result = evaluate_config(qd.FunctionDomain(SPACE, [1, 5], said_async), {"k": 3})
    assert result.scores == [1.0, 0.0] and result.feedback.split("\n")[1] == "#1 (score 0): k=3 is below 5"


def test_a_search_over_a_flaky_score_function_goes_on():
    domain = qd.FunctionDomain(SPACE, list(range(8)), flaky_score)
    archive = qd.GridArchive(dims=[5], ranges=[(0, 10)], measure_names=["k"])
    with qd.Search(domain, archive, SerialEvaluator(domain), operators={"mutation": (CLASSIC["mutation"](SPACE), 1.0)},
                   measures=[lambda config, result: float(config["k"])], budget=8, init_random=4,
                   progress=False) as search:
        search.run()
    assert archive.stats.num_elites >= 1 and archive.stats.obj_max == pytest.approx(3 / 8)


def test_examples_run_concurrently_up_to_the_bound():
    lock, running, peak = threading.Lock(), [0], [0]

    def score(config: dict, example: int) -> float:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.1)
        with lock:
            running[0] -= 1
        return 1.0

    domain = qd.FunctionDomain(SPACE, list(range(12)), score, concurrency=3)
    assert evaluate_config(domain, {"k": 0}).fitness == 1.0 and 1 < peak[0] <= 3  # concurrent, never past the bound


def test_an_async_score_function_and_the_validation_split():
    async def score(config: dict, example: int) -> float:
        return float(config["k"] == example)

    domain = qd.FunctionDomain(SPACE, [1, 2], score, validation=[3, 3, 4])
    assert evaluate_config(domain, {"k": 1}).fitness == 0.5
    held_out = evaluate_draw(domain, {"k": 3}, 0, VALIDATION)
    assert held_out.scores == [1.0, 1.0, 0.0] and domain.splits == ("search", "validation")


def test_sampled_draws_use_fresh_subsets():
    domain = qd.FunctionDomain(SPACE, list(range(20)), lambda c, ex: float(ex), sample=5)
    first, again, other = (evaluate_draw(domain, {"k": 0}, d).scores for d in (0, 0, 1))
    assert first == again and first != other and len(first) == 5


def test_numbers_of_any_numeric_type_are_scores_and_arrays_of_several_are_not():
    import decimal

    import numpy as np

    values = [np.bool_(True), np.float32(0.5), np.int64(2), np.array(0.25), decimal.Decimal("0.75"), True,
              np.array([1.0, 2.0])]
    result = evaluate_config(qd.FunctionDomain(SPACE, list(range(len(values))), lambda c, i: values[i]), {"k": 0})
    assert result.scores == [1.0, 0.5, 2.0, 0.25, 0.75, 1.0, 0.0]
    assert [e["index"] for e in result.metrics["example_errors"]] == [6]


def test_an_object_with_an_async_call_is_awaited():
    class Judge:
        async def __call__(self, config: dict, example: int) -> float:
            return float(config["k"] == example)

    result = evaluate_config(qd.FunctionDomain(SPACE, [1, 2], Judge()), {"k": 2})
    assert result.scores == [0.0, 1.0] and result.metrics["failed_examples"] == 0


def test_function_domain_rejects_what_it_cannot_run():
    with pytest.raises(ValueError, match="examples is empty"):
        qd.FunctionDomain(SPACE, [], lambda c, e: 1.0)
    with pytest.raises(ValueError, match=r"examples must be a list .* got generator: wrap it in list"):
        qd.FunctionDomain(SPACE, (i for i in range(3)), lambda c, e: 1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"measures: 'llm_call' is not a built-in descriptor \(did you mean "
                                         r"'llm_calls'\?\)"):
        qd.FunctionDomain(SPACE, [1], lambda c, e: 1.0, measures={"llm_call": (0, 10)})
    with pytest.raises(ValueError, match=r"measures\['llm_calls'\] = \(5, 1\): the range needs finite low < high"):
        qd.FunctionDomain(SPACE, [1], lambda c, e: 1.0, measures={"llm_calls": (5, 1)})
    with pytest.raises(ValueError, match="bins must be an integer >= 1"):
        qd.FunctionDomain(SPACE, [1], lambda c, e: 1.0, measures={"llm_calls": (0, 4)}, bins=0)
    with pytest.raises(TypeError, match="score must be a function"):
        qd.FunctionDomain(SPACE, [1], "score")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"sample must be in \[1, 2\]"):
        qd.FunctionDomain(SPACE, [1, 2], lambda c, e: 1.0, sample=3)


# -- references from the working directory ---------------------------------------------------------
USER_MODULE = '''
import qd
from qd import Categorical, Float, Space

QUESTIONS = [f"question {i}" for i in range(4)]


def score(config, question):
    llm = qd.pipeline_llm()
    reply = llm.openai_client(max_retries=0).chat.completions.create(
        model=llm.model, temperature=config["temperature"],
        messages=[{"role": "system", "content": config["style"]}, {"role": "user", "content": question}])
    return float("fine" in reply.choices[0].message.content)


space = Space({"style": Categorical(["Answer briefly.", "Answer at length, step by step."]),
               "temperature": Float(0.0, 1.0)})
domain = qd.FunctionDomain(space, QUESTIONS, score, measures={"llm_calls": (0, 8), "tokens_total": (0, 200)})


@qd.function_domain(space, QUESTIONS)
def decorated(config, question):
    return 1.0
'''


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    """A working directory holding the user's module (not importable from anywhere else)."""
    name = f"userpipe_{abs(hash(tmp_path)) % 10**8}"
    (tmp_path / f"{name}.py").write_text(USER_MODULE)
    monkeypatch.chdir(tmp_path)
    yield tmp_path, name
    sys.modules.pop(name, None)


def test_a_reference_resolves_from_the_working_directory(user_dir):
    _, name = user_dir
    domain = get_domain(f"{name}:domain")
    assert isinstance(domain, qd.FunctionDomain) and domain.source_modules == (name,)
    decorated = resolve_reference(f"{name}:decorated", "domain")
    import pickle

    assert pickle.loads(pickle.dumps(decorated)).score.__name__ == "decorated"  # pickles by reference


def test_unresolvable_references_name_the_module_the_places_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UnresolvedReference, match=r"no module 'nosuchmod' \(looked for nosuchmod.py .* current "
                                                  r"directory .*Fix: run qd from the directory"):
        get_domain("nosuchmod:Thing")
    (tmp_path / "needsdep_x1.py").write_text("import not_installed_pkg_x\n")
    with pytest.raises(UnresolvedReference, match="was found but importing it failed.*not_installed_pkg_x"):
        get_domain("needsdep_x1:Thing")
    (tmp_path / "hasattrs_x1.py").write_text("class Mine: pass\n")
    with pytest.raises(UnresolvedReference, match=r"has no attribute 'Thing' \(it has: Mine\)"):
        get_domain("hasattrs_x1:Thing")
    with pytest.raises(UnresolvedReference, match="expected 'package.module:attribute'"):
        resolve_reference("a.b:", "descriptor")
    for name in ("needsdep_x1", "hasattrs_x1"):
        sys.modules.pop(name, None)


def _run_config(path, name: str, base_url: str, backend: str, mode: str = "task", evaluations: int = 6) -> None:
    path.write_text(textwrap.dedent(f"""
        [run]
        name = "user"
        evaluations = {evaluations}
        init_random = 3
        plot = false
        [domain]
        name = "{name}:domain"
        [operators]
        mutation = 1.0
        [llm]
        base_url = "{base_url}"
        model = "gpt-4o-mini"
        pipeline_model = "house-model"
        [llm.prices]
        house-model = [1.0, 2.0]
        [evaluator]
        backend = "{backend}"
        mode = "{mode}"
    """))


@pytest.mark.parametrize("backend", ["serial", "ray"])
def test_qd_run_on_a_module_in_the_working_directory_reports_the_pipeline_spend(user_dir, backend, request, capsys):
    if backend == "ray":
        request.getfixturevalue("ray_session")
    tmp, name = user_dir
    with CountingOpenAI() as server:
        _run_config(tmp / "run.toml", name, server.base_url, backend)
        assert main(["run", "run.toml", "--out", "out", "--no-progress"]) == 0
        served = server.served()
        models = {e["path"] for e in server.log}
    capsys.readouterr()
    assert main(["status", "out", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["evaluations"] == 6 and status["statuses"]["ok"] == 6
    pipeline = status["spend"]["pipeline"]
    assert pipeline["calls"] == served["calls"] == 6 * 4 and models == {"/v1/chat/completions"}
    assert (pipeline["tokens_in"], pipeline["tokens_out"]) == (served["tokens_in"], served["tokens_out"])
    assert pipeline["cost_usd"] == pytest.approx((served["tokens_in"] + 2 * served["tokens_out"]) / 1e6)
    assert pipeline["unpriced_models"] == [] and pipeline["untraced_calls"] == 0
    assert status["spend"]["operators"]["calls"] == 0 and status["spend"]["total"]["calls"] == 24
    assert main(["status", "out"]) == 0
    assert "spend pipeline: calls 24" in capsys.readouterr().out


def test_status_names_unpriced_models(user_dir, capsys):
    tmp, name = user_dir
    with CountingOpenAI() as server:
        _run_config(tmp / "run.toml", name, server.base_url, "serial", evaluations=3)
        text = (tmp / "run.toml").read_text().replace('pipeline_model = "house-model"', 'pipeline_model = "other-7b"')
        (tmp / "run.toml").write_text(text)
        assert main(["run", "run.toml", "--out", "out", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["status", "out"]) == 0
    out = capsys.readouterr().out
    assert "UNPRICED models other-7b" in out
    assert main(["status", "out", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["spend"]["pipeline"]["unpriced_models"] == ["other-7b"]
    assert status["spend"]["pipeline"]["cost_usd"] == 0 and not math.isnan(status["spend"]["total"]["cost_usd"])


def test_pipeline_llm_outside_an_evaluation_is_the_default():
    with pytest.warns(UserWarning, match=r"outside an evaluation gives the default endpoint .* not a run's \[llm\]"):
        default = qd.pipeline_llm()
    assert default.model == "gemma-3-270m" and default.is_local
    domain = qd.FunctionDomain(Space({"x": Float(0, 1), "c": Categorical(["a"])}), [0], lambda c, e: 1.0)
    domain.pipeline_llm = qd.PipelineLLM(base_url="http://127.0.0.1:9/v1", model="m")
    seen = []
    domain.score = lambda c, e: seen.append(qd.pipeline_llm().model) or 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # inside an evaluation: the run's endpoint, and no warning
        evaluate_config(domain, {"x": 0.5, "c": "a"})
    assert seen == ["m"]


UNTRACED_MODULE = '''
import queue
import threading

import openai

import qd
from qd.analysis import Tracer

jobs, done = queue.Queue(), queue.Queue()


def worker():  # a thread no evaluation started
    while True:
        url = jobs.get()
        openai.OpenAI(base_url=url, api_key="k").chat.completions.create(
            model="m", messages=[{"role": "user", "content": "from a foreign thread"}])
        done.put(1)


threading.Thread(target=worker, daemon=True).start()


def score(config, example):
    with Tracer():  # a second open tracer: nobody can tell whose the worker's call is
        jobs.put(qd.pipeline_llm().base_url)
        done.get(timeout=60)
    return 1.0


domain = qd.FunctionDomain(qd.Space({"k": qd.Int(0, 9)}), [0], score, measures={"llm_calls": (0, 4)})
'''


def test_status_counts_untraced_calls(tmp_path, monkeypatch, capsys):
    name = f"untraced_{abs(hash(tmp_path)) % 10**8}"
    (tmp_path / f"{name}.py").write_text(UNTRACED_MODULE)
    monkeypatch.chdir(tmp_path)
    try:
        with CountingOpenAI() as server:
            _run_config(tmp_path / "run.toml", name, server.base_url, "serial", evaluations=3)
            assert main(["run", "run.toml", "--out", "out", "--no-progress"]) == 0
            assert server.served()["calls"] == 3
        capsys.readouterr()
        assert main(["status", "out", "--json"]) == 0
        pipeline = json.loads(capsys.readouterr().out)["spend"]["pipeline"]
        assert (pipeline["calls"], pipeline["untraced_calls"]) == (0, 3) and pipeline["untraced_tokens"] > 0
        assert main(["status", "out"]) == 0
        assert "untraced calls 3" in capsys.readouterr().out
    finally:
        sys.modules.pop(name, None)


def test_llm_settings_reach_the_pipeline_with_its_own_model():
    from qd.llm.pipeline import PipelineLLM

    llm = {"base_url": "http://127.0.0.1:9/v1", "model": "operators-model", "api_key_env": "MY_KEY",
           "pipeline_model": "pipeline-model", "pipeline_base_url": ""}
    pipeline = PipelineLLM.from_config(llm)
    assert (pipeline.base_url, pipeline.model, pipeline.api_key_env) == ("http://127.0.0.1:9/v1", "pipeline-model",
                                                                         "MY_KEY")
    assert pipeline.litellm_kwargs()["model"] == "openai/pipeline-model"
    retrieval = get_domain("retrieval", pipeline_llm=pipeline, n_pairs=4, n_instances=1)
    assert (retrieval.llm.base_url, retrieval.llm.model) == ("http://127.0.0.1:9/v1", "pipeline-model")
    assert retrieval.pipeline_llm is pipeline
    own = get_domain("retrieval", pipeline_llm=pipeline, n_pairs=4, n_instances=1, model="set-in-options")
    assert own.llm.model == "set-in-options"  # [domain.options] still win


_OUTCOMES = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 5), st.booleans(),
                      st.none(), st.text(max_size=3), st.just(ValueError("x")))


@settings(max_examples=60, deadline=None)
@given(outcomes=st.lists(_OUTCOMES, min_size=1, max_size=12), concurrency=st.integers(1, 4))
def test_any_mix_of_scores_gives_the_mean_of_the_numbers_and_reports_the_rest(outcomes, concurrency):
    def score(config: dict, i: int):
        if isinstance(outcomes[i], Exception):
            raise outcomes[i]
        return outcomes[i]

    result = evaluate_config(qd.FunctionDomain(SPACE, list(range(len(outcomes))), score, concurrency=concurrency),
                             {"k": 0})
    good = [not isinstance(o, (str, Exception, type(None))) and math.isfinite(float(o)) for o in outcomes]
    expected = [float(o) if ok else 0.0 for o, ok in zip(outcomes, good)]
    assert result.status == "ok" and result.scores == expected
    assert result.fitness == pytest.approx(sum(expected) / len(expected))
    reported = [e["index"] for e in result.metrics.get("example_errors", [])]
    assert reported == [i for i, ok in enumerate(good) if not ok][:20]
    assert result.metrics["failed_examples"] == good.count(False)


def test_ray_ships_a_score_module_the_workers_cannot_import(tmp_path, monkeypatch, ray_session, caplog):
    from qd.evaluators import RayEvaluator

    name = f"hidden_{abs(hash(tmp_path)) % 10**8}"
    hidden = tmp_path / "only_the_driver_sees_this"
    hidden.mkdir()
    (hidden / f"{name}.py").write_text(textwrap.dedent('''
        import qd

        def score(config, example):
            return float(config["k"] == example)

        domain = qd.FunctionDomain(qd.Space({"k": qd.Int(0, 3)}), [1, 2], score, uses_llm=False)
    '''))
    monkeypatch.syspath_prepend(str(hidden))  # the driver's sys.path only: Ray workers do not get it
    try:
        domain = get_domain(f"{name}:domain")
        with caplog.at_level("INFO", logger="qd.evaluators.ray_eval"), RayEvaluator(domain, timeout_s=120) as ev:
            ev.submit(0, {"k": 1})
            results = []
            deadline = time.monotonic() + 120
            while not results and time.monotonic() < deadline:
                results = ev.collect(timeout=1.0)
        assert results[0][1].status == "ok" and results[0][1].fitness == 0.5
        assert f"workers cannot import {name}" in caplog.text
    finally:
        sys.modules.pop(name, None)


BROKEN_MODULE = '''
import qd
from qd import Int, Space

space = Space({"k": Int(0, 9)})


def score(config, example):
    raise RuntimeError("my pipeline is broken")


class Crashing(qd.Domain):
    space = space
    default_measures, default_ranges, default_bins = ("llm_calls",), ((0.0, 4.0),), (4,)

    def evaluate(self, config):
        raise KeyError("no such field")


broken = qd.FunctionDomain(space, [1, 2, 3], score, measures={"llm_calls": (0, 4)}, uses_llm=False)
crashing = Crashing()
'''


@pytest.mark.parametrize("attribute, warning, summary", ids=["score-raises", "evaluate-raises"], argvalues=[
    ("broken", "the score function failed on every example of evaluation 0, which scores 0: raised RuntimeError: "
               "my pipeline is broken", "examples the score function failed on (scored 0): 12 of 12"),
    ("crashing", "evaluation 0 failed (error): ", "failed evaluations: 4 of 4 (error 4)"),
])
def test_a_run_whose_pipeline_always_fails_says_so_during_the_run_in_its_summary_and_status(
        tmp_path, monkeypatch, capsys, attribute, warning, summary):
    name = f"brokenpipe_{abs(hash(tmp_path)) % 10**8}"
    (tmp_path / f"{name}.py").write_text(BROKEN_MODULE)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run.toml").write_text(textwrap.dedent(f"""
        [run]
        evaluations = 4
        init_random = 2
        plot = false
        [domain]
        name = "{name}:{attribute}"
        [operators]
        mutation = 1.0
        [evaluator]
        backend = "serial"
    """))
    try:
        assert main(["run", "run.toml", "--out", "out", "--no-progress"]) == 0
        out = capsys.readouterr()
        assert out.err.count("qd: warning: ") == 1 and warning in out.err  # once, at the first failure
        assert summary in out.out
        assert main(["status", "out"]) == 0
        assert summary in capsys.readouterr().out
        assert main(["status", "out", "--json"]) == 0
        failed = json.loads(capsys.readouterr().out)["failures"]
        assert (failed["evaluations"], failed["examples"]) == ((4, 0) if attribute == "crashing" else (0, 12))
    finally:
        sys.modules.pop(name, None)


# -- defects of issue 22 ---------------------------------------------------------------------------
def examples_seen(config: dict, result) -> float:
    """A descriptor a user names as 'module:function' in FunctionDomain(measures=...)."""
    return float(len(result.scores))


def test_a_module_function_measure_of_a_function_domain_is_computed_not_read_from_the_result(monkeypatch):
    from qd.analysis import resolve_measures
    from qd.analysis.measuring import measure_result

    monkeypatch.syspath_prepend(str(__import__("pathlib").Path(__file__).parent))
    name = "test_user_domain:examples_seen"
    domain = qd.FunctionDomain(SPACE, [1, 2, 3], lambda c, e: 1.0, measures={name: (0, 10)})
    result = evaluate_config(domain, {"k": 1})
    values = measure_result({"k": 1}, result, resolve_measures(domain.default_measures, domain),
                            domain.default_measures)
    assert result.status == "ok", result.error
    assert values[name] == 3.0


def test_measures_given_as_a_list_of_names_take_their_ranges_from_the_run_config():
    domain = qd.FunctionDomain(SPACE, [1], lambda c, e: 1.0, measures=["llm_calls", "tokens_total"], bins=4)
    assert domain.default_measures == ("llm_calls", "tokens_total") and domain.default_bins == (4, 4)
    assert domain.default_ranges == ()
    from qd.config import ConfigError, resolve_config
    from qd.runner import resolve_measures_config

    config = resolve_config({"domain": {"name": "x"}})
    with pytest.raises(ConfigError, match=r"archive.ranges is required .*: llm_calls, tokens_total"):
        resolve_measures_config(config, domain)
    config["archive"]["ranges"] = [[0, 8], [0, 400]]
    assert resolve_measures_config(config, domain) == (["llm_calls", "tokens_total"], [[0, 8], [0, 400]], [4, 4])
    with pytest.raises(ValueError, match=r"measures: 'tokens' is not a built-in descriptor"):
        qd.FunctionDomain(SPACE, [1], lambda c, e: 1.0, measures=["llm_calls", "tokens"])


AUTOTRACE_OFF = '''
import warnings
import qd
from qd.evaluation import evaluate_config

seen = []
domain = qd.FunctionDomain(qd.Space({"k": qd.Int(0, 3)}), [0, 1, 2, 3],
                           lambda c, e: seen.append(qd.pipeline_llm().model) or 1.0, concurrency=2, uses_llm=False)
domain.pipeline_llm = qd.PipelineLLM(base_url="http://127.0.0.1:9/v1", model="the-runs-model")
with warnings.catch_warnings():
    warnings.simplefilter("error")
    result = evaluate_config(domain, {"k": 1})
print(result.status, result.metrics["failed_examples"], sorted(set(seen)))
'''


def test_with_autotrace_off_the_example_threads_keep_the_evaluations_pipeline_llm():
    import os
    import subprocess

    done = subprocess.run([sys.executable, "-c", AUTOTRACE_OFF], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "QD_AUTOTRACE": "0"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ok", "0", "['the-runs-model']"]


ASYNC_MODULE = '''
import openai

import qd

client = openai.AsyncOpenAI(base_url="BASE_URL", api_key="sk-test", max_retries=0)  # module level, as the docs do


async def score(config, question):
    reply = await client.chat.completions.create(
        model="gpt-4o-mini", temperature=config["temperature"], messages=[{"role": "user", "content": question}])
    return float("fine" in reply.choices[0].message.content)


domain = qd.FunctionDomain(qd.Space({"temperature": qd.Float(0.0, 1.0)}), ["one", "two", "three"], score,
                           measures={"llm_calls": (0, 8)})
'''


@pytest.mark.parametrize("backend, mode", [("serial", "task"), pytest.param("ray", "task", marks=pytest.mark.slow),
                                           ("ray", "actor")])
def test_a_module_level_async_openai_client_serves_every_evaluation(tmp_path, monkeypatch, backend, mode):
    import subprocess

    name = f"asyncuser_{abs(hash(tmp_path)) % 10**8}"
    monkeypatch.chdir(tmp_path)
    try:
        with CountingOpenAI() as server:
            (tmp_path / f"{name}.py").write_text(ASYNC_MODULE.replace("BASE_URL", server.base_url))
            _run_config(tmp_path / "run.toml", name, server.base_url, backend, mode, evaluations=20)
            if backend == "serial":
                assert main(["run", "run.toml", "--out", "out", "--no-progress"]) == 0
            else:  # as a user starts it: its own Ray, whose workers import the module (a client does not pickle)
                done = subprocess.run([sys.executable, "-c", "import sys; from qd.cli import main; sys.exit(main(["
                                       "'run', 'run.toml', '--out', 'out', '--no-progress', '--workers', '2']))"],
                                      capture_output=True, text=True, timeout=300, cwd=tmp_path)
                assert done.returncode == 0, done.stderr[-2000:]
            served = server.served()
        from qd.store import RunStore

        with RunStore(tmp_path / "out" / "run.sqlite", readonly=True) as store:
            rows = list(store.evaluations())
        assert len(rows) == 20 and all(r.status == "ok" for r in rows)
        failed = [r.feedback for r in rows if r.metrics["failed_examples"]]
        assert not failed, failed[:3]
        assert all(r.fitness == 1.0 for r in rows)
        assert served["calls"] == sum(r.trace_summary["llm_calls"] for r in rows) == 20 * 3
    finally:
        sys.modules.pop(name, None)


def test_an_async_score_runs_when_evaluate_is_called_inside_a_running_loop():
    import asyncio

    async def score(config: dict, example: int) -> float:
        await asyncio.sleep(0.01)
        return float(config["k"] == example)

    domain = qd.FunctionDomain(SPACE, [1, 2], score)

    async def notebook_cell():  # a notebook runs its cells inside a running event loop
        return evaluate_config(domain, {"k": 2})

    result = asyncio.run(notebook_cell())
    assert result.status == "ok", result.error
    assert result.scores == [0.0, 1.0]


def test_uses_llm_is_read_from_the_score_functions_code():
    from qd import pipeline_llm as endpoint

    def ask(question):
        return qd.pipeline_llm().openai_client()

    def via_helper(config, example):
        return ask(example)

    def via_alias(config, example):
        return endpoint().model

    def own_endpoint(config, example):
        import openai

        return openai.OpenAI(base_url="http://127.0.0.1:9/v1", api_key="k")

    assert qd.FunctionDomain(SPACE, [1], via_helper).uses_llm is True
    assert qd.FunctionDomain(SPACE, [1], via_alias).uses_llm is True
    assert qd.FunctionDomain(SPACE, [1], own_endpoint).uses_llm is False
    assert qd.FunctionDomain(SPACE, [1], own_endpoint, uses_llm=True).uses_llm is True  # declared wins


OWN_ENDPOINT_RUN = '''
import json, sys
import openai
import qd
from qd.config import resolve_config
from qd.llm import local
from qd.runner import run_search

client = openai.OpenAI(base_url=sys.argv[1], api_key="k", max_retries=0)


def score(config, question):
    return float(bool(client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": question}]).choices[0].message.content))


domain = qd.FunctionDomain(qd.Space({"k": qd.Int(0, 9)}), ["a", "b"], score, measures={"llm_calls": (0, 4)})
sys.modules["ownendpoint"] = sys.modules["__main__"]
config = resolve_config({"run": {"evaluations": 4, "init_random": 4, "plot": False, "progress": False},
                         "domain": {"name": "ownendpoint:domain"}, "operators": {"mutation": 1.0},
                         "llm": {"base_url": ""}, "evaluator": {"backend": "serial"}})
run = run_search(config, sys.argv[2])
print(json.dumps({"uses_llm": domain.uses_llm, "server": local.local_server() is not None,
                  "ok": run.store.status_counts()["ok"]}))
'''


def test_a_pipeline_calling_its_own_endpoint_starts_no_embedded_model(tmp_path):
    import subprocess

    with CountingOpenAI() as server:
        done = subprocess.run([sys.executable, "-c", OWN_ENDPOINT_RUN, server.base_url, str(tmp_path / "out")],
                              capture_output=True, text=True, timeout=300, cwd=tmp_path)
        served = server.served()
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"uses_llm": False, "server": False, "ok": 4}
    assert served["calls"] == 4 * 2


def test_a_pipeline_llm_sent_to_a_worker_without_a_running_model_warns_before_loading_one_there():
    import subprocess

    code = ("import pickle, warnings; from qd.llm.pipeline import PipelineLLM\n"
            "clone = pickle.loads(pickle.dumps(PipelineLLM()))  # the driver runs no embedded model\n"
            "warnings.simplefilter('error')\n"
            "try:\n    clone.resolved_base_url()\nexcept UserWarning as w:\n    print(w)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "declare uses_llm=True on the domain" in done.stdout, done.stderr
