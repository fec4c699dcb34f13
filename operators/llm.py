"""LLM variation operators: language-model crossover (LMX) and LLM mutation.

Both write a prompt from parents in the archive, ask :class:`qd.llm.LLMClient` for one completion
(seeded from the search's rng, so a run with a warm request cache replays exactly), and turn the
text into a configuration with :func:`qd.operators.parse.parse_config` (extract, repair, validate).
When that fails they return ``[]`` and count it; the search then substitutes a classic offspring.
:meth:`LLMOperator.generate` returns the same children with what happened on the way (LLM failure,
invalid output, tokens spent), which the search uses for its per-operator metrics.

LMX (Meyerson et al., "Language Model Crossover") needs no instruction tuning: the parents are
few-shot lines ``score | measures | config`` ordered worst to best, and the prompt ends with a
line whose score is a little above the best parent's, so a base model continues the pattern by
writing a configuration that recombines the parents. LLMMutation shows one parent with its score,
measures and evaluation feedback plus the space's schema and an optional target, as a chat
request for instruct models or as a completion template for base models.
"""
from __future__ import annotations

import json
import math
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from qd.llm.client import LLMError
from qd.operators.base import Generation, Operator
from qd.operators.parse import ParseError, parse_config

__all__ = ["LLM_OPERATORS", "Generation", "LLMMutation", "LMXCrossover", "LLMOperator"]

_FEEDBACK_CHARS = 400  # feedback beyond this rarely helps a small model and costs prompt tokens
_PROMPT_DIGITS = 4  # significant digits of floats in prompts: full doubles cost many tokens each
_PREFILL = '{"'  # LLMMutation's completion template ends with the start of the object


def _compact(value: Any) -> Any:
    """``value`` with floats rounded to a few significant digits, for prompts only."""
    if isinstance(value, float) and math.isfinite(value):
        return float(f"{value:.{_PROMPT_DIGITS}g}")
    if isinstance(value, dict):
        return {k: _compact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_compact(v) for v in value]
    return value


def _fmt_number(value: Any) -> str:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return str(value)
    return "nan" if math.isnan(x) else f"{x:.4g}"


def _fmt_measures(measures: dict[str, Any] | None) -> str:
    return ", ".join(f"{k}: {_fmt_number(v)}" for k, v in (measures or {}).items())


def _one_line(text: str, limit: int = _FEEDBACK_CHARS) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


class LLMOperator(Operator):
    """Shared machinery of the LLM operators: config rendering, the LLM call, parsing, counters.

    Parameters
    ----------
    space : qd.space.Space
        The search space.
    client : qd.llm.LLMClient
        Endpoint to call.
    temperature : float, optional
        Sampling temperature (default: the client's).
    max_tokens : int, optional
        Completion limit; default estimated from the parents' size.
    target : str or dict, optional
        Standing goal for every child, e.g. ``"fewer llm_calls"`` or ``{"llm_calls": 4}``; the
        search passes per-call goals (empty archive regions) to :meth:`generate` instead.
    """

    name = "llm"
    num_parents = 1
    uses_llm = True  # the search runs these in its LLM thread pool
    accepts_target = False  # whether the search should pass archive target regions to generate()

    def __init__(
        self,
        space: Any,
        client: Any,
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
        target: str | None = None,
    ) -> None:
        if client is None:
            raise ValueError(f"{type(self).__name__} needs an LLMClient (got None)")
        self.space = space
        self.client = client
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.target = target
        self._counts = {"offspring": 0, "invalid": 0, "tokens_in": 0, "tokens_out": 0, "calls": 0,
                        "llm_failures": 0, "unchanged": 0}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(client={self.client!r})"

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_lock")
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # -- helpers ----------------------------------------------------------------------------------
    def _render(self, config: dict[str, Any]) -> str:
        """One-line JSON with sorted keys, spaced like ordinary text (easier for small models).

        Floats are shown with 4 significant digits: the model copies what it sees, and 17-digit
        doubles would double the prompt and the completion without telling it anything.
        """
        canonical = json.loads(self.space.canonical(config))
        return json.dumps(_compact(canonical), separators=(", ", ": "), ensure_ascii=False)

    def _token_budget(self, rendered: Sequence[str]) -> int:
        if self.max_tokens is not None:
            return int(self.max_tokens)
        # ~2.5 characters per token for JSON, plus slack for a slightly longer child.
        return int(max(len(r) for r in rendered) / 2.5) + 24

    def _count(self, **deltas: int) -> None:
        with self._lock:
            for key, value in deltas.items():
                self._counts[key] += value

    def _ask(self, prompt: Any, *, chat: bool, stop: Sequence[str] | None, max_tokens: int,
             rng: np.random.Generator) -> tuple[str | None, int]:
        """One LLM call: ``(text, tokens)``; text is ``None`` (counted) when the client gives up."""
        seed = int(rng.integers(0, 2**31 - 1))
        kwargs = dict(stop=stop, temperature=self.temperature, max_tokens=max_tokens, name=self.name,
                      tag=self.name, seed=seed)
        try:
            resp = self.client.chat(prompt, **kwargs) if chat else self.client.complete(prompt, **kwargs)
        except LLMError:
            self._count(llm_failures=1)
            return None, 0
        self._count(calls=1, tokens_in=resp.tokens_in, tokens_out=resp.tokens_out)
        return resp.text, resp.tokens_in + resp.tokens_out

    def _accept(self, text: str | None, tokens: int, fallback: dict[str, Any],
                parents: Sequence[Any]) -> Generation:
        if text is None:
            return Generation([], failed=True)
        try:
            child = parse_config(text, self.space, fallback=fallback)
        except ParseError:
            self._count(invalid=1)
            return Generation([], invalid=True, tokens=tokens)
        self._count(offspring=1)
        digest = self.space.hash(child)
        if any(self.space.hash(p.config) == digest for p in parents):
            self._count(unchanged=1)  # returned anyway; the search counts it as a duplicate
        return Generation([child], tokens=tokens)

    def generate(self, parents: Sequence[Any], rng: np.random.Generator,
                 target: str | dict[str, float] | None = None) -> Generation:
        """Children of ``parents`` with what happened on the way (see :class:`Generation`).

        Parameters
        ----------
        parents : sequence of Parent
            Elites from the archive.
        rng : numpy.random.Generator
            Draws the request's sampling seed (a warm request cache then replays the run).
        target : str or dict, optional
            Goal for this call only (thread-safe, unlike setting :attr:`target`): a text hint or
            measure values of an archive region to reach; ``None`` uses :attr:`target`.
        """
        raise NotImplementedError

    def vary(self, parents: Sequence[Any], rng: np.random.Generator) -> list[dict[str, Any]]:
        """Children of ``parents`` (``[]`` when the model's output is unusable or the call failed)."""
        return self.generate(parents, rng).configs

    def stats(self) -> dict[str, int]:
        """Counters of this operator's calls.

        ``offspring`` (valid children), ``invalid`` (unparseable or invalid output), ``calls``,
        ``tokens_in``, ``tokens_out``, ``llm_failures`` (calls that raised LLMError),
        ``unchanged`` (children identical to a parent).
        """
        with self._lock:
            return dict(self._counts)


