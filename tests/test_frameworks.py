"""Pipelines written the way each framework's docs write them: the map's structure is the pipeline's own.

Each pipeline is a `qd.FunctionDomain` score function, run on 1 and on 3 examples, one example at a
time and 8 at once, against a counting OpenAI-compatible server. In every case `critical_path` and
`max_fanout` are those of one run of the pipeline (examples never add up or lump together), and
the calls and tokens of the trace are what the server served.
"""
from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
from counting_openai import CountingOpenAI

import qd
from qd.analysis import summarize
from qd.evaluation import evaluate_config

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

SPACE = qd.Space({"temperature": qd.Float(0.0, 1.0)})
MODEL = "gpt-4o-mini"


def chain_of_two(config: dict, question: str) -> float:
    """The openai SDK: an answer, then a call that reads it."""
    llm = qd.pipeline_llm()
    client = llm.openai_client(max_retries=0)
    draft = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": question}])
    final = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": f"{question} {draft.choices[0].message.content}"}])
    return float(bool(final.choices[0].message.content))


def langchain_batch(config: dict, question: str) -> float:
    """LangChain's ChatOpenAI: three prompts with .batch, then one call over their answers."""
    from langchain_openai import ChatOpenAI

    llm = qd.pipeline_llm()
    chat = ChatOpenAI(model=MODEL, base_url=llm.resolved_base_url(), api_key=llm.api_key(), max_retries=0,
                      temperature=config["temperature"])
    answers = chat.batch([f"{question} ({angle})" for angle in ("short", "long", "funny")])
    return float(bool(chat.invoke("Pick one: " + " | ".join(a.content for a in answers)).content))


def llamaindex_chain(config: dict, question: str) -> float:
    """LlamaIndex's OpenAILike: a completion, then one that reads it."""
    from llama_index.llms.openai_like import OpenAILike

    llm = qd.pipeline_llm()
    model = OpenAILike(model=MODEL, api_base=llm.resolved_base_url(), api_key=llm.api_key(), is_chat_model=True,
                       max_retries=0, temperature=config["temperature"])
    draft = model.complete(question).text
    return float(bool(model.complete(f"Improve: {draft}").text))


