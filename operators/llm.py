"""LLM variation operators: targeted language-model crossover (LMX) and feedback-reading LLM mutation.

Both write one prompt from parents in the archive and ask :class:`qd.llm.LLMClient` for one or
several completions of it (:meth:`LLMOperator.propose`: one sample per candidate the scheduler's
pre-evaluation filter will choose among, seeded from the search's rng, so a run with a warm
request cache replays exactly). Each completion becomes a configuration through
:func:`qd.operators.parse.parse_config` (extract, repair, validate); what fails is counted and
never reaches an evaluation. :meth:`LLMOperator.generate` reports what happened on the way (LLM
failure, invalid output, tokens spent), which the search uses for its per-operator metrics.

The prompts are written for a small *base* model (the embedded gemma-3-270m): pattern completion,
not instructions, and short. A flat configuration is one line of ``key=value`` pairs
(:func:`~qd.operators.parse.render_pairs`: floats to 1% of their range), and the prompt ends with
the first key of the line the model is to write.

LMX (Meyerson et al., "Language Model Crossover"), aimed at a target as in-context QD (Lim et al.)
does: the scheduler chooses an empty cell first and hands over the elites nearest it
(``parents_near_target``), which the prompt lists worst to best as ``measures, score: config``
lines; the last line holds the *target's* measures and a score above the best, so the model
interpolates along the map. Without a target it completes the neighbourhood of one elite.

LLMMutation shows one parent with its score and measures, what went wrong (the evaluation's
feedback, line by line: the failed instances or the wrong components a domain names), the goal
(a target cell's measures, or a higher score) and, when the run can predict measures
(``uses_predictor``: the domain's cost model or what the run learned), the single edits that move
toward the target and where each lands. Instruct models get the same content as a chat request.
"""
from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from qd.llm.client import LLMError
from qd.operators.base import Generation, Operator
from qd.operators.params import COUNT, OPTIONAL_COUNT, TARGET, TEMPERATURE, TEXT, finite_number
from qd.operators.parse import ParseError, is_flat, parse_config, render_pairs, short_number

__all__ = ["LLM_OPERATORS", "Generation", "LLMMutation", "LMXCrossover", "LLMOperator"]

_FEEDBACK_LINES = 4  # feedback lines shown (the summary and the first failures)
_FEEDBACK_CHARS = 160  # per feedback line: more costs prompt tokens a small model cannot use
_PROMPT_DIGITS = 4  # significant digits of floats in JSON prompts: full doubles cost many tokens each
_PREFILL = '{"'  # a JSON completion template ends with the start of the object
_LINE_TEXT_CHARS = 40  # a Text parameter longer than this stays out of LMX's lines (filled from the best parent)
_EDITS_SHOWN = 3  # predicted single edits toward a target shown to LLMMutation


def _compact(value: Any) -> Any:
    """``value`` with floats rounded to a few significant digits, for prompts only."""
    if isinstance(value, float) and math.isfinite(value):
        return float(f"{value:.{_PROMPT_DIGITS}g}")
    if isinstance(value, dict):
        return {k: _compact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_compact(v) for v in value]
    return value


def _fmt_measures(measures: dict[str, Any] | None, sep: str = ", ") -> str:
    return sep.join(f"{k} {short_number(v)}" for k, v in (measures or {}).items() if finite_number(v))


def _one_line(text: str, limit: int) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def feedback_lines(text: str, lines: int = _FEEDBACK_LINES, chars: int = _FEEDBACK_CHARS) -> list[str]:
    """The first ``lines`` non-empty lines of a feedback text, each cut to ``chars``."""
    return [_one_line(line, chars) for line in str(text or "").splitlines() if line.strip()][:lines]


@dataclass(frozen=True)
class _Request:
    """One prompt and how to read its completions."""

    prompt: Any  # text (completions) or messages (chat)
    chat: bool
    stop: list[str] | None
    max_tokens: int
    fallback: dict  # fills what a completion leaves out
    prefill: str = ""  # what the prompt ended with, put back before parsing


