"""A domain in a few lines: a space, a list of examples and a function scoring one example.

::

    def score(config, example):
        reply = qd.pipeline_llm().openai_client().chat.completions.create(...)
        return float(reply.choices[0].message.content.strip() == example["answer"])

    domain = qd.FunctionDomain(space, examples, score, measures={"llm_calls": (0, 10)})

qd runs the examples of one configuration concurrently (``concurrency`` at a time, in threads
or, for an ``async def`` score, as asyncio tasks on the process's long-lived event loop,
:mod:`qd.worker_loop`, so module-level async clients keep working). The objective is the mean
score and the per-example scores are kept in :attr:`qd.result.EvalResult.scores`. A score
function may say what went wrong besides the number, as GEPA's feedback metrics do:
``(score, "text")`` or an object with ``.score`` and ``.feedback``
(``dspy.Prediction(score=..., feedback=...)``); the lowest-scoring examples' texts go into the
evaluation's feedback, which LLM operators read. An example whose score function raises, or
returns something that is not a finite number (``None``, NaN, a string), scores 0 and is
reported with its index in ``metrics["example_errors"]`` and the feedback; it never fails the
evaluation. LLM calls inside the score function are traced automatically
(:mod:`qd.analysis.autotrace`); each example runs in an
:func:`~qd.analysis.tracer.example_scope`, so structural descriptors (``critical_path``,
``max_fanout``) describe one example whatever the concurrency (:mod:`qd.analysis.descriptors`).
"""
from __future__ import annotations

import asyncio
import contextvars
import inspect
import math
import numbers
import random
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from qd.analysis.tracer import example_scope
from qd.domain import SEARCH, VALIDATION, Domain
from qd.result import EvalResult
from qd.space import Space
from qd.worker_loop import run_coroutine

__all__ = ["FunctionDomain", "function_domain", "calls_pipeline_llm"]

_MAX_REPORTED = 20  # example errors kept per evaluation (the count is always exact)
_FEEDBACK_SHOWN = 4  # examples whose own feedback text the evaluation's feedback quotes (lowest scores first)
_FEEDBACK_CHARS = 240  # of each example's feedback text


def _split_feedback(value: Any) -> tuple[Any, str]:
    """``(score, text)`` from what a score function returned.

    A pair ``(score, "text")``, an object with ``.score`` and ``.feedback`` (``dspy.Prediction``),
    or a bare score (no text).
    """
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], str):
        return value[0], value[1]
    if hasattr(value, "score") and hasattr(value, "feedback") and not isinstance(value, (str, bytes)):
        feedback = value.feedback
        return value.score, "" if feedback is None else str(feedback)
    return value, ""


def _as_score(value: Any) -> tuple[float, str]:
    """A score and ``""``, or 0 and why ``value`` is not one.

    Anything ``float()`` reads as one number is a score: bools, numpy scalars and booleans,
    0-d arrays, ``Decimal``; text, ``None`` and arrays of several values are not.
    """
    number = None
    if not isinstance(value, (str, bytes)) and value is not None and getattr(value, "ndim", 0) == 0:
        try:
            number = float(value)
        except (TypeError, ValueError):
            pass
    if number is None:
        return 0.0, f"returned {type(value).__name__} {str(value)[:60]!r} (expected a number)"
    if math.isfinite(number):
        return number, ""
    return 0.0, f"returned {number!r} (not a finite number)"