class LMXCrossover(LLMOperator):
    """Language-model crossover: ``k`` parents as few-shot lines, the model writes the next one.

    Parameters
    ----------
    space, client : see :class:`LLMOperator`
    k : int
        Parents per prompt (``num_parents``).
    score_name : str
        Label of the objective in the prompt.
    **kwargs
        ``temperature``, ``max_tokens``, ``target`` (a text hint shown as a header line, or a
        dict of measure values written on the line the model completes).
    """

    name = "lmx"

    def __init__(self, space: Any, client: Any, k: int = 4, *, score_name: str = "score", **kwargs: Any) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        super().__init__(space, client, **kwargs)
        self.k = int(k)
        self.num_parents = self.k
        self.score_name = score_name

    def _line(self, score: str, measures: dict[str, Any] | None) -> str:
        head = f"{self.score_name}: {score}"
        text = _fmt_measures(measures)
        return f"{head} | {text} | config:" if text else f"{head} | config:"

    def prompt(self, parents: Sequence[Any], target: str | dict[str, float] | None = None
               ) -> tuple[str, dict[str, Any], list[str]]:
        """The few-shot prompt, the fallback config (best parent) and the rendered parent configs.

        ``target`` (default :attr:`target`): a text goal becomes a ``# goal:`` header line; measure
        values are written on the line the model completes instead of the best parent's.
        """
        target = self.target if target is None else target
        unique: dict[str, Any] = {}
        for p in parents:
            unique.setdefault(self.space.hash(p.config), p)
        # Worst to best, so the line the model writes next follows the best (NaN counts as worst).
        ordered = sorted(unique.values(),
                         key=lambda p: -math.inf if math.isnan(float(p.objective)) else float(p.objective))
        rendered = [self._render(p.config) for p in ordered]
        lines = []
        if isinstance(target, str) and target:
            lines.append(f"# goal: {_one_line(target, 200)}")
        for p, r in zip(ordered, rendered):
            lines.append(f"{self._line(_fmt_number(p.objective), p.measures)} {r}")
        best = ordered[-1]
        scores = [float(p.objective) for p in ordered if not math.isnan(float(p.objective))]
        if scores:
            spread = max(scores) - min(scores)
            goal = max(scores) + (0.1 * spread if spread > 0 else 0.05 * abs(max(scores)) + 1e-3)
        else:
            goal = float("nan")
        measures = target if isinstance(target, dict) else best.measures
        lines.append(self._line(_fmt_number(goal), measures))
        return "\n".join(lines), best.config, rendered

    def generate(self, parents: Sequence[Any], rng: np.random.Generator,
                 target: str | dict[str, float] | None = None) -> Generation:
        """One child recombining ``parents`` (see :meth:`LLMOperator.generate`)."""
        if not parents:
            raise ValueError("LMXCrossover needs at least one parent")
        prompt, fallback, rendered = self.prompt(parents, target)
        if self.client.api == "chat":
            # Instruct endpoints may not continue raw text; ask for the continuation explicitly.
            messages = [{"role": "user", "content": "Continue this list with exactly one new line. "
                         "Reply with the JSON config of that line only.\n\n" + prompt}]
            text, tokens = self._ask(messages, chat=True, stop=None,
                                     max_tokens=2 * self._token_budget(rendered) + 32, rng=rng)
        else:
            text, tokens = self._ask(prompt, chat=False, stop=["\n"], max_tokens=self._token_budget(rendered),
                                     rng=rng)
        return self._accept(text, tokens, fallback, parents)


