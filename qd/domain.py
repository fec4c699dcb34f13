"""The interface every domain (built-in or a user's) implements."""
from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from qd.result import DEFAULT_TRACE_TEXT_CHARS, EvalResult
from qd.space import Space

if TYPE_CHECKING:
    from qd.llm.pipeline import PipelineLLM

SEARCH, VALIDATION = "search", "validation"


class Domain:
    """A search problem: a configuration space and a way to evaluate configurations.

    Subclasses set :attr:`space` and implement :meth:`evaluate`. They may also
    declare default measures (descriptor names, ranges and bins) and their own
    descriptor functions.

    Attributes
    ----------
    name : str
        Registry name (``qd domains`` lists the built-ins).
    space : Space
        The configurations this domain accepts.
    default_measures : sequence of str
        Descriptor names used when the run config names none.
    default_ranges : sequence of (float, float)
        Range of each default measure.
    default_bins : sequence of int
        Grid bins of each default measure.
    objective_name : str
        Label for the objective on plots and reports (and a name for it in ``--where``).
    qd_score_offset : float
        Default QD-score offset: a lower bound of the objective, so every elite counts positively.
    splits : sequence of str
        Instance splits :meth:`evaluate` accepts: ``"search"`` always; ``"validation"`` when the
        domain holds instances the search never sees (``qd validate`` needs it).
    validation_draws : int or None
        How many ``"validation"`` draws differ; ``qd validate`` makes no more than that per elite.
        None (the default): every draw differs (fresh instances or seeds, or a noisy score). 1: a
        fixed held-out set and a deterministic score, so a second draw would repeat the first.
    uses_llm : bool
        Whether the domain calls the run's LLM (:func:`qd.pipeline_llm`). With the embedded model
        (``[llm] base_url = ""``) and ``True``, its server starts in the driver before the
        evaluator, so Ray workers share it; with ``False`` (the default) no model starts for the
        domain, and the embedded model runs only if an LLM operator calls it. A pipeline that calls
        its own endpoint declares ``False`` (:class:`qd.FunctionDomain` reads it from the score
        function's code).
    makes_calls : bool
        Whether evaluations may call LLMs or tools (``True``, the default): each then runs under
        a :class:`~qd.analysis.Tracer` that records them as spans. A domain whose evaluations only
        compute (the arm) declares ``False`` and skips the tracer's cost per evaluation; a call it
        makes anyway through qd's LLM client is counted as untraced
        (``metrics["untraced_llm_calls"]``), not lost.
    source_modules : sequence of str
        Modules holding the domain's code besides its class's (a score function's): Ray ships
        those the workers cannot import.
    pipeline_llm : qd.PipelineLLM or None
        Set by the runner from ``[llm]``: what :func:`qd.pipeline_llm` returns inside evaluations.
    llm_prices : dict or None
        Set by the runner from ``[llm] prices``: the price table of the evaluations' traced calls.
    trace_text_chars : int
        Set by the runner from ``[run] trace_text_chars``: characters of prompt and answer text kept
        per traced call (0: none).

    Notes
    -----
    Domains whose score depends on instances (questions, examples) or seeds may accept two
    keyword-only arguments, ``evaluate(config, *, draw=0, split="search")``: ``draw`` 0 of the
    ``"search"`` split is the ordinary evaluation; every other draw must use fresh instances or
    seeds (re-evaluations under noise, ``qd.noise``), and ``split="validation"`` instances
    disjoint from the search's. :func:`evaluate_draw` calls a domain that way.
    """

    name: str = "domain"
    space: Space
    default_measures: Sequence[str] = ()
    default_ranges: Sequence[tuple[float, float]] = ()
    default_bins: Sequence[int] = ()
    objective_name: str = "fitness"
    qd_score_offset: float = 0.0
    splits: Sequence[str] = (SEARCH,)
    validation_draws: int | None = None
    uses_llm: bool = False
    makes_calls: bool = True
    source_modules: Sequence[str] = ()
    pipeline_llm: PipelineLLM | None = None
    llm_prices: Mapping[str, tuple[float, float]] | None = None
    trace_text_chars: int = DEFAULT_TRACE_TEXT_CHARS

    def evaluate(self, config: dict) -> EvalResult:
        """Run ``config`` and score it. Must be safe to call from worker processes."""
        raise NotImplementedError

    def descriptors(self) -> dict[str, Callable[[dict, EvalResult], float]]:
        """Domain-defined descriptors: name -> f(config, result) -> float."""
        return {}

    def predict_measures(self, config: dict) -> dict[str, float] | None:
        """Measures ``config`` is expected to get, computed without evaluating it (optional).

        A domain with a static cost model (call counts from the configuration, say) returns them
        by measure name; the search's pre-evaluation filter and LLM operators use it, and learn
        the measures it leaves out from the run's results. The default knows none (None).
        """
        return None

    def default_config(self) -> dict:
        """The configuration the user runs today, where a search can start (``[run] seeds = "default"``).

        The default implementation is every parameter's default (:meth:`Space.default`);
        override it to name the system actually in use.
        """
        return self.space.default()


def accepts_draws(domain: Domain) -> bool:
    """True when ``domain.evaluate`` takes the ``draw`` and ``split`` keywords."""
    try:
        params = inspect.signature(domain.evaluate).parameters
    except (TypeError, ValueError):
        return False
    return "draw" in params and "split" in params


def evaluate_draw(domain: Domain, config: dict, draw: int = 0, split: str = SEARCH) -> EvalResult:
    """Evaluate ``config`` on draw ``draw`` of ``split`` (see :class:`Domain`, Notes).

    A domain without the keywords is called plainly for the search split: its re-evaluations
    differ only as much as the domain is noisy by itself.

    Raises
    ------
    ValueError
        For a split the domain does not declare in :attr:`Domain.splits`.
    """
    if split not in domain.splits:
        raise ValueError(f"domain {domain.name!r} has no {split!r} split (its splits: {', '.join(domain.splits)}); "
                         f"declare it in the domain's `splits` and accept evaluate(config, *, draw, split)")
    if not accepts_draws(domain):
        if split != SEARCH:
            raise ValueError(f"domain {domain.name!r} declares a {split!r} split but its evaluate() takes no "
                             f"draw/split keywords")
        return domain.evaluate(config)
    return domain.evaluate(config, draw=int(draw), split=split)
