"""qd's own operators and domains pass the contract tests it ships (qd.testing)."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from fake_openai import FakeOpenAI

from qd.analysis.descriptors import BUILTINS
from qd.domains import get_domain
from qd.evaluators import make_evaluator
from qd.function_domain import FunctionDomain
from qd.llm import LLMClient
from qd.operators.classic import CLASSIC
from qd.operators.llm import LLM_OPERATORS
from qd.space import Bool, Categorical, Float, Int, Seq, Space, Text
from qd.testing import DescriptorContract, DomainContract, EvaluatorContract, ListenerContract, OperatorContract

pytest_plugins = ["pytester"]

SPACES = {
    "mixed": Space({
        "temperature": Float(0.0, 2.0),
        "lr": Float(1e-5, 1e-1, log=True),
        "model": Categorical(["small", "large", 3, None]),
        "layers": Seq(Space({"k": Int(1, 8), "verify": Bool(), "xs": Seq(Float(-1, 1), 0, 3)}), 1, 4),
        "instruction": Text(80, default="Answer the question step by step."),
    }),
    "arm": Space({"angles": Seq(Float(-math.pi, math.pi), 20, 20)}),
    "discrete": Space({"model": Categorical(["a", "b", "c"]), "on": Bool(), "n": Int(0, 3)}),
}


class TestClassicOperators(OperatorContract):
    @pytest.fixture(params=[(op, space) for op in sorted(CLASSIC) for space in SPACES], ids="-".join)
    def operator(self, request):
        name, space = request.param
        return CLASSIC[name](SPACES[space])


def _reply(space: Space):
    """A fake model that writes a configuration drawn from the request's seed (so replies follow the rng)."""
    def reply(request: dict) -> str:
        text = json.dumps(space.sample(np.random.default_rng(request["seed"])))
        if "prompt" in request and request["prompt"].endswith('{"'):
            return text[2:]  # LLMMutation's completion template ends with the object's start
        return " " + text
    return reply


@pytest.fixture(scope="module")
def fake():
    with FakeOpenAI(reply=_reply(SPACES["mixed"])) as server:
        yield server


class TestLLMOperators(OperatorContract):
    @pytest.fixture(params=[(name, api) for name in sorted(LLM_OPERATORS) for api in ("completions", "chat")],
                    ids="-".join)
    def operator(self, request, fake):
        name, api = request.param
        client = LLMClient(base_url=fake.base_url, model="m", api=api, retries=0, timeout_s=5.0)
        return LLM_OPERATORS[name](SPACES["mixed"], client)


class TestArm(DomainContract):
    @pytest.fixture
    def domain(self):
        return get_domain("arm", joints=5)


class TestKModule(DomainContract):
    @pytest.fixture
    def domain(self):
        return get_domain("k-module")


class TestRetrievalSim(DomainContract):
    @pytest.fixture
    def domain(self):
        return get_domain("retrieval-sim")


class TestTopics(DomainContract):
    n_samples = 1  # every evaluation asks the embedded model about 8 headlines

    @pytest.fixture
    def domain(self, local_llm):
        return get_domain("topics", base_url=local_llm)


def _closeness(config: dict, example: float) -> float:
    return -abs(config["x"] - example) - 0.1 * config["n"]


class TestFunctionDomain(DomainContract):
    @pytest.fixture
    def domain(self):
        space = Space({"x": Float(0.0, 1.0), "n": Int(0, 3)})
        return FunctionDomain(space, [0.2, 0.5, 0.9], _closeness, measures={"n_components": (1, 4)}, uses_llm=False)


# -- evaluators, listeners and descriptors: the built-ins pass their contracts ---------------------
class TestSerialEvaluator(EvaluatorContract):
    @pytest.fixture
    def make_evaluator(self):
        return lambda domain, timeout_s: make_evaluator("serial", domain, timeout_s=timeout_s)


class TestRayEvaluator(EvaluatorContract):
    @pytest.fixture(params=["task", "actor"])
    def make_evaluator(self, request, ray_session):
        return lambda domain, timeout_s: make_evaluator("ray", domain, timeout_s=timeout_s, mode=request.param,
                                                        num_actors=1, actor_concurrency=4)


class TestBuiltinListeners(ListenerContract):
    @pytest.fixture(params=["range_watch", "failure_watch", "progress_bar", "store_recorder"])
    def listener(self, request, tmp_path):
        from qd.failure_watch import FailureWatch
        from qd.listeners import ProgressBar, StoreRecorder
        from qd.measure_range import RangeWatch
        from qd.store import RunStore

        if request.param == "store_recorder":
            store = RunStore(tmp_path / f"run-{len(list(tmp_path.iterdir()))}.sqlite")
            request.addfinalizer(store.close)
            return StoreRecorder(store)
        return {"range_watch": RangeWatch, "failure_watch": FailureWatch, "progress_bar": ProgressBar}[request.param]()


class TestBuiltinDescriptors(DescriptorContract):
    @pytest.fixture(params=sorted(BUILTINS))
    def descriptor(self, request):
        return request.param  # by name, as [archive] measures gives it

    @pytest.fixture
    def domain(self):
        return get_domain("arm", joints=3)


