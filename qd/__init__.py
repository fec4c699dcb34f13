"""qd: quality-diversity search over the design space of compound AI systems.

The public API, re-exported here::

    import qd
    archive = qd.GridArchive(dims=[20, 20], ranges=[(0, 40), (0, 4000)], measure_names=["llm_calls", "tokens_total"])
    with qd.Search(domain, archive, qd.RayEvaluator(domain), operators=..., measures=..., budget=1000) as search:
        search.run()   # leaving the block stops LLM threads and the evaluator

Each name is imported when first used, so that ``import qd`` (and every ``qd`` command, which
imports this package first) stays light: ``qd status`` needs none of the search machinery.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

import qd._source_tree  # noqa: F401  (first: in a checkout, qd.archives & co. are the folders beside qd/)

# The one name that is also a submodule: importing qd.function_domain (as anything may) binds the
# module to this attribute, so the function is bound here, after it, once and for all.
from qd.function_domain import FunctionDomain, function_domain

if TYPE_CHECKING:
    from qd.archives import AddStatus, ArchiveStats, CVTArchive, GridArchive, cvt_centroids
    from qd.archives import load as load_archive
    from qd.domain import Domain
    from qd.evaluators import RayEvaluator, SerialEvaluator, make_evaluator, register_backend
    from qd.llm import LLMClient
    from qd.llm.pipeline import PipelineLLM, pipeline_llm
    from qd.result import EvalResult, Span, Trace
    from qd.runner import open_run, run_search
    from qd.search import Search, SearchOptions
    from qd.space import Bool, Categorical, Float, Int, Seq, Space, Text

__all__ = [
    "GridArchive", "CVTArchive", "ArchiveStats", "AddStatus", "cvt_centroids", "load_archive",
    "Space", "Float", "Int", "Categorical", "Bool", "Text", "Seq",
    "Domain", "EvalResult", "Span", "Trace", "Search", "SearchOptions", "SerialEvaluator", "RayEvaluator",
    "make_evaluator", "register_backend",
    "LLMClient", "run_search", "open_run", "FunctionDomain", "function_domain", "pipeline_llm", "PipelineLLM",
]

# name -> (module, attribute in it)
_WHERE: dict[str, tuple[str, str]] = {
    **{n: ("qd.archives", n) for n in ("AddStatus", "ArchiveStats", "CVTArchive", "GridArchive", "cvt_centroids")},
    "load_archive": ("qd.archives", "load"),
    "Domain": ("qd.domain", "Domain"),
    **{n: ("qd.evaluators", n) for n in ("SerialEvaluator", "make_evaluator", "register_backend", "RayEvaluator")},
    **{n: ("qd.llm.pipeline", n) for n in ("PipelineLLM", "pipeline_llm")},
    **{n: ("qd.result", n) for n in ("EvalResult", "Span", "Trace")},
    **{n: ("qd.search", n) for n in ("Search", "SearchOptions")},
    **{n: ("qd.space", n) for n in ("Bool", "Categorical", "Float", "Int", "Seq", "Space", "Text")},
    "LLMClient": ("qd.llm", "LLMClient"),
    **{n: ("qd.runner", n) for n in ("run_search", "open_run")},
}


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module 'qd' has no attribute {name!r}")
    value = getattr(importlib.import_module(where[0]), where[1])
    globals()[name] = value  # found once: later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
