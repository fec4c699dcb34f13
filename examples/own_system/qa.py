"""A question-answering pipeline that calls the openai SDK, searched by qd: `qd run qa.toml`."""
import qd
from qd import Categorical, Float, Space

EXAMPLES = [("What is the capital of France?", "Paris"), ("How many legs does a spider have?", "8"),
            ("What colour is a clear daytime sky?", "blue"), ("What is 3 times 4?", "12")]

space = Space({
    "system": Categorical(["Answer with one word.", "You are a helpful assistant.", "Think, then answer briefly."]),
    "temperature": Float(0.0, 1.0),
})


def score(config, example):
    question, answer = example
    llm = qd.pipeline_llm()  # the run's [llm] endpoint and model; any openai.OpenAI(...) is traced the same way
    reply = llm.openai_client().chat.completions.create(
        model=llm.model, temperature=config["temperature"], max_tokens=32,
        messages=[{"role": "system", "content": config["system"]}, {"role": "user", "content": question}])
    return float(answer.lower() in (reply.choices[0].message.content or "").lower())


domain = qd.FunctionDomain(space, EXAMPLES, score, measures={"llm_calls": (0, 8), "tokens_total": (0, 800)})
