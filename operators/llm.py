"""LLM variation operators: language-model crossover (LMX) and LLM mutation.

Both write a prompt from parents in the archive, ask :class:`qd.llm.LLMClient` for one completion
(seeded from the search's rng, so a run with a warm request cache replays exactly), and turn the
text into a configuration with :func:`operators.parse.parse_config` (extract, repair, validate).
When that fails they return ``[]`` and count it; the search then substitutes a classic offspring.

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
from typing import Any, Sequence

import numpy as np

from operators.parse import ParseError, parse_config

__all__ = ["LLM_OPERATORS", "LLMMutation", "LMXCrossover", "LLMOperator"]

_FEEDBACK_CHARS = 400  # feedback beyond this rarely helps a small model and costs prompt tokens


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


class LLMOperator:
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
    target : str, optional
        Hint for the next child, e.g. ``"fewer llm_calls"``; the search may set it per call.
    """

    name = "llm"
    num_parents = 1
    uses_llm = True  # the search runs these in its LLM thread pool

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
        """One-line JSON with sorted keys, spaced like ordinary text (easier for small models)."""
        return json.dumps(json.loads(self.space.canonical(config)), separators=(", ", ": "), ensure_ascii=False)

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
             rng: np.random.Generator) -> str | None:
        """One LLM call; ``None`` (counted) when the client gives up."""
        from qd.llm.client import LLMError

        seed = int(rng.integers(0, 2**31 - 1))
        kwargs = dict(stop=stop, temperature=self.temperature, max_tokens=max_tokens, name=self.name,
                      tag=self.name, seed=seed)
        try:
            resp = self.client.chat(prompt, **kwargs) if chat else self.client.complete(prompt, **kwargs)
        except LLMError:
            self._count(llm_failures=1)
            return None
        self._count(calls=1, tokens_in=resp.tokens_in, tokens_out=resp.tokens_out)
        return resp.text

    def _accept(self, text: str | None, fallback: dict[str, Any], parents: Sequence[Any]) -> list[dict[str, Any]]:
        if text is None:
            return []
        try:
            child = parse_config(text, self.space, fallback=fallback)
        except ParseError:
            self._count(invalid=1)
            return []
        self._count(offspring=1)
        digest = self.space.hash(child)
        if any(self.space.hash(p.config) == digest for p in parents):
            self._count(unchanged=1)  # returned anyway; the search counts it as a duplicate
        return [child]

    def stats(self) -> dict[str, int]:
        """Counters: ``offspring`` (valid children), ``invalid`` (unparseable or invalid output),
        ``calls``, ``tokens_in``, ``tokens_out``, ``llm_failures`` (calls that raised LLMError),
        ``unchanged`` (children identical to a parent)."""
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

    def prompt(self, parents: Sequence[Any]) -> tuple[str, dict[str, Any], list[str]]:
        """The few-shot prompt, the fallback config (best parent) and the rendered parent configs."""
        unique: dict[str, Any] = {}
        for p in parents:
            unique.setdefault(self.space.hash(p.config), p)
        # Worst to best, so the line the model writes next follows the best (NaN counts as worst).
        ordered = sorted(unique.values(), key=lambda p: -math.inf if math.isnan(float(p.fitness)) else float(p.fitness))
        rendered = [self._render(p.config) for p in ordered]
        lines = []
        if isinstance(self.target, str) and self.target:
            lines.append(f"# goal: {_one_line(self.target, 200)}")
        for p, r in zip(ordered, rendered):
            lines.append(f"{self._line(_fmt_number(p.fitness), p.measures)} {r}")
        best = ordered[-1]
        scores = [float(p.fitness) for p in ordered if not math.isnan(float(p.fitness))]
        if scores:
            spread = max(scores) - min(scores)
            goal = max(scores) + (0.1 * spread if spread > 0 else 0.05 * abs(max(scores)) + 1e-3)
        else:
            goal = float("nan")
        measures = self.target if isinstance(self.target, dict) else best.measures
        lines.append(self._line(_fmt_number(goal), measures))
        return "\n".join(lines), best.config, rendered

    def vary(self, parents: Sequence[Any], rng: np.random.Generator) -> list[dict[str, Any]]:
        """One child recombining ``parents`` (``[]`` when the model's output is unusable)."""
        if not parents:
            raise ValueError("LMXCrossover.vary needs at least one parent")
        prompt, fallback, rendered = self.prompt(parents)
        if self.client.api == "chat":
            # Instruct endpoints may not continue raw text; ask for the continuation explicitly.
            messages = [{"role": "user", "content": "Continue this list with exactly one new line. "
                         "Reply with the JSON config of that line only.\n\n" + prompt}]
            text = self._ask(messages, chat=True, stop=None, max_tokens=2 * self._token_budget(rendered) + 32,
                             rng=rng)
        else:
            text = self._ask(prompt, chat=False, stop=["\n"], max_tokens=self._token_budget(rendered), rng=rng)
        return self._accept(text, fallback, parents)


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

    def _goal(self) -> str:
        if isinstance(self.target, dict):
            return "reach " + _fmt_measures(self.target) + f" with a high {self.score_name}"
        return _one_line(self.target, 200) if self.target else f"a higher {self.score_name}"

    def chat_messages(self, parent: Any) -> list[dict[str, str]]:
        """Chat prompt for instruct models."""
        measures = _fmt_measures(parent.measures) or "none"
        user = (
            f"Schema:\n{self.schema}\n\n"
            f"Current configuration ({self.score_name} {_fmt_number(parent.fitness)}; {measures}):\n"
            f"{self._render(parent.config)}\n\n"
            f"Evaluation feedback: {_one_line(getattr(parent, 'feedback', '') or 'none')}\n"
            f"Goal: {self._goal()}\n\n"
            "Write one modified configuration that changes one to three fields toward the goal. "
            "Reply with the JSON object only."
        )
        return [{"role": "system", "content": self.SYSTEM}, {"role": "user", "content": user}]

    def completion_prompt(self, parent: Any) -> str:
        """Completion template for base models: ends where the new JSON line starts."""
        return (
            "# Configuration schema\n"
            f"{self.schema}\n\n"
            "# Current configuration\n"
            f"{self.score_name}: {_fmt_number(parent.fitness)} | {_fmt_measures(parent.measures) or 'none'}\n"
            f"config: {self._render(parent.config)}\n"
            f"# Feedback: {_one_line(getattr(parent, 'feedback', '') or 'none')}\n"
            f"# Goal: {self._goal()}\n\n"
            "# Modified configuration (one to three fields changed toward the goal)\n"
            "config:"
        )

    def vary(self, parents: Sequence[Any], rng: np.random.Generator) -> list[dict[str, Any]]:
        """One mutated child of ``parents[0]`` (``[]`` when the model's output is unusable)."""
        if not parents:
            raise ValueError("LLMMutation.vary needs a parent")
        parent = parents[0]
        budget = self._token_budget([self._render(parent.config)])
        if self.client.api == "chat":
            text = self._ask(self.chat_messages(parent), chat=True, stop=None, max_tokens=2 * budget + 32, rng=rng)
        else:
            text = self._ask(self.completion_prompt(parent), chat=False, stop=["\n"], max_tokens=budget, rng=rng)
        return self._accept(text, parent.config, parents[:1])


#: Registry entries for ``operators/__init__.py`` (merged by the lead).
LLM_OPERATORS: dict[str, type] = {"lmx": LMXCrossover, "llm_mutation": LLMMutation}
