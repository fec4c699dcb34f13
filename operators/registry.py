"""Operators by name: the built-ins, ``package.module:attribute`` references, and their parameters.

The ``[operators]`` table of a run config gives each operator a weight, in the flat form
``iso_line_dd = 1.0`` or as a table of its parameters::

    [operators.iso_line_dd]
    weight = 1.0
    iso_sigma = 0.1        # in each parameter's own units (radians on the arm), as pyribs takes it
    line_sigma = 0.2

    [operators.mine]       # any name; ``operator`` says what to build
    operator = "my_pkg.ops:MyOperator"
    weight = 0.5
    strength = 3           # passed to MyOperator(space, strength=3)

A key that is itself a reference (``[operators."my_pkg.ops:MyOperator"]``) needs no
``operator``. :func:`check_operators` validates every built-in parameter without building
anything (the run config calls it at load, so mistakes show before a run starts);
:func:`build_operators` builds the instances.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from qd.operators.base import Operator
from qd.operators.classic import CLASSIC
from qd.operators.llm import LLM_OPERATORS
from qd.operators.params import Parameter, finite_number
from qd.references import resolve_reference, split_reference

if TYPE_CHECKING:
    from qd.space import Space

__all__ = ["BUILTIN", "PARAMETERS", "OperatorSpec", "check_operators", "build_operators", "parse_operators",
           "resolve_operator"]

#: Built-in operator names and classes. Classic ones take ``(space, **params)``, LLM ones
#: ``(space, client, **params)``.
BUILTIN: dict[str, type[Operator]] = {**CLASSIC, **LLM_OPERATORS}

# Keys of an operator's table that are not its constructor's parameters.
_TABLE_KEYS = ("weight", "operator")
# Sigmas that a run config gives in each parameter's own units (the classes' default unit is the range).
_VALUE_SIGMAS = {"gaussian": ("sigma",), "iso_line_dd": ("iso_sigma",), "mutation": ("sigma",)}


#: Every documented parameter of every built-in operator, as each class declares it
#: (:attr:`Operator.parameters <qd.operators.Operator.parameters>`, :mod:`qd.operators.params`).
PARAMETERS: dict[str, Mapping[str, Parameter]] = {name: cls.parameters for name, cls in BUILTIN.items()}


@dataclass(frozen=True)
class OperatorSpec:
    """One entry of ``[operators]``: what to build, under which name, with which weight and parameters."""

    name: str
    operator: str
    weight: float
    params: dict[str, Any] = field(default_factory=dict)


def parse_operators(table: Mapping[str, Any]) -> list[OperatorSpec]:
    """The entries of an ``[operators]`` table (switches such as ``adaptive`` removed by the caller).

    Raises
    ------
    ValueError
        Naming the key (``operators.NAME.PARAM``) whose value is not allowed.
    """
    specs = []
    for name, entry in table.items():
        if isinstance(entry, Mapping):
            params = dict(entry)
            weight = params.pop("weight", 1.0)
            operator = params.pop("operator", name)
            if not isinstance(operator, str) or not operator:
                raise ValueError(f"operators.{name}.operator must be a built-in operator name or "
                                 f"'package.module:attribute', got {operator!r}")
            where = f"operators.{name}.weight"
        else:
            weight, operator, params, where = entry, name, {}, f"operators.{name}"
        if not finite_number(weight) or weight < 0:
            raise ValueError(f"{where} must be a non-negative weight, got {weight!r}")
        if operator in BUILTIN:
            _check_params(name, operator, params)
        elif ":" not in operator:
            raise ValueError(f"unknown operator {operator!r} (operators.{name}); built-ins: "
                             f"{', '.join(BUILTIN)}, or 'package.module:attribute'")
        else:
            split_reference(operator, f"operators.{name}: operator")
        specs.append(OperatorSpec(name, operator, float(weight), params))
    return specs


def check_operators(table: Mapping[str, Any]) -> None:
    """Validate an ``[operators]`` table without building anything (see :func:`parse_operators`)."""
    parse_operators(table)


def _check_params(name: str, operator: str, params: Mapping[str, Any]) -> None:
    cls = BUILTIN[operator]
    unknown = [key for key in params if key not in cls.parameters]
    if unknown:
        raise ValueError(f"unknown key 'operators.{name}.{unknown[0]}' for operator {operator!r} "
                         f"(allowed: {', '.join((*_TABLE_KEYS, *cls.parameters))})")
    cls.check_parameters(params, f"operators.{name}")


def resolve_operator(reference: str) -> Any:
    """The object a built-in name or a ``package.module:attribute`` reference names.

    References resolve as domains' do (:func:`qd.references.resolve_reference`: the working
    directory first).

    Raises
    ------
    ValueError
        If the module or attribute cannot be loaded (the message says why and the fix).
    """
    if reference in BUILTIN:
        return BUILTIN[reference]
    return resolve_reference(reference, "operator")


def build_operators(table: Mapping[str, Any], space: Space,
                    llm_client: Callable[[], Any] | None = None) -> dict[str, tuple[Operator, float]]:
    """Operator instances and weights for the entries of ``table`` with a positive weight.

    Parameters
    ----------
    table : mapping
        The ``[operators]`` entries (without the switches ``adaptive`` and ``wait_for_llm``).
    space : Space
        The search space every operator is built on.
    llm_client : callable, optional
        Returns the LLM client, called once and only when an operator that uses an LLM is built.

    Returns
    -------
    dict of str to (Operator, float)
        By name, in table order.

    Raises
    ------
    ValueError
        For an entry that is not allowed, a reference that does not load or does not give a
        :class:`~qd.operators.Operator`, or no operator with a positive weight.
    """
    built: dict[str, tuple[Operator, float]] = {}
    client: list[Any] = []

    def get_client() -> Any:
        if not client:
            if llm_client is None:
                raise ValueError("an LLM operator is configured but no LLM client was given")
            client.append(llm_client())
        return client[0]

    for spec in parse_operators(table):
        if spec.weight <= 0:
            continue
        try:
            target = resolve_operator(spec.operator)
        except ValueError as exc:
            raise ValueError(f"operators.{spec.name}: {exc}") from None
        params = dict(spec.params)
        if spec.operator in _VALUE_SIGMAS and any(k in params for k in _VALUE_SIGMAS[spec.operator]):
            params["sigma_units"] = "value"  # a run config gives sigmas in the parameters' own units
        op = _instantiate(spec, target, space, params, get_client)
        built[spec.name] = (op, spec.weight)
    if not built:
        raise ValueError("[operators] gives no operator a positive weight: add one, e.g. `mutation = 1.0` "
                         "(`qd domains` and the README list the operators)")
    return built


def _instantiate(spec: OperatorSpec, target: Any, space: Space, params: dict[str, Any],
                 get_client: Callable[[], Any]) -> Operator:
    where = f"operators.{spec.name}"
    if isinstance(target, Operator):
        if params:
            raise ValueError(f"{where}: {spec.operator!r} is an operator instance; it takes no parameters")
        return target
    if not callable(target):
        raise ValueError(f"{where}: {spec.operator!r} is a {type(target).__name__}, not an operator class or factory")
    uses_llm = isinstance(target, type) and issubclass(target, Operator) and target.uses_llm
    try:
        op = target(space, get_client(), **params) if uses_llm else target(space, **params)
    except TypeError as exc:  # a misspelt parameter reaches the constructor as an unexpected keyword
        raise ValueError(f"{where}: {exc}") from None
    if not isinstance(op, Operator):
        raise ValueError(f"{where}: {spec.operator!r} gave a {type(op).__name__}, not a qd.operators.Operator")
    op.name = spec.name  # counters and LLM usage tags go under the config's name for it
    return op