def _check_measures(measures: Mapping[str, Any] | Sequence[str], bins: Any) -> dict[str, Any]:
    """``measures=`` as ``{name: range or None}``, refusing what a run could not use (naming the argument to fix).

    A list of names has no ranges (the run config's ``archive.ranges`` gives them).
    """
    from qd.analysis.descriptors import BUILTINS

    if isinstance(measures, str):
        raise ValueError(f"measures must be a list of descriptor names or a {{name: (low, high)}} mapping, "
                         f"got the string {measures!r}")
    named = dict(measures) if isinstance(measures, Mapping) else dict.fromkeys(measures)
    for name, bounds in named.items():
        if not isinstance(name, str) or (name not in BUILTINS and ":" not in name):
            import difflib

            close = difflib.get_close_matches(str(name), BUILTINS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"measures: {name!r} is not a built-in descriptor{hint}; a FunctionDomain's "
                             f"results carry no measures of their own, so use one of {', '.join(BUILTINS)} "
                             "or a 'package.module:function' reference")
        if bounds is None:
            continue
        try:
            low, high = (float(b) for b in bounds)
        except (TypeError, ValueError):
            raise ValueError(f"measures[{name!r}] must be a (low, high) pair of numbers, got {bounds!r}") from None
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise ValueError(f"measures[{name!r}] = {bounds!r}: the range needs finite low < high")
    if isinstance(bins, bool) or not isinstance(bins, numbers.Integral) or bins < 1:
        raise ValueError(f"bins must be an integer >= 1 (grid bins per measure), got {bins!r}")
    return named


