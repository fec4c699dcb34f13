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


trainset = [dspy.Example(question=q, answer=a).with_inputs("question")
            for q, a in [("What is the capital of France?", "Paris"), ("What is 3 times 4?", "12")]]
domain = DSPyDomain(DraftThenAnswer(), trainset, exact)   # map: accuracy over llm_calls x tokens_total
