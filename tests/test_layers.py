"""qd's modules form acyclic layers; a module never imports from a layer above its own.

Layers, lowest first (a module may import from its own layer and the ones below)::

    0  foundation   qd._source_tree (imported first by qd), qd.result, qd.space.*, qd.references, qd.store,
                    qd.worker_loop, qd.keyset (compact dedup keys)
    1  interfaces   qd.domain, qd.function_domain, qd.seeds; tracing and descriptors (the qd.analysis package,
                    qd.analysis.{tracer,descriptors,measuring,autotrace}); LLM access (qd.llm.*)
    2  archives     qd.archives.*
    3  operators    qd.operators.*; the built-in domains qd.domains.* (they use LLMs and tracing, never archives)
    4  scheduler    qd.scheduler, qd.noise (its re-evaluation policy); evaluation of one configuration
                    (qd.evaluation, qd.evaluators.*)
    5  driver       qd.search, qd.listeners, qd.measure_range, qd.failure_watch (listeners), qd.totals (running
                    totals of the run), qd.archive_store (the archive in the run store)
    6  after runs   qd.analysis.{elites,otlp,validation,selection}, qd.testing.* (contract tests)
    7  runner       qd.config, qd.rundir, qd.runner, qd.validate; the benchmarks' arms and statistics (qd.bench.*)
    8  interface    qd.cli, qd.report.* (the HTML report; it reads runs as ``qd status`` does), and the ``qd``
                    package itself (it re-exports the public API)

Imports inside functions count (they are dependencies too); imports under ``if TYPE_CHECKING:``
do not. Importing ``a.b.c`` also runs the ``a.b`` package's ``__init__``, so a module depends on
every package above what it imports (except the root ``qd``, the facade). A module missing from
the table fails the test: every new module has to be placed.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Repository folders and the package each one installs as.
FOLDERS = {"qd": "qd", "archives": "qd.archives", "operators": "qd.operators", "domains": "qd.domains"}

LAYERS: list[tuple[str, list[str]]] = [
    ("foundation", ["qd._source_tree", "qd.result", "qd.space", "qd.space.*", "qd.references", "qd.store",
                    "qd.worker_loop", "qd.keyset"]),
    ("interfaces", ["qd.domain", "qd.function_domain", "qd.seeds", "qd.analysis", "qd.analysis.tracer",
                    "qd.analysis.descriptors", "qd.analysis.measuring", "qd.analysis.autotrace", "qd.llm",
                    "qd.llm.*"]),
    ("archives", ["qd.archives", "qd.archives.*"]),
    ("operators", ["qd.operators", "qd.operators.*", "qd.domains", "qd.domains.*"]),
    ("scheduler", ["qd.scheduler", "qd.noise", "qd.bandit", "qd.prefilter", "qd.evaluation", "qd.evaluators",
                   "qd.evaluators.*"]),
    ("driver", ["qd.search", "qd.listeners", "qd.measure_range", "qd.failure_watch", "qd.totals",
                "qd.archive_store"]),
    ("after runs", ["qd.analysis.elites", "qd.analysis.otlp", "qd.analysis.validation", "qd.analysis.selection",
                    "qd.testing", "qd.testing.*"]),
    ("runner", ["qd.config", "qd.rundir", "qd.runner", "qd.validate", "qd.bench", "qd.bench.*"]),
    ("interface", ["qd.cli", "qd", "qd.report", "qd.report.*"]),
]


def modules() -> dict[str, Path]:
    """Every module of the installed package, by dotted name."""
    found = {}
    for folder, package in FOLDERS.items():
        base = ROOT / folder
        for path in sorted(base.rglob("*.py")):
            rel = path.relative_to(base).with_suffix("")
            if folder == "qd" and rel.parts[0] in FOLDERS:
                continue
            parts = [p for p in rel.parts if p != "__init__"]
            found[".".join([package, *parts])] = path
    return found


MODULES = modules()


def layer_of(module: str) -> int:
    """The layer of ``module``: an exact entry wins over a ``pkg.*`` pattern."""
    for exact in (True, False):
        for rank, (_, names) in enumerate(LAYERS):
            for name in names:
                if exact and name == module:
                    return rank
                if not exact and name.endswith(".*") and module.startswith(name[:-1]):
                    return rank
    raise AssertionError(f"{module} is in no layer: add it to LAYERS in tests/test_layers.py")


def _is_type_checking(node: ast.If) -> bool:
    return "TYPE_CHECKING" in ast.unparse(node.test)


def imports(module: str, path: Path, top_level_only: bool = False) -> set[str]:
    """The qd modules ``module`` imports (with the packages their import runs), TYPE_CHECKING excluded."""
    tree = ast.parse(path.read_text())
    out: set[str] = set()

    def add(name: str) -> None:
        if name not in MODULES:
            return
        out.add(name)
        parts = name.split(".")
        for i in range(2, len(parts)):  # the packages whose __init__ the import runs (not the root qd) ...
            parent = ".".join(parts[:i])
            if not (module == parent or module.startswith(parent + ".")):  # ... unless it is the importer's own
                out.add(parent)

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                continue
            if isinstance(child, ast.Import) and not (top_level_only and in_function):
                for alias in child.names:
                    add(alias.name)
            elif isinstance(child, ast.ImportFrom) and not (top_level_only and in_function):
                assert not child.level, f"{module}: relative imports are not used in qd"
                base = child.module or ""
                for alias in child.names:
                    add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
            function = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            visit(child, in_function or function)

    visit(tree, False)
    out.discard(module)
    return out


def function_level_imports(path: Path) -> list[str]:
    """``line: module`` for each qd import inside a function of ``path``."""
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                continue
            if in_function and isinstance(child, ast.ImportFrom) and (child.module or "").startswith("qd"):
                found.append(f"{child.lineno}: {child.module}")
            if in_function and isinstance(child, ast.Import):
                found.extend(f"{child.lineno}: {a.name}" for a in child.names if a.name.startswith("qd"))
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))

    visit(ast.parse(path.read_text()), False)
    return found


def test_every_module_has_a_layer():
    assert len(MODULES) > 40
    for module in MODULES:
        layer_of(module)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_imports_from_a_layer_above_its_own(module):
    rank = layer_of(module)
    above = sorted(f"{name} ({LAYERS[layer_of(name)][0]})" for name in imports(module, MODULES[module])
                   if layer_of(name) > rank)
    assert not above, f"{module} ({LAYERS[rank][0]}) imports from above: {', '.join(above)}"


def test_module_level_imports_have_no_cycle():
    """With the imports that run at import time only, no module needs itself (import order never matters)."""
    graph = {m: imports(m, p, top_level_only=True) - {"qd"} for m, p in MODULES.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)


@pytest.mark.parametrize("module", ["qd.scheduler", "qd.search", "qd.listeners", "qd.runner", "qd.seeds",
                                    "qd.operators", "qd.operators.base", "qd.operators.classic", "qd.operators.llm",
                                    "qd.operators.registry"])
def test_scheduler_driver_runner_and_operators_import_qd_modules_at_the_top(module):
    """Imports inside functions are for heavy optional dependencies only, never to dodge a cycle."""
    assert function_level_imports(MODULES[module]) == []


def test_the_checker_sees_an_upward_import_and_ignores_type_checking(tmp_path):
    path = tmp_path / "fake.py"
    path.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from qd.search import Search\n"
                    "def f():\n    from qd.runner import run_search\n")
    assert imports("qd.operators.fake", path) == {"qd.runner"}
    assert imports("qd.operators.fake", path, top_level_only=True) == set()