def calls_pipeline_llm(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` calls :func:`qd.pipeline_llm`, as far as its code shows.

    Looks for the name ``pipeline_llm`` (``qd.pipeline_llm()``, an imported alias of it) in the
    code of ``fn`` (a function, a bound method or an object with ``__call__``), the functions
    nested in it or held in its closure, and the functions and classes of ``fn``'s own module that
    it names, transitively. Code elsewhere (another module, a library) is not read: such a
    pipeline declares ``uses_llm=True``.
    """
    from qd.llm.pipeline import pipeline_llm

    func = getattr(fn, "func", fn)  # a functools.partial
    module = getattr(getattr(func, "__func__", func), "__module__", None)
    todo: list[Any] = [func]
    seen: set[int] = set()
    while todo:
        obj = todo.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if inspect.isclass(obj):
            todo += [v for v in vars(obj).values() if inspect.isfunction(v)]
            continue
        func = getattr(obj, "__func__", obj)
        if not inspect.isfunction(func):
            if callable(obj) and not inspect.isbuiltin(obj):  # an object with a __call__ method: its class's code
                todo += [cls for cls in type(obj).__mro__ if cls is not object]
            continue
        cells = []
        for cell in func.__closure__ or ():
            try:
                cells.append(cell.cell_contents)
            except ValueError:  # a cell not yet filled
                pass
        if any(c is pipeline_llm for c in cells):
            return True
        todo += [c for c in cells if (inspect.isfunction(c) or inspect.isclass(c)) and c.__module__ == module]
        codes = [func.__code__]
        while codes:
            code = codes.pop()
            if "pipeline_llm" in code.co_names:
                return True
            codes += [c for c in code.co_consts if inspect.iscode(c)]
            for name in code.co_names:
                value = func.__globals__.get(name)
                if value is pipeline_llm:
                    return True
                if (inspect.isfunction(value) or inspect.isclass(value)) and value.__module__ == module:
                    todo.append(value)
    return False


def _is_async(score: Callable[..., Any]) -> bool:
    """An ``async def`` function, or an object whose ``__call__`` is one."""
    return inspect.iscoroutinefunction(score) or inspect.iscoroutinefunction(type(score).__call__)


class FunctionDomain(Domain):
    """A domain from a score function over examples.

    Parameters
    ----------
    space : Space
        The configurations to search.
    examples : sequence
        The search split: inputs the score function receives one at a time (any picklable value).
    score : callable
        ``score(config, example) -> float`` (or ``async def``): higher is better. It may return
        ``(score, "what went wrong")`` or an object with ``.score`` and ``.feedback`` instead.
    validation : sequence, optional
        Held-out examples, kept for re-scoring elites later (``split="validation"``); the search
        never sees them.
    measures : mapping of str to (float, float), or sequence of str, optional
        Default measures and their ranges (e.g. ``{"llm_calls": (0, 20), "tokens_total": (0, 5000)}``);
        any built-in descriptor name or ``"package.module:function"`` works. A list of names gives
        measures without ranges: the run config's ``archive.ranges`` must give them. Without
        measures the run config must name them. Structural descriptors (``critical_path``,
        ``max_fanout``) describe one example (the largest over the examples); ``llm_calls``,
        ``tokens_total`` and ``cost_usd`` count the whole evaluation, their ``_per_example``
        forms one example on average (:mod:`qd.analysis.descriptors`).
    bins : int
        Grid bins per default measure.
    concurrency : int
        Examples of one configuration run at once (no descriptor depends on it but ``latency_s``).
    sample : int, optional
        Score a random subset of this many examples per evaluation (draw ``d`` of the noise
        machinery uses subset ``d``), and as many held-out examples per validation draw (each
        draw another subset); ``None`` scores them all every time.
    deterministic : bool
        The score function gives the same score for the same configuration and example (no
        sampling temperature, no randomness). With a fixed held-out set (no ``sample``, or at
        least as large as ``validation``), ``qd validate`` then scores it once per elite: further
        draws would repeat it. False (the default): each draw re-scores the held-out set, which
        measures the score's own noise.
    name : str
        Name shown in reports.
    uses_llm : bool, optional
        Whether the score function calls the run's LLM (:func:`qd.pipeline_llm`): with the embedded
        model, its server then starts in the driver before the first evaluation, so that Ray
        workers share it. ``None`` (the default) reads the score function's code
        (:func:`calls_pipeline_llm`); a pipeline that calls its own endpoint starts no model.
        Declare ``True`` when the call to :func:`qd.pipeline_llm` is in another module's code.
    """

    def __init__(self, space: Space, examples: Sequence[Any], score: Callable[..., Any], *,
                 validation: Sequence[Any] | None = None,
                 measures: Mapping[str, tuple[float, float]] | Sequence[str] | None = None,
                 bins: int = 10, concurrency: int = 8, sample: int | None = None, name: str = "function",
                 uses_llm: bool | None = None, deterministic: bool = False) -> None:
        if not isinstance(space, Space):
            raise TypeError(f"space must be a qd.Space, got {type(space).__name__}")
        if not callable(score):
            raise TypeError(f"score must be a function score(config, example) -> float, got {score!r}")
        if isinstance(examples, (str, bytes)) or not isinstance(examples, Sequence):
            raise ValueError(f"examples must be a list (the inputs score(config, example) receives), got "
                             f"{type(examples).__name__}: wrap it in list(...)")
        if not examples:
            raise ValueError("examples is empty: give at least one input for score(config, example)")
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if sample is not None and not 1 <= sample <= len(examples):
            raise ValueError(f"sample must be in [1, {len(examples)}] (the number of examples), got {sample}")
        self.space = space
        self.examples = list(examples)
        self.validation = list(validation) if validation else []
        self.score = score
        self.concurrency = int(concurrency)
        self.sample = sample
        self.name = name
        self.uses_llm = calls_pipeline_llm(score) if uses_llm is None else bool(uses_llm)
        named = _check_measures(measures or {}, bins)
        self.default_measures = tuple(named)
        ranges = [r for r in named.values() if r is not None]
        # Ranges for every measure, or none (a list of names): the runner then asks the run config for them.
        self.default_ranges = tuple(tuple(map(float, r)) for r in ranges) if len(ranges) == len(named) else ()
        self.default_bins = tuple(int(bins) for _ in named)
        self.objective_name = getattr(score, "__name__", "score")
        self.splits = (SEARCH, VALIDATION) if self.validation else (SEARCH,)
        self.deterministic = bool(deterministic)
        fixed_held_out = sample is None or sample >= len(self.validation)
        self.validation_draws = 1 if self.deterministic and fixed_held_out else None
        # Ray ships the score function's module to workers that cannot import it.
        self.source_modules = tuple(m for m in (getattr(score, "__module__", None),) if m)

    def _chosen(self, draw: int, split: str) -> list[tuple[int, Any]]:
        pool = self.validation if split == VALIDATION else self.examples
        indexed = list(enumerate(pool))
        if self.sample is None or self.sample >= len(pool):
            return indexed
        return random.Random(f"{split}-{draw}" if split == VALIDATION else draw).sample(indexed, self.sample)

    def evaluate(self, config: dict, *, draw: int = 0, split: str = SEARCH) -> EvalResult:
        """Score ``config`` on every example (or draw ``draw``'s subset); the objective is the mean."""
        chosen = self._chosen(draw, split)
        if _is_async(self.score):
            outcomes = run_coroutine(self._run_async(config, chosen))
        elif self.concurrency == 1 or len(chosen) == 1:
            outcomes = [self._one(config, i, ex) for i, ex in chosen]
        else:
            with ThreadPoolExecutor(min(self.concurrency, len(chosen)), thread_name_prefix="qd-example") as pool:
                # Each example in a copy of this context, so it belongs to this evaluation (its trace,
                # qd.pipeline_llm()) even with autotrace, which copies contexts into threads, turned off.
                futures = [pool.submit(contextvars.copy_context().run, self._one, config, i, ex) for i, ex in chosen]
                outcomes = [f.result() for f in futures]
        scores = [s for s, _, _ in outcomes]
        errors = [{"index": i, "error": why} for (i, _), (_, why, _) in zip(chosen, outcomes) if why]
        metrics: dict[str, Any] = {"examples": len(chosen), "failed_examples": len(errors)}
        feedback = f"mean score {sum(scores) / len(scores):.4g} over {len(scores)} examples"
        if errors:
            metrics["example_errors"] = errors[:_MAX_REPORTED]
            shown = "; ".join(f"#{e['index']}: {e['error']}" for e in errors[:3])
            feedback += f"; {len(errors)} scored 0 because the score function failed ({shown})"
        said = sorted((score, i, " ".join(text.split())[:_FEEDBACK_CHARS])
                      for (i, _), (score, _, text) in zip(chosen, outcomes) if text.strip())
        feedback = "\n".join([feedback[:500], *(f"#{i} (score {score:.3g}): {text}"
                                                for score, i, text in said[:_FEEDBACK_SHOWN])])
        return EvalResult(objective=sum(scores) / len(scores), scores=scores, metrics=metrics, feedback=feedback)

    def _one(self, config: dict, index: int, example: Any) -> tuple[float, str, str]:
        with example_scope(index):
            try:
                value, text = _split_feedback(self.score(config, example))
            except Exception as exc:  # a failing example scores 0; the configuration is still evaluated
                return 0.0, f"raised {type(exc).__name__}: {exc}"[:300], ""
            return (*_as_score(value), text)

    async def _run_async(self, config: dict, chosen: list[tuple[int, Any]]) -> list[tuple[float, str, str]]:
        limit = asyncio.Semaphore(self.concurrency)

        async def one(index: int, example: Any) -> tuple[float, str, str]:
            async with limit:
                with example_scope(index):
                    try:
                        value, text = _split_feedback(await self.score(config, example))
                    except Exception as exc:
                        return 0.0, f"raised {type(exc).__name__}: {exc}"[:300], ""
                    return (*_as_score(value), text)

        return list(await asyncio.gather(*(one(i, ex) for i, ex in chosen)))


def function_domain(space: Space, examples: Sequence[Any],
                    **options: Any) -> Callable[[Callable[..., Any]], FunctionDomain]:
    """Decorator form of :class:`FunctionDomain`: the decorated score function becomes the domain.

    Examples
    --------
    >>> @function_domain(Space({"k": Int(1, 5)}), examples=[1, 2, 3])   # doctest: +SKIP
    ... def domain(config, example):
    ...     return float(config["k"] >= example)
    """

    def wrap(score: Callable[..., Any]) -> FunctionDomain:
        # The module attribute now names the domain; pickle finds the function as its `.score`.
        score.__qualname__ = f"{score.__qualname__}.score"
        return FunctionDomain(space, examples, score, **options)

    return wrap