async def async_gather(config: dict, question: str) -> float:
    """AsyncOpenAI: three calls at once with asyncio.gather, then one over their answers."""
    client = qd.pipeline_llm().async_openai_client(max_retries=0)
    replies = await asyncio.gather(*(client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": f"{question} {i}"}]) for i in range(3)))
    joined = " ".join(r.choices[0].message.content for r in replies)
    final = await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": joined}])
    return float(bool(final.choices[0].message.content))


def litellm_pool(config: dict, question: str) -> float:
    """LiteLLM's completion in a thread pool of three, then one call over their answers."""
    import litellm

    kwargs = qd.pipeline_llm().litellm_kwargs()

    def ask(text: str) -> str:
        return litellm.completion(messages=[{"role": "user", "content": text}], num_retries=0,
                                  **kwargs).choices[0].message.content

    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(ask, [f"{question} {i}" for i in range(3)]))
    return float(bool(ask(" ".join(answers))))


# name -> (score function, (critical_path, max_fanout) of one run of the pipeline, framework module)
PIPELINES = {
    "chain_of_two": (chain_of_two, (2, 1), None),
    "langchain_batch": (langchain_batch, (2, 3), "langchain_openai"),
    "llamaindex_chain": (llamaindex_chain, (2, 1), "llama_index.llms.openai_like"),
    "async_gather": (async_gather, (2, 3), None),
    "litellm_pool": (litellm_pool, (2, 3), "litellm"),
}
QUESTIONS = ["What is the capital of France?", "What is 3 times 4?", "What colour is the sky?"]


@pytest.fixture(scope="module")
def server():
    with CountingOpenAI() as srv:
        yield srv


def _check(domain: qd.FunctionDomain, server: CountingOpenAI, config: dict, shape: tuple[int, int],
           examples: int) -> None:
    server.reset()
    result = evaluate_config(domain, config)
    served = server.served()
    assert result.status == "ok" and result.metrics["failed_examples"] == 0, (result.error, result.feedback)
    summary = summarize(result.trace)
    assert (summary["critical_path"], summary["max_fanout"]) == shape
    assert summary["llm_calls"] == served["calls"] and served["calls"] % examples == 0
    assert (summary["tokens_in"], summary["tokens_out"]) == (served["tokens_in"], served["tokens_out"])
    assert summary["examples"] == examples and summary["failed_calls"] == 0
    assert "untraced_llm_calls" not in result.metrics


@pytest.mark.parametrize("concurrency", [1, 8])
@pytest.mark.parametrize("examples", [1, 3])
@pytest.mark.parametrize("pipeline", list(PIPELINES))
def test_the_structure_is_the_pipelines_own_whatever_the_examples_and_their_concurrency(
        server, pipeline, examples, concurrency):
    score, shape, module = PIPELINES[pipeline]
    if module is not None:
        pytest.importorskip(module)
    domain = qd.FunctionDomain(SPACE, QUESTIONS[:examples], score, concurrency=concurrency)
    domain.pipeline_llm = qd.PipelineLLM(base_url=server.base_url, model=MODEL)
    _check(domain, server, {"temperature": 0.2}, shape, examples)


@pytest.mark.parametrize("concurrency", [1, 8])
@pytest.mark.parametrize("examples", [1, 3])
def test_a_dspy_module_of_two_chain_of_thoughts_is_a_chain_of_two(server, examples, concurrency):
    dspy = pytest.importorskip("dspy")
    from qd.domains.dspy_program import DSPyDomain

    class DraftThenAnswer(dspy.Module):
        def __init__(self) -> None:
            super().__init__()
            self.draft = dspy.ChainOfThought("question -> draft")
            self.answer = dspy.ChainOfThought("question, draft -> answer")

        def forward(self, question: str) -> dspy.Prediction:
            return self.answer(question=question, draft=self.draft(question=question).draft)

    trainset = [dspy.Example(question=q, answer="x").with_inputs("question") for q in QUESTIONS[:examples]]
    domain = DSPyDomain(DraftThenAnswer(), trainset, lambda ex, pred: 1.0, demoset=[], concurrency=concurrency)
    domain.pipeline_llm = qd.PipelineLLM(base_url=server.base_url, model=MODEL)
    _check(domain, server, domain.default_config(), (2, 1), examples)


def test_volume_per_example_is_the_evaluations_over_its_examples(server):
    domain = qd.FunctionDomain(SPACE, QUESTIONS, litellm_pool, concurrency=8)
    domain.pipeline_llm = qd.PipelineLLM(base_url=server.base_url, model=MODEL)
    pytest.importorskip("litellm")
    result = evaluate_config(domain, {"temperature": 0.0})
    names = ["llm_calls", "tokens_total", "llm_calls_per_example", "tokens_total_per_example", "latency_s",
             "latency_s_per_example"]
    values = dict(zip(names, (f({}, result) for f in qd.analysis.resolve_measures(names, domain))))
    assert values["llm_calls"] == 3 * 4 and values["llm_calls_per_example"] == 4
    assert values["tokens_total_per_example"] == pytest.approx(values["tokens_total"] / 3)
    assert 0 < values["latency_s_per_example"] <= values["latency_s"]


def test_an_async_client_made_once_serves_evaluation_after_evaluation(server):
    # The async pipeline above makes its client per example; a module-level client in a whole run
    # is tested in test_user_domain. Here: evaluations in a row on one client object.
    client = openai.AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=0)

    async def score(config: dict, question: str) -> float:
        reply = await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": question}])
        return float(bool(reply.choices[0].message.content))

    domain = qd.FunctionDomain(SPACE, QUESTIONS, score)
    for _ in range(2):
        assert evaluate_config(domain, {"temperature": 0.0}).scores == [1.0, 1.0, 1.0]
