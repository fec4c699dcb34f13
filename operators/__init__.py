"""Variation operators: classic ones always, LLM ones when their dependencies import.

``CLASSIC`` maps run-config names to classic operator classes; each takes the space as its
first argument (``CLASSIC[name](space)``).
"""
from qd.operators.base import Operator, Parent
from qd.operators.classic import CLASSIC, Gaussian, IsoLineDD, Mutation, UniformCrossover

__all__ = ["Operator", "Parent", "CLASSIC", "Gaussian", "IsoLineDD", "Mutation", "UniformCrossover"]

try:  # LLM operators need the LLM client stack; classic operators must work without it
    from qd.operators.llm import LLM_OPERATORS, LLMMutation, LMXCrossover  # noqa: F401
except ImportError:
    LLM_OPERATORS = {}
else:
    __all__ += ["LLM_OPERATORS", "LLMMutation", "LMXCrossover"]
