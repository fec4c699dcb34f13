"""Elite queries for users: the best, a diverse subset, and filters.

Every query returns elites as dicts (``index``, ``objective``, ``measures``,
``solution``, ``threshold``, ``id`` and any extra field), best first unless said
otherwise. Filters are a callable on such a dict or a safe expression string over
``objective``, ``id``, ``index``, the measure names and scalar extra fields, e.g.
``"llm_calls <= 4 and objective > 0.5"``.
"""
from __future__ import annotations

import ast
import operator as op
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from qd.archives.base import ArchiveBase

__all__ = ["top", "diverse", "where", "compile_where", "elite_env"]

Predicate = Callable[[dict[str, Any]], bool]

_OPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: op.add, ast.Sub: op.sub, ast.Mult: op.mul, ast.Div: op.truediv, ast.Mod: op.mod, ast.Pow: op.pow,
    ast.Lt: op.lt, ast.LtE: op.le, ast.Gt: op.gt, ast.GtE: op.ge, ast.Eq: op.eq, ast.NotEq: op.ne,
}


MAX_WHERE_CHARS = 1000
MAX_WHERE_DEPTH = 50


def _depth(tree: ast.AST) -> int:
    deepest, stack = 0, [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return deepest


def _number(value: Any, node: ast.AST) -> float:
    # Arithmetic runs on floats only: an int power tower or a string repeated 10**10 times would
    # exhaust CPU or memory, while a float overflows at once.
    if isinstance(value, (bool, int, float, np.integer, np.floating)):
        return float(value)
    raise ValueError(f"where: arithmetic needs numbers; {ast.unparse(node)} is {value!r}")


def _arith(node: ast.BinOp, left: Any, right: Any) -> float:
    a, b = _number(left, node.left), _number(right, node.right)
    try:
        result = _OPS[type(node.op)](a, b)
    except ZeroDivisionError:
        raise ValueError(f"where: division by zero in {ast.unparse(node)!r}") from None
    except OverflowError:
        raise ValueError(f"where: {ast.unparse(node)!r} overflows") from None
    if isinstance(result, complex):  # a negative number to a fractional power
        raise ValueError(f"where: {ast.unparse(node)!r} is not a real number")
    return result


_CONTINUATION = re.compile(r"\\(\r\n|\r|\n)")


def compile_where(expr: str) -> Callable[[dict[str, Any]], bool]:
    """Compile a filter such as ``"llm_calls <= 4 and objective > 0.5"`` into a predicate on names.

    Only names, numbers, strings, arithmetic, comparisons and ``and``/``or``/``not``
    are allowed; nothing is passed to ``eval``. Arithmetic is on numbers only and in floating
    point (``9**9**9`` overflows at once instead of computing a huge integer, and a string cannot
    be repeated), and expressions are at most :data:`MAX_WHERE_CHARS` characters and
    :data:`MAX_WHERE_DEPTH` levels deep. The predicate
    takes a dict of names to values and raises ``ValueError`` naming the available names for an
    unknown one, and for arithmetic that fails (division by zero, overflow, text in arithmetic).
    """
    if len(expr) > MAX_WHERE_CHARS:
        raise ValueError(f"where: expression of {len(expr)} characters; at most {MAX_WHERE_CHARS} are allowed")
    if _CONTINUATION.search(expr):  # Python versions tokenize a continued line differently: one line, one meaning
        raise ValueError(f"where {expr[:80]!r}: a backslash at the end of a line is not allowed; write the filter "
                         "on one line")
    try:
        tree = ast.parse(expr, mode="eval").body
    except SyntaxError as exc:
        raise ValueError(f"where {expr!r}: {exc.msg}") from None
    except (ValueError, RecursionError, MemoryError) as exc:  # absurd literals or nesting
        raise ValueError(f"where {expr[:80]!r}: {type(exc).__name__}: {exc}") from None
    if _depth(tree) > MAX_WHERE_DEPTH:
        raise ValueError(f"where: expression nested more than {MAX_WHERE_DEPTH} levels deep")

    def ev(node: ast.AST, env: dict[str, Any]) -> Any:
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool)):
            return node.value
        if isinstance(node, ast.Name):
            if node.id not in env:
                raise ValueError(f"where: unknown name {node.id!r}; available: {', '.join(sorted(env))}")
            return env[node.id]
        if isinstance(node, ast.BoolOp):
            values = (ev(v, env) for v in node.values)
            return all(values) if isinstance(node.op, ast.And) else any(values)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.USub)):
            value = ev(node.operand, env)
            return (not value) if isinstance(node.op, ast.Not) else -_number(value, node.operand)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _arith(node, ev(node.left, env), ev(node.right, env))
        if isinstance(node, ast.Compare) and all(type(o) in _OPS for o in node.ops):
            left = ev(node.left, env)
            for cmp, right_node in zip(node.ops, node.comparators):
                right = ev(right_node, env)
                try:
                    holds = _OPS[type(cmp)](left, right)
                except TypeError:
                    raise ValueError(f"where: cannot compare {left!r} and {right!r}") from None
                if not holds:
                    return False
                left = right
            return True
        raise ValueError(f"where: {ast.unparse(node)!r} is not allowed (names, numbers, comparisons, and/or/not)")

    return lambda env: bool(ev(tree, env))