class LLMMutation(LLMOperator):
    """LLM mutation: one parent with score, measures, feedback, the schema and a target.

    Uses a chat prompt when the client's ``api`` is ``"chat"`` and a completion template (which a
    base model continues with one JSON line) otherwise.

    Parameters
    ----------
    space, client : see :class:`LLMOperator`
    score_name : str
        Label of the objective in the prompt.
    **kwargs
        ``temperature``, ``max_tokens``, ``target``.
    """

    name = "llm_mutation"
    num_parents = 1
    accepts_target = True

    SYSTEM = ("You edit configurations of a compound AI system to improve it. "
              "Answer with one JSON object that follows the schema, and nothing else.")

    def __init__(self, space: Any, client: Any, *, score_name: str = "score", **kwargs: Any) -> None:
        super().__init__(space, client, **kwargs)
        self.score_name = score_name
        self._schema: str | None = None

    @property
    def schema(self) -> str:
        """``space.to_prompt()``, computed once."""
        if self._schema is None:
            self._schema = self.space.to_prompt()
        return self._schema

    def _goal(self, target: str | dict[str, float] | None) -> str:
        target = self.target if target is None else target
        if isinstance(target, dict):
            return "reach " + _fmt_measures(target) + f" with a high {self.score_name}"
        return _one_line(target, 200) if target else f"a higher {self.score_name}"

    def chat_messages(self, parent: Any, target: str | dict[str, float] | None = None) -> list[dict[str, str]]:
        """Chat prompt for instruct models (``target`` defaults to :attr:`target`)."""
        measures = _fmt_measures(parent.measures) or "none"
        user = (
            f"Schema:\n{self.schema}\n\n"
            f"Current configuration ({self.score_name} {_fmt_number(parent.objective)}; {measures}):\n"
            f"{self._render(parent.config)}\n\n"
            f"Evaluation feedback: {_one_line(getattr(parent, 'feedback', '') or 'none')}\n"
            f"Goal: {self._goal(target)}\n\n"
            "Write one modified configuration that changes one to three fields toward the goal. "
            "Reply with the JSON object only."
        )
        return [{"role": "system", "content": self.SYSTEM}, {"role": "user", "content": user}]

    def completion_prompt(self, parent: Any, target: str | dict[str, float] | None = None) -> str:
        """Completion template for base models: ends with the new line's ``{"``.

        Writing the start of the object keeps a base model on one line like the example above
        it. Ending at ``config:`` let gemma-3-270m open a multi-line object (``{`` then newline)
        that the newline stop cut (now and then); ending at ``{`` made that the
        usual answer; after ``{"`` it writes a key name.
        """
        return (
            "# Configuration schema\n"
            f"{self.schema}\n\n"
            "# Current configuration\n"
            f"{self.score_name}: {_fmt_number(parent.objective)} | {_fmt_measures(parent.measures) or 'none'}\n"
            f"config: {self._render(parent.config)}\n"
            f"# Feedback: {_one_line(getattr(parent, 'feedback', '') or 'none')}\n"
            f"# Goal: {self._goal(target)}\n\n"
            "# Modified configuration (one to three fields changed toward the goal)\n"
            f"config: {_PREFILL}"
        )

    def generate(self, parents: Sequence[Any], rng: np.random.Generator,
                 target: str | dict[str, float] | None = None) -> Generation:
        """One mutated child of ``parents[0]`` (see :meth:`LLMOperator.generate`)."""
        if not parents:
            raise ValueError("LLMMutation needs a parent")
        parent = parents[0]
        budget = self._token_budget([self._render(parent.config)])
        if self.client.api == "chat":
            text, tokens = self._ask(self.chat_messages(parent, target), chat=True, stop=None,
                                     max_tokens=2 * budget + 32, rng=rng)
        else:
            text, tokens = self._ask(self.completion_prompt(parent, target), chat=False, stop=["\n"],
                                     max_tokens=budget, rng=rng)
            if text is not None and not text.lstrip().startswith("{"):
                text = _PREFILL + text  # what the prompt ended with
        return self._accept(text, tokens, parent.config, parents[:1])


#: Registry entries for ``operators/__init__.py`` (merged by the lead).
LLM_OPERATORS: dict[str, type] = {"lmx": LMXCrossover, "llm_mutation": LLMMutation}
