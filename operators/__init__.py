"""Variation operators: the :class:`Operator` base class, the classic and LLM operators, the registry.

``BUILTIN`` maps run-config names to operator classes (``CLASSIC`` the classic ones, which take
the space as their first argument; ``LLM_OPERATORS`` the LLM ones, which take the space and an
LLM client). :func:`build_operators` builds them, and ``package.module:attribute`` references,
from the ``[operators]`` table of a run config.
"""
from qd.operators.base import Generation, Operator, Parent
from qd.operators.classic import CLASSIC, Gaussian, IsoLineDD, Mutation, UniformCrossover
from qd.operators.llm import LLM_OPERATORS, LLMMutation, LLMOperator, LMXCrossover
from qd.operators.registry import (
    BUILTIN,
    PARAMETERS,
    OperatorSpec,
    build_operators,
    check_operators,
    parse_operators,
    resolve_operator,
)

__all__ = [
    "Operator", "Parent", "Generation",
    "CLASSIC", "Gaussian", "IsoLineDD", "Mutation", "UniformCrossover",
    "LLM_OPERATORS", "LLMOperator", "LLMMutation", "LMXCrossover",
    "BUILTIN", "PARAMETERS", "OperatorSpec", "build_operators", "check_operators", "parse_operators",
    "resolve_operator",
]