def elite_env(archive: ArchiveBase, elite: dict[str, Any]) -> dict[str, Any]:
    """The names a filter expression sees for one elite.

    The objective is there as ``objective``, ``fitness`` and the archive's ``objective_name``
    (e.g. ``accuracy``).
    """
    env = {k: v for k, v in elite.items()
           if isinstance(v, (int, float, str, bool, np.integer, np.floating)) and k != "solution"}
    env["fitness"] = elite["objective"]
    name = getattr(archive, "objective_name", "")
    if name and name.isidentifier() and name not in env and name not in archive.measure_names:
        env[name] = elite["objective"]
    env.update(zip(archive.measure_names, map(float, elite["measures"])))
    return env


def _predicate(archive: ArchiveBase, predicate: str | Predicate) -> Predicate:
    if callable(predicate):
        return predicate
    test = compile_where(predicate)
    return lambda elite: test(elite_env(archive, elite))


def _ranked_cells(archive: ArchiveBase, where_: str | Predicate | None) -> np.ndarray:
    """Occupied cells best first (ties: lower cell index first), filtered by ``where_``."""
    cells = archive.data("index")
    objective = archive.data("objective")
    cells = cells[np.lexsort((cells, -objective))]
    if where_ is None:
        return cells
    keep = _predicate(archive, where_)
    return np.array([c for c in cells.tolist() if keep(archive.elite(c))], dtype=np.int64)


def top(archive: ArchiveBase, k: int | None = None, where_: str | Predicate | None = None) -> list[dict]:
    """The ``k`` best elites (all when None) that pass ``where_``, best first."""
    cells = _ranked_cells(archive, where_)
    return [archive.elite(c) for c in cells[:k].tolist()]


def where(archive: ArchiveBase, predicate: str | Predicate) -> list[dict]:
    """Every elite that passes ``predicate``, best first."""
    return top(archive, None, predicate)


def diverse(archive: ArchiveBase, k: int, where_: str | Predicate | None = None) -> list[dict]:
    """``k`` elites spread over measure space, by greedy farthest-point selection.

    Starts from the best elite, then repeatedly takes the elite farthest (Euclidean,
    in measure space scaled to the unit box) from all taken so far; ties go to the
    better objective. The first ``j`` of ``diverse(k)`` are ``diverse(j)``.
    """
    cells = _ranked_cells(archive, where_)
    k = min(int(k), len(cells))
    if k <= 0:
        return []
    span = archive.upper_bounds - archive.lower_bounds
    points = (archive._measures[cells] - archive.lower_bounds) / span
    chosen = [0]
    distance = np.linalg.norm(points - points[0], axis=1)
    for _ in range(k - 1):
        nxt = int(np.argmax(distance))  # first maximum = best objective among ties
        chosen.append(nxt)
        np.minimum(distance, np.linalg.norm(points - points[nxt], axis=1), out=distance)
    return [archive.elite(c) for c in cells[chosen].tolist()]
