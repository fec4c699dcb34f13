"""Domains whose pipelines call LLMs the way users' code does: the openai SDK, LiteLLM, DSPy.

Nothing here mentions qd's tracer: every call must be seen by ``qd.analysis.autotrace``.
"""
from __future__ import annotations

import asyncio
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import openai

from qd.domain import Domain
from qd.result import EvalResult
from qd.space import Categorical, Space

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

PATTERNS = ("sync", "async", "stream", "stream_no_usage", "responses", "responses_stream", "pool", "thread",
            "gather", "executor", "litellm", "litellm_async", "litellm_text", "dspy", "dspy_native")
# Calls each pattern makes (DSPy: a two-stage program, one call per stage).
CALLS = {"sync": 3, "async": 1, "stream": 1, "stream_no_usage": 1, "responses": 1, "responses_stream": 1,
         "pool": 6, "thread": 2, "gather": 4, "executor": 2, "litellm": 1, "litellm_async": 1, "litellm_text": 1,
         "dspy": 2, "dspy_native": 2}


def _messages(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


class UserPipeline(Domain):
    """Runs the calls of the patterns named in the config against ``base_url``."""

    name = "user-pipeline"
    space = Space({"patterns": Categorical(["sync"])})

    def __init__(self, base_url: str, model: str = "gpt-4o-mini"):
        self.base_url = base_url
        self.model = model

    # Clients are made per evaluation: Ray ships the domain, and SDK clients do not pickle.
    def _client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base_url, api_key="sk-test", max_retries=0)

    def _aclient(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=self.base_url, api_key="sk-test", max_retries=0)

    def _chat(self, client: openai.OpenAI, text: str) -> str:
        out = client.chat.completions.create(model=self.model, messages=_messages(text))
        return out.choices[0].message.content or ""

    def evaluate(self, config: dict) -> EvalResult:
        patterns = config["patterns"]
        patterns = PATTERNS if patterns == "all" else patterns.split("+")
        client = self._client()
        for pattern in patterns:
            getattr(self, "_" + pattern)(client)
        client.close()
        return EvalResult(fitness=1.0)

    def _sync(self, client: openai.OpenAI) -> None:
        a = self._chat(client, "one")
        b = self._chat(client, f"two {a}")
        client.completions.create(model=self.model, prompt=f"three {b}")

    def _async(self, client: openai.OpenAI) -> None:
        async def main() -> None:
            async with self._aclient() as aclient:
                await aclient.chat.completions.create(model=self.model, messages=_messages("async hello"))
        asyncio.run(main())

    def _stream(self, client: openai.OpenAI) -> None:
        stream = client.chat.completions.create(model=self.model, messages=_messages("stream please"), stream=True,
                                                stream_options={"include_usage": True})
        "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    def _stream_no_usage(self, client: openai.OpenAI) -> None:
        stream = client.chat.completions.create(model=self.model, messages=_messages("stream again"), stream=True)
        "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    def _responses(self, client: openai.OpenAI) -> None:
        client.responses.create(model=self.model, input="respond")

    def _responses_stream(self, client: openai.OpenAI) -> None:
        for _ in client.responses.create(model=self.model, input="respond streaming", stream=True):
            pass

    def _pool(self, client: openai.OpenAI) -> None:
        with ThreadPoolExecutor(5) as pool:
            answers = list(pool.map(lambda i: self._chat(client, f"part {i}"), range(5)))
        self._chat(client, "combine " + " ".join(answers))

    def _thread(self, client: openai.OpenAI) -> None:
        threads = [threading.Thread(target=self._chat, args=(client, f"thread {i}")) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def _gather(self, client: openai.OpenAI) -> None:
        async def main() -> None:
            async with self._aclient() as aclient:
                await asyncio.gather(*[aclient.chat.completions.create(model=self.model, messages=_messages(f"g {i}"))
                                       for i in range(3)])
                await aclient.chat.completions.create(model=self.model, messages=_messages("gathered"))
        asyncio.run(main())

    def _executor(self, client: openai.OpenAI) -> None:
        async def main() -> None:
            loop = asyncio.get_running_loop()
            await asyncio.gather(*[loop.run_in_executor(None, self._chat, client, f"ex {i}") for i in range(2)])
        asyncio.run(main())

    def _litellm(self, client: openai.OpenAI) -> None:
        import litellm

        litellm.completion(model="openai/" + self.model, api_base=self.base_url, api_key="sk-test",
                           messages=_messages("litellm"))

    def _litellm_async(self, client: openai.OpenAI) -> None:
        import litellm

        asyncio.run(litellm.acompletion(model="openai/" + self.model, api_base=self.base_url, api_key="sk-test",
                                        messages=_messages("litellm async")))

    def _litellm_text(self, client: openai.OpenAI) -> None:
        import litellm

        litellm.text_completion(model="text-completion-openai/" + self.model, api_base=self.base_url,
                                api_key="sk-test", prompt="litellm text")

    def _dspy_native(self, client: openai.OpenAI) -> None:
        self._dspy(client, engine="auto")  # DSPy's own HTTP engine (lm15), not LiteLLM

    def _dspy(self, client: openai.OpenAI, engine: str = "litellm") -> None:
        import dspy

        lm = dspy.LM("openai/" + self.model, api_base=self.base_url, api_key="sk-test", cache=False, engine=engine)

        class TwoStage(dspy.Module):
            def __init__(self) -> None:
                super().__init__()
                self.draft = dspy.Predict("question -> draft")
                self.answer = dspy.Predict("question, draft -> answer")

            def forward(self, question: str) -> dspy.Prediction:
                draft = self.draft(question=question).draft
                return self.answer(question=question, draft=draft)

        with dspy.context(lm=lm):
            TwoStage()(question="what is traced?")