# -- the contracts catch what they promise to catch, and the README shows them right -------------
BROKEN = """
import math
import threading

import numpy as np
import pytest

from qd import Domain, EvalResult, Float, Space
from qd.operators import Operator
from qd.testing import DescriptorContract, DomainContract, EvaluatorContract, ListenerContract, OperatorContract


class EditsParents(Operator):
    name, num_parents = "edits_parents", 1

    def __init__(self):
        self.space = Space({"x": Float(0, 1)})

    def vary(self, parents, rng):
        config = parents[0].config
        config["x"] = float(rng.random())
        return [config]


class Unseeded(EditsParents):
    def vary(self, parents, rng):
        return [{"x": float(np.random.default_rng().random())}]


class NanMeasures(Domain):
    space = Space({"x": Float(0, 1)})
    default_measures = ("m",)

    def evaluate(self, config):
        return EvalResult(fitness=config["x"], measures={"m": math.nan})


class TestEditsParents(OperatorContract):
    @pytest.fixture
    def operator(self):
        return EditsParents()


class TestUnseeded(OperatorContract):
    @pytest.fixture
    def operator(self):
        return Unseeded()


class HoldsALock(Domain):
    space = Space({"x": Float(0, 1)})

    def __init__(self):
        self.lock = threading.Lock()  # Ray cannot ship this to a worker

    def evaluate(self, config):
        return EvalResult(fitness=config["x"])


class TestNanMeasures(DomainContract):
    @pytest.fixture
    def domain(self):
        return NanMeasures()


class TestHoldsALock(DomainContract):
    @pytest.fixture
    def domain(self):
        return HoldsALock()
"""


def _outcomes(pytester, source: str) -> dict[str, str]:
    pytester.makepyfile(test_user=source)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-q", "-rA")
    outcomes = {}
    for line in result.outlines:
        for word in ("PASSED", "FAILED", "ERROR"):
            if line.startswith(word + " "):
                outcomes[line.split()[1].split("::", 1)[1]] = word
    return outcomes


def test_contracts_fail_operators_and_domains_that_break_them(pytester):
    outcomes = _outcomes(pytester, BROKEN)
    failed = {name for name, word in outcomes.items() if word != "PASSED"}
    assert failed == {
        "TestEditsParents::test_parents_left_untouched",
        "TestUnseeded::test_deterministic_given_the_rng",
        "TestNanMeasures::test_descriptors_finite",
        "TestHoldsALock::test_survives_pickling_for_ray",
    }, outcomes
    assert len(outcomes) == 2 * 5 + 2 * 4


def test_readme_contract_example_passes(pytester):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = re.split(r"\n##+ ", readme.split("### Contract tests for your own domain\n", 1)[1])[0]
    source = section.split("```python\n", 1)[1].split("```", 1)[0]
    outcomes = _outcomes(pytester, source)
    assert set(outcomes.values()) == {"PASSED"}, outcomes
    ran = {name.split("::")[1] for name in outcomes}
    assert {"test_survives_pickling_for_ray", "test_parents_left_untouched"} <= ran, ran


BROKEN_EXTENSIONS = """
import pytest

from qd.listeners import SearchListener
from qd.testing import DescriptorContract, EvaluatorContract, ListenerContract


class Naive:
    \"\"\"Runs the domain as it is, in collect: exceptions escape and nothing keeps a deadline.\"\"\"
    slots = 1

    def __init__(self, domain, timeout_s=None):
        self.domain, self.queue = domain, []

    def submit(self, key, config):
        self.queue.append((key, config))

    def collect(self, timeout):
        done, self.queue = [(key, self.domain.evaluate(config)) for key, config in self.queue], []
        return done

    def pending(self):
        return len(self.queue)

    def close(self):
        self.queue = []


class TestNaive(EvaluatorContract):
    timeout_s, sleep_s = 0.2, 1.0

    @pytest.fixture
    def make_evaluator(self):
        return Naive


class Meddles(SearchListener):
    def on_result(self, search, event):
        event.result.fitness = 0.0


class Averages(SearchListener):
    def __init__(self):
        self.total = self.n = 0

    def on_result(self, search, event):
        self.total, self.n = self.total + event.result.fitness, self.n + 1

    def on_end(self, search):
        self.mean = self.total / self.n


class TestMeddles(ListenerContract):
    @pytest.fixture
    def listener(self):
        return Meddles()


class TestAverages(ListenerContract):
    @pytest.fixture
    def listener(self):
        return Averages()


def sorts_the_trace(config, result):
    result.trace.sort(key=lambda span: -span["id"])
    return float(len(result.trace))


def first_span_tokens(config, result):
    return float(result.trace[0].get("tokens_in", 0)) if result.trace else 0.0


class TestSortsTheTrace(DescriptorContract):
    @pytest.fixture
    def descriptor(self):
        return sorts_the_trace


class TestFirstSpanTokens(DescriptorContract):
    @pytest.fixture
    def descriptor(self):
        return first_span_tokens
"""


def test_contracts_fail_evaluators_listeners_and_descriptors_that_break_them(pytester):
    outcomes = _outcomes(pytester, BROKEN_EXTENSIONS)
    failed = {name for name, word in outcomes.items() if word != "PASSED"}
    assert failed == {
        "TestNaive::test_an_exception_becomes_an_error_result",
        "TestNaive::test_a_deadline_becomes_a_timeout_result",
        "TestMeddles::test_a_search_with_it_ends_as_one_without_it",
        "TestAverages::test_takes_a_search_that_ends_before_its_first_result",
        "TestSortsTheTrace::test_leaves_its_inputs_untouched",
        "TestFirstSpanTokens::test_does_not_depend_on_the_order_of_the_spans",
    }, outcomes
    assert len(outcomes) == 5 + 2 * 3 + 2 * 4  # ListenerContract's reference test skips without a reference