class LLMOperator(Operator):
    """Shared machinery of the LLM operators: rendering, the LLM calls, parsing, counters.

    Parameters
    ----------
    space : qd.space.Space
        The search space.
    client : qd.llm.LLMClient
        Endpoint to call.
    temperature : float, optional
        Sampling temperature (default: the client's); several proposals spread around it.
    max_tokens : int, optional
        Completion limit; default estimated from the parents' size.
    target : str or dict, optional
        Standing goal for every child, e.g. ``"fewer llm_calls"`` or ``{"llm_calls": 4}``; the
        search passes per-call goals (empty archive regions) to :meth:`generate` instead.
    score_name : str
        Label of the objective in the prompt.
    """

    name = "llm"
    num_parents = 1
    uses_llm = True  # the search runs these in its LLM thread pool
    accepts_target = False  # whether the search should pass archive target regions to generate()
    parameters = {"temperature": TEMPERATURE, "max_tokens": OPTIONAL_COUNT, "target": TARGET, "score_name": TEXT}

    def __init__(self, space: Any, client: Any, *, temperature: float | None = None, max_tokens: int | None = None,
                 target: str | dict[str, float] | None = None, score_name: str = "score") -> None:
        if client is None:
            raise ValueError(f"{type(self).__name__} needs an LLMClient (got None)")
        LLMOperator.check_parameters({"temperature": temperature, "max_tokens": max_tokens, "target": target,
                                      "score_name": score_name})
        self.space = space
        self.client = client
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.target = target
        self.score_name = score_name
        self.flat = is_flat(space)
        # Long texts (instructions) stay out of the lines a small model reads: they would crowd
        # out the pattern; children take them from the parent.
        self.keys = [key for key, p in space.params.items()
                     if not (p.kind == "text" and p.max_len > _LINE_TEXT_CHARS)] if self.flat else None
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

    # -- rendering ---------------------------------------------------------------------------------
    def _render(self, config: dict[str, Any], keys: Sequence[str] | None = None) -> str:
        """One configuration as prompt text: ``key=value`` pairs (flat spaces) or one-line JSON.

        JSON has sorted keys and floats to 4 significant digits: the model copies what it sees,
        and 17-digit doubles would double the prompt and the completion without telling it anything.
        """
        if self.flat:
            return render_pairs(self.space, config, keys)
        canonical = json.loads(self.space.canonical(config))
        return json.dumps(_compact(canonical), separators=(", ", ": "), ensure_ascii=False)

    def _score(self, value: float) -> str:
        return f"{self.score_name} {short_number(value, 0.01) if abs(value) < 10 else short_number(value)}"

    def _token_budget(self, rendered: Sequence[str]) -> int:
        if self.max_tokens is not None:
            return int(self.max_tokens)
        # ~2.5 characters per token, plus slack for a slightly longer child.
        return int(max(len(r) for r in rendered) / 2.5) + 24

    # -- calls -------------------------------------------------------------------------------------
    def _count(self, **deltas: int) -> None:
        with self._lock:
            for key, value in deltas.items():
                self._counts[key] += value

    def _ask(self, request: _Request, temperature: float | None, rng: np.random.Generator) -> tuple[str | None, int]:
        """One LLM call: ``(text, tokens)``; text is ``None`` (counted) when the client gives up."""
        seed = int(rng.integers(0, 2**31 - 1))
        kwargs = dict(stop=request.stop, temperature=temperature, max_tokens=request.max_tokens, name=self.name,
                      tag=self.name, seed=seed)
        try:
            if request.chat:
                resp = self.client.chat(request.prompt, **kwargs)
            else:
                resp = self.client.complete(request.prompt, **kwargs)
        except LLMError:
            self._count(llm_failures=1)
            return None, 0
        self._count(calls=1, tokens_in=resp.tokens_in, tokens_out=resp.tokens_out)
        return resp.text, resp.tokens_in + resp.tokens_out

    def _read(self, text: str, request: _Request, parents: Sequence[Any]) -> dict[str, Any] | None:
        """The configuration in one completion (None, counted, when there is none)."""
        # Put back what the prompt ended with, unless the model wrote it again (a JSON object's
        # opening brace, or the first key of a pairs line).
        again = "{" if request.prefill == _PREFILL else request.prefill
        if request.prefill and not text.lstrip().startswith(again):
            text = request.prefill + text
        try:
            child = parse_config(text, self.space, fallback=request.fallback)
        except ParseError:
            self._count(invalid=1)
            return None
        self._count(offspring=1)
        digest = self.space.hash(child)
        if any(self.space.hash(p.config) == digest for p in parents):
            self._count(unchanged=1)  # returned anyway; the search counts it as a duplicate
        return child

    def _temperatures(self, n: int) -> list[float | None]:
        """``n`` sampling temperatures: the operator's first, then others spread from 1.25x down to 0.5x.

        The first sample is the one call :meth:`generate` makes (same seed, same temperature), so
        with the request cache on, a single child and several proposals share their first call.
        """
        if n == 1:
            return [self.temperature]
        base = self.client.temperature if self.temperature is None else self.temperature
        return [self.temperature, *(float(min(2.0, base * f)) for f in np.linspace(1.25, 0.5, n - 1))]

    def request(self, parents: Sequence[Any], target: str | dict[str, float] | None = None) -> _Request:
        """The prompt for ``parents`` and ``target`` (subclasses)."""
        raise NotImplementedError

    def requests(self, parents: Sequence[Any], target: str | dict[str, float] | None, n: int) -> list[_Request]:
        """The prompts of ``n`` samples: the same one ``n`` times (a subclass may vary how each ends)."""
        return [self.request(parents, target)] * n

    def propose(self, parents: Sequence[Any], rng: np.random.Generator, n: int,
                target: str | dict[str, float] | None = None) -> Generation:
        """``n`` samples of one prompt (temperatures spread), each parsed: the candidates for the filter.

        Asked one after another, so every sample after the first finds the prompt in the server's
        cache and only decodes.
        """
        if not parents:
            raise ValueError(f"{type(self).__name__} needs at least one parent")
        configs, tokens, failed, answered = [], 0, 0, 0
        for request, temperature in zip(self.requests(parents, target, int(n)), self._temperatures(int(n))):
            text, spent = self._ask(request, temperature, rng)
            tokens += spent
            if text is None:
                failed += 1
                continue
            answered += 1
            child = self._read(text, request, parents)
            if child is not None:
                configs.append(child)
        return Generation(configs, failed=answered == 0, invalid=answered > 0 and not configs, tokens=tokens)

    def generate(self, parents: Sequence[Any], rng: np.random.Generator,
                 target: str | dict[str, float] | None = None) -> Generation:
        """One child of ``parents`` with what happened on the way (see :class:`Generation`).

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
        return self.propose(parents, rng, 1, target)

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
    """Language-model crossover aimed at a target cell: ``k`` neighbouring elites, worst to best.

    Parameters
    ----------
    space, client : see :class:`LLMOperator`
    k : int
        Elites per prompt (``num_parents``): the scheduler hands over the ``k`` nearest the
        target cell (``parents_near_target``).
    **kwargs
        ``temperature``, ``max_tokens``, ``target`` (a text hint shown as a header line, or a
        dict of measure values written on the line the model completes), ``score_name``.
    """

    name = "lmx"
    accepts_target = True
    parents_near_target = True

    parameters = {"k": COUNT, **LLMOperator.parameters}

    def __init__(self, space: Any, client: Any, k: int = 6, **kwargs: Any) -> None:
        LMXCrossover.check_parameters({"k": k})
        super().__init__(space, client, **kwargs)
        self.k = int(k)
        self.num_parents = self.k

    def _line(self, score: float, measures: dict[str, Any] | None) -> str:
        head = ", ".join(filter(None, [_fmt_measures(measures), self._score(score)]))
        return f"{head}:"

    def prompt(self, parents: Sequence[Any], target: str | dict[str, float] | None = None
               ) -> tuple[str, dict[str, Any], list[str]]:
        """The few-shot prompt, the fallback config (best parent) and the rendered parent configs.

        ``target`` (default :attr:`target`): a text goal becomes a ``# goal:`` header line; measure
        values are written on the line the model completes instead of the best parent's. On a
        flat space the prompt ends with the first key of the line to write.
        """
        target = self.target if target is None else target
        unique: dict[str, Any] = {}
        for p in parents:
            unique.setdefault(self.space.hash(p.config), p)
        # Worst to best, so the line the model writes next follows the best (NaN counts as worst).
        ordered = sorted(unique.values(),
                         key=lambda p: -math.inf if math.isnan(float(p.objective)) else float(p.objective))
        rendered = [self._render(p.config, self.keys) for p in ordered]
        lines = []
        if isinstance(target, str) and target:
            lines.append(f"# goal: {_one_line(target, 200)}")
        lines += [f"{self._line(p.objective, p.measures)} {r}" for p, r in zip(ordered, rendered)]
        best = ordered[-1]
        scores = [float(p.objective) for p in ordered if not math.isnan(float(p.objective))]
        if scores:
            spread = max(scores) - min(scores)
            goal = max(scores) + (0.1 * spread if spread > 0 else 0.05 * abs(max(scores)) + 1e-3)
        else:
            goal = float("nan")
        measures = target if isinstance(target, dict) else best.measures
        last = self._line(goal, measures)
        if self.flat:
            last += f" {self.keys[0]}="
        lines.append(last)
        return "\n".join(lines), best.config, rendered

    def request(self, parents: Sequence[Any], target: str | dict[str, float] | None = None) -> _Request:
        """LMX's request: a completion of the next line, or for instruct endpoints a chat asking for it."""
        prompt, fallback, rendered = self.prompt(parents, target)
        budget = self._token_budget(rendered)
        if self.client.api == "chat":
            # Instruct endpoints may not continue raw text; ask for the continuation explicitly.
            body = prompt.rsplit(" ", 1)[0] if self.flat else prompt
            messages = [{"role": "user", "content": "Continue this list with exactly one new line. Reply with the "
                         "configuration of that line only, in the same format.\n\n" + body}]
            return _Request(messages, True, None, 2 * budget + 32, fallback)
        prefill = f"{self.keys[0]}=" if self.flat else ""
        return _Request(prompt, False, ["\n"], budget, fallback, prefill)


