"""qd's own operators and domains pass the contract tests it ships (qd.testing)."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from fake_openai import FakeOpenAI

from qd.domains import get_domain
from qd.function_domain import FunctionDomain
from qd.llm import LLMClient
from qd.operators.classic import CLASSIC
from qd.operators.llm import LLM_OPERATORS
from qd.space import Bool, Categorical, Float, Int, Seq, Space, Text
from qd.testing import DomainContract, OperatorContract

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


# -- the contracts catch what they promise to catch, and the README shows them right -------------
BROKEN = """
import math
import threading

import numpy as np
import pytest

from qd import Domain, EvalResult, Float, Space
from qd.operators import Operator
from qd.testing import DomainContract, OperatorContract


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
