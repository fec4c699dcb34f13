"""A two-stage DSPy program searched by qd (instructions, demos, Predict/ChainOfThought, temperature)."""
import dspy

from qd.domains.dspy_program import DSPyDomain


class DraftThenAnswer(dspy.Module):
    def __init__(self):
        super().__init__()
        self.draft = dspy.ChainOfThought("question -> draft")
        self.answer = dspy.Predict("question, draft -> answer")

    def forward(self, question):
        return self.answer(question=question, draft=self.draft(question=question).draft)


def exact(example, prediction):
    return float(example.answer.lower() in str(prediction.answer).lower())


def examples(pairs):
    return [dspy.Example(question=q, answer=a).with_inputs("question") for q, a in pairs]


trainset = examples([("What is the capital of France?", "Paris"), ("What is 3 times 4?", "12")])
demos = examples([("What is the capital of Spain?", "Madrid")])   # shown as demos, never scored
domain = DSPyDomain(DraftThenAnswer(), trainset, exact, demoset=demos)
# map: accuracy over llm_calls_per_example x tokens_total_per_example