class LLMMutation(LLMOperator):
    """LLM mutation that reads what went wrong: a parent, its feedback, the goal and predicted edits.

    The base-model prompt is a block per configuration: ``config:`` (pairs), ``result:`` (score
    and measures), ``wrong:`` (the feedback's lines: the failed instances, or the components the
    domain names), ``goal:`` (a target cell's measures and a higher score, or a higher score),
    ``edit:`` (single edits the run predicts move toward the target, and where each lands) and
    ``fix:``, the pairs to change, which the model writes. When the second parent's feedback names
    a parameter, its block comes first with a fix that changes that parameter: the pattern of a
    fix. When the parent's feedback names parameters (else, with a target, when single edits are
    predicted to move toward it), each sample's ``fix:`` starts with one of them (the first sample
    the first, and so on), so a small model edits what the feedback blames rather than copying the
    configuration. Instruct models get the same content as a chat
    request; a space that is not flat is written and read as JSON.

    Parameters
    ----------
    space, client : see :class:`LLMOperator`
    **kwargs
        ``temperature``, ``max_tokens``, ``target``, ``score_name``.
    """

    name = "llm_mutation"
    num_parents = 2  # the parent, and an elite whose feedback may show the pattern of a fix
    accepts_target = True
    uses_predictor = True

    SYSTEM = ("You edit configurations of a compound AI system to improve it. Read what went wrong and "
              "change the parts it names. Answer with the configuration only, in the format you were shown.")

    def __init__(self, space: Any, client: Any, **kwargs: Any) -> None:
        super().__init__(space, client, **kwargs)
        self._choices: str | None = None

    @property
    def choices(self) -> str:
        """The values each parameter may take, as one short line (flat spaces) or the schema."""
        if self._choices is None:
            if not self.flat:
                self._choices = self.space.to_prompt()
            else:
                parts = []
                for key in self.keys:
                    p = self.space.params[key]
                    if p.kind == "categorical":
                        parts.append(f"{key} " + "|".join(map(str, p.choices)))
                    elif p.kind in ("int", "float"):
                        parts.append(f"{key} {short_number(p.low)}..{short_number(p.high)}")
                    elif p.kind == "bool":
                        parts.append(f"{key} true|false")
                    else:
                        parts.append(f"{key} text")
                self._choices = "; ".join(parts)
        return self._choices

    def named(self, feedback: str) -> list[str]:
        """The parameters a feedback text names (as whole words), in the order it names them."""
        if not self.flat:
            return []
        text = " ".join(feedback_lines(feedback)).lower()
        found = []
        for key in self.keys:
            words = {key.lower(), key.lower().replace("_", " ")}
            hits = [m.start() for w in words for m in re.finditer(rf"(?<![\w-]){re.escape(w)}(?![\w-])", text)]
            if hits:
                found.append((min(hits), key))
        return [key for _, key in sorted(found)]

    def _goal(self, parent: Any, target: str | dict[str, float] | None) -> str:
        target = self.target if target is None else target
        better = f"{self.score_name} above {short_number(parent.objective, 0.01)}" if finite_number(parent.objective) \
            else f"a higher {self.score_name}"
        if isinstance(target, dict):
            return f"{_fmt_measures(target)}, {better}"
        return _one_line(target, 200) if target else better

    def edits(self, parent: Any, target: dict[str, float]) -> list[str]:
        """Single edits of ``parent`` predicted to move toward ``target``, nearest first, with where each lands.

        Empty without a predictor (:attr:`predict_measures`, set by the scheduler), on a space that
        is not flat, or when no single edit gets closer than the parent.
        """
        predict = self.predict_measures
        if predict is None or not self.flat or not target:
            return []
        names = [n for n in target if finite_number(target[n])]

        def distance(measures: dict[str, float] | None) -> float:
            if measures is None or any(n not in measures for n in names):
                return math.inf
            # each measure in units of how far the parent is from the target on it
            return sum(abs(measures[n] - target[n]) / max(abs(parent.measures.get(n, measures[n]) - target[n]), 1e-9)
                       for n in names)

        here = distance(predict(parent.config))
        best: dict[str, tuple[float, str]] = {}  # per parameter, its edit that gets closest
        for key, value in self._alternatives(parent.config):
            child = {**parent.config, key: value}
            measures = predict(child)
            d = distance(measures)
            if d < here and d < best.get(key, (math.inf, ""))[0]:
                shown = {n: measures[n] for n in names if measures[n] != parent.measures.get(n)}
                best[key] = (d, f"{render_pairs(self.space, child, [key])} gives {_fmt_measures(shown)}")
        return [text for _, text in sorted(best.values())[:_EDITS_SHOWN]]

    def _alternatives(self, config: dict[str, Any]) -> list[tuple[str, Any]]:
        """Other values of each parameter: every other choice; numbers over their range and scaled by powers of 2."""
        out: list[tuple[str, Any]] = []
        for key in self.keys:
            p, value = self.space.params[key], config[key]
            if p.kind == "categorical":
                out += [(key, c) for c in p.choices if c != value]
            elif p.kind == "bool":
                out.append((key, not value))
            elif p.kind in ("int", "float"):
                grid = {p.low + (p.high - p.low) * u for u in np.linspace(0.0, 1.0, 9)}
                grid |= {value * 2.0**e for e in (-3, -2, -1, 1, 2, 3)}
                values = {min(max(int(round(c)) if p.kind == "int" else float(c), p.low), p.high) for c in grid}
                out += [(key, c) for c in sorted(values) if c != value]
        return out

    def _other_value(self, key: str, value: Any) -> Any:
        """A different value of ``key``, for the example fix: the next choice, the other bool, toward the middle."""
        p = self.space.params[key]
        if p.kind == "categorical":
            return p.choices[((p.index(value) or 0) + 1) % len(p.choices)]
        if p.kind == "bool":
            return not value
        if p.kind in ("int", "float"):
            middle = (p.low + p.high) / 2
            moved = (value + middle) / 2 if value != middle else p.low + (p.high - p.low) / 4
            return int(round(moved)) if p.kind == "int" else float(moved)
        return value

    def _example(self, parent: Any, other: Any | None) -> list[str]:
        """The block of ``other`` with a fix of the first parameter its feedback names (none: no block)."""
        if other is None or not self.flat or self.space.hash(other.config) == self.space.hash(parent.config):
            return []
        named = self.named(getattr(other, "feedback", ""))
        if not named:
            return []
        key = named[0]
        fix = render_pairs(self.space, {key: self._other_value(key, other.config[key])}, [key])
        return [f"config: {self._render(other.config, self.keys)}",
                *(f"wrong: {line}" for line in feedback_lines(other.feedback)), f"fix: {fix}", ""]

    def _parts(self, parent: Any, target: str | dict[str, float] | None) -> dict[str, Any]:
        target_now = self.target if target is None else target
        return {
            "config": self._render(parent.config, self.keys),
            "result": ", ".join(filter(None, [self._score(parent.objective), _fmt_measures(parent.measures)])),
            "feedback": feedback_lines(getattr(parent, "feedback", "")),
            "goal": self._goal(parent, target),
            "edits": self.edits(parent, target_now) if isinstance(target_now, dict) else [],
        }

    def chat_messages(self, parent: Any, target: str | dict[str, float] | None = None) -> list[dict[str, str]]:
        """Chat prompt for instruct models (``target`` defaults to :attr:`target`)."""
        parts = self._parts(parent, target)
        lines = [f"Allowed values: {self.choices}", "", f"Current configuration: {parts['config']}",
                 f"Result: {parts['result']}", "What went wrong:"]
        lines += [f"- {line}" for line in parts["feedback"]] or ["- nothing reported"]
        lines.append(f"Goal: {parts['goal']}")
        if parts["edits"]:
            lines.append("Predicted effect of single edits: " + "; ".join(parts["edits"]))
        lines += ["", "Write one modified configuration that changes one to three fields toward the goal."]
        return [{"role": "system", "content": self.SYSTEM}, {"role": "user", "content": "\n".join(lines)}]

    def completion_prompt(self, parent: Any, target: str | dict[str, float] | None = None,
                          other: Any | None = None, start: str | None = None) -> str:
        """Completion template for base models: ends where the model writes (see the class docstring).

        ``other`` may show the pattern of a fix first; ``start`` begins the ``fix:`` line (default:
        the first parameter the feedback names). On a space that is not flat the template ends with
        ``fixed config: {"`` instead, which keeps a base model on one JSON line.
        """
        parts = self._parts(parent, target)
        lines = [f"values: {self.choices}", "", *self._example(parent, other),
                 f"config: {parts['config']}", f"result: {parts['result']}"]
        lines += [f"wrong: {line}" for line in parts["feedback"]] or ["wrong: nothing reported"]
        lines.append(f"goal: {parts['goal']}")
        lines += [f"edit: {edit}" for edit in parts["edits"]]
        if not self.flat:
            return "\n".join([*lines, f"fixed config: {_PREFILL}"])
        if start is None:
            named = self.named(getattr(parent, "feedback", "")) or self._edited(parent, target)
            start = f"{named[0]}=" if named else ""
        return "\n".join([*lines, f"fix: {start}"])

    def requests(self, parents: Sequence[Any], target: str | dict[str, float] | None, n: int) -> list[_Request]:
        """One request per sample; each sample's fix starts with the next parameter the feedback names."""
        parent, other = parents[0], (parents[1] if len(parents) > 1 else None)
        budget = self._token_budget([self._render(parent.config, self.keys)])
        if self.client.api == "chat":
            return [_Request(self.chat_messages(parent, target), True, None, 2 * budget + 32, parent.config)] * n
        if not self.flat:
            prompt = self.completion_prompt(parent, target, other)
            return [_Request(prompt, False, ["\n"], budget, parent.config, _PREFILL)] * n
        # What the feedback names, else the parameters of the predicted edits toward the target.
        named = self.named(getattr(parent, "feedback", "")) or self._edited(parent, target)
        starts = [f"{named[j % len(named)]}=" if named else "" for j in range(n)]
        return [_Request(self.completion_prompt(parent, target, other, start), False, ["\n"], budget, parent.config,
                         start) for start in starts]

    def _edited(self, parent: Any, target: str | dict[str, float] | None) -> list[str]:
        """The parameters of the predicted edits toward ``target`` (nearest first)."""
        target = self.target if target is None else target
        return [edit.split("=", 1)[0] for edit in self.edits(parent, target)] if isinstance(target, dict) else []

    def request(self, parents: Sequence[Any], target: str | dict[str, float] | None = None) -> _Request:
        """LLMMutation's request for ``parents[0]`` (its first sample's)."""
        return self.requests(parents, target, 1)[0]


#: Registry entries for ``operators/__init__.py`` (merged by the lead).
LLM_OPERATORS: dict[str, type] = {"lmx": LMXCrossover, "llm_mutation": LLMMutation}
