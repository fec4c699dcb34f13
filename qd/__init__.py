"""qd: quality-diversity search over the design space of compound AI systems.

The public API, re-exported here::

    import qd
    archive = qd.GridArchive(dims=[20, 20], ranges=[(0, 40), (0, 4000)], measure_names=["llm_calls", "tokens_total"])
    with qd.Search(domain, archive, qd.RayEvaluator(domain), operators=..., measures=..., budget=1000) as search:
        search.run()   # leaving the block stops LLM threads and the evaluator
"""
import qd._source_tree  # noqa: F401  (first: in a checkout, qd.archives & co. are the folders beside qd/)
from qd.archives import AddStatus, ArchiveStats, CVTArchive, GridArchive, cvt_centroids
from qd.archives import load as load_archive
from qd.domain import Domain
from qd.evaluators import SerialEvaluator, make_evaluator
from qd.function_domain import FunctionDomain, function_domain
from qd.llm.pipeline import PipelineLLM, pipeline_llm
from qd.result import EvalResult, Span, Trace
from qd.search import Search, SearchOptions
from qd.space import Bool, Categorical, Float, Int, Seq, Space, Text

__all__ = [
    "GridArchive", "CVTArchive", "ArchiveStats", "AddStatus", "cvt_centroids", "load_archive",
    "Space", "Float", "Int", "Categorical", "Bool", "Text", "Seq",
    "Domain", "EvalResult", "Span", "Trace", "Search", "SearchOptions", "SerialEvaluator", "RayEvaluator",
    "make_evaluator",
    "LLMClient", "run_search", "open_run", "FunctionDomain", "function_domain", "pipeline_llm", "PipelineLLM",
]


def __getattr__(name: str):
    # Heavy imports (ray, openai) only when asked for.
    if name == "RayEvaluator":
        from qd.evaluators.ray_eval import RayEvaluator

        return RayEvaluator
    if name == "LLMClient":
        from qd.llm import LLMClient

        return LLMClient
    if name in ("run_search", "open_run"):
        from qd import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'qd' has no attribute {name!r}")
