"""Issue 11 item 2: a malformed result or span from user code becomes an `error` evaluation naming
the field, and the search goes on (it used to stop with TypeError / IntegrityError)."""
import math

import numpy as np
import pytest

from qd.analysis.descriptors import resolve_measures
from qd.archives import GridArchive
from qd.domains.arm import ArmDomain
from qd.evaluation import evaluate_config
from qd.evaluators import SerialEvaluator
from qd.operators.classic import Mutation
from qd.result import EvalResult, MalformedResult, check_result, check_span
from qd.search import Search
from qd.store import RunStore

FAULTS = ["fitness_none", "feedback_none", "span_tokens_none", "measure_str", "fitness_str", "trace_not_list",
          "span_not_dict", "scores_none_entry", "span_input_bytes"]


class SloppyArm(ArmDomain):
    """The arm, returning one malformed result per fault, picked by the first angle."""

    name = "sloppy-arm"

    def evaluate(self, config: dict) -> EvalResult:
        good = super().evaluate(config)
        fault = self.fault(config)
        if fault == "fitness_none":
            good.fitness = None
        elif fault == "feedback_none":
            good.feedback = None
        elif fault == "span_tokens_none":
            good.trace = [{"id": 0, "kind": "llm", "name": "ask", "tokens_in": None, "tokens_out": 3}]
        elif fault == "measure_str":
            good.measures = {"x": "far"}
        elif fault == "fitness_str":
            good.fitness = "0.5"
        elif fault == "trace_not_list":
            good.trace = "spans"
        elif fault == "span_not_dict":
            good.trace = [("llm", 3)]
        elif fault == "scores_none_entry":
            good.scores = [1.0, None]
        elif fault == "span_input_bytes":
            good.trace = [{"id": 0, "kind": "llm", "name": "ask", "input": b"raw prompt", "output": "ok"}]
        return good

    @staticmethod
    def fault(config):
        bucket = int((config["angles"][0] + math.pi) * 1e6) % (2 * len(FAULTS))
        return FAULTS[bucket] if bucket < len(FAULTS) else None


EXPECTED = {
    "fitness_none": "objective must be a number (NaN when there is none), got None",
    "feedback_none": "feedback must be a string, got None",
    "span_tokens_none": "trace[0].tokens_in must be an integer >= 0, got None",
    "measure_str": "measures['x'] must be a number, got 'far'",
    "fitness_str": "objective must be a number (NaN when there is none), got '0.5'",
    "trace_not_list": "trace must be a list of spans, got 'spans'",
    "span_not_dict": "trace[0] must be a dict (a Span), got ('llm', 3)",
    "scores_none_entry": "scores[1] must be a number, got None",
    "span_input_bytes": "trace[0].input must be a string (the prompt text), got b'raw prompt'",
}


@pytest.mark.parametrize("fault", FAULTS)
def test_each_malformed_field_becomes_an_error_naming_it(fault):
    domain = SloppyArm(joints=4)
    for seed in range(10_000):  # find a configuration that triggers this fault
        config = domain.space.sample(np.random.default_rng(seed))
        if domain.fault(config) == fault:
            break
    result = evaluate_config(domain, config)
    assert result.status == "error"
    assert "malformed result from SloppyArm.evaluate" in result.error
    assert EXPECTED[fault] in result.error


def test_a_search_over_malformed_results_finishes_and_stores_every_one(tmp_path):
    domain = SloppyArm(joints=4)
    archive = GridArchive(dims=[10, 10], ranges=domain.default_ranges, measure_names=["x", "y"],
                          qd_score_offset=domain.qd_score_offset)
    with RunStore(tmp_path / "run.sqlite") as store:
        search = Search(domain, archive, SerialEvaluator(domain), operators={"mutation": (Mutation(domain.space), 1.0)},
                        measures=resolve_measures(["x", "y"], domain), budget=200, store=store, init_random=20,
                        seed=1)
        with search:
            search.run()
        rows = list(store.evaluations())
    assert len(rows) == 200
    errors = [r for r in rows if r.status == "error"]
    assert {f for r in errors for f, text in EXPECTED.items() if text in r.error} == set(FAULTS)
    assert all(r.status == "ok" for r in rows if domain.fault(r.config) is None)
    assert archive.stats.num_elites > 0


def test_numpy_numbers_are_accepted_as_plain_floats():
    result = check_result(EvalResult(fitness=np.float32(0.5), measures={"x": np.int64(3)}, scores=[np.float64(1)]))
    assert type(result.fitness) is float and result.measures == {"x": 3.0} and type(result.scores[0]) is float


def test_a_span_keeps_unknown_keys_and_rejects_a_bool_token_count():
    assert check_span({"kind": "llm", "tokens_in": 3, "custom": "x"})["custom"] == "x"
    with pytest.raises(MalformedResult, match=r"trace\[2\]\.tokens_in must be an integer >= 0, got True"):
        check_span({"tokens_in": True}, 2)
    with pytest.raises(MalformedResult, match=r"status must be one of ok, invalid"):
        check_result(EvalResult(fitness=1.0, status="fine"))


class TracedArm(ArmDomain):
    """The arm as a domain that may call LLMs or tools: evaluated under a tracer."""

    makes_calls = True


class BrokenArm(ArmDomain):
    def evaluate(self, config: dict) -> EvalResult:
        raise RuntimeError("joint seized")


def test_a_domain_that_makes_no_calls_is_evaluated_as_under_a_tracer():
    """The arm declares makes_calls = False and skips the tracer: same results, same failures."""
    assert ArmDomain.makes_calls is False and TracedArm.makes_calls is True
    plain, traced = ArmDomain(joints=5), TracedArm(joints=5)
    for seed in range(20):
        config = plain.space.sample(np.random.default_rng(seed))
        a, b = evaluate_config(plain, config), evaluate_config(traced, config)
        assert (a.status, a.fitness, a.measures, a.feedback, a.trace, a.error) == \
               (b.status, b.fitness, b.measures, b.feedback, b.trace, b.error)
        assert set(a.metrics) == set(b.metrics) == {"eval_s"}
    for broken in (BrokenArm(joints=3), type("TracedBrokenArm", (BrokenArm,), {"makes_calls": True})(joints=3)):
        result = evaluate_config(broken, {"angles": [0.0, 0.0, 0.0]})
        assert result.status == "error" and result.error == "RuntimeError: joint seized"
        assert "joint seized" in result.metrics["traceback"]


def test_a_plain_result_is_returned_as_it_is_and_any_other_converted():
    plain = EvalResult(fitness=0.5, measures={"x": 1.0})
    assert check_result(plain) is plain
    for other in (EvalResult(fitness=1, measures={"x": 1.0}), EvalResult(fitness=0.5, measures={"x": np.float64(1)}),
                  EvalResult(fitness=0.5, trace=({"kind": "llm"},)), EvalResult(fitness=0.5, scores=[1])):
        checked = check_result(other)
        assert checked is not other and type(checked.fitness) is float and type(checked.trace) is list
        assert all(type(v) is float for v in checked.measures.values())
