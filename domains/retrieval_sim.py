"""A SIMULATED LLM for the retrieval task, fitted to the real model's measured accuracy.

:class:`SimulatedLLM` has the ``complete`` signature of :class:`qd.llm.LLMClient` and answers from
the prompt alone, like a real model: it reads the prompt's instruction, its number of worked
examples (:func:`qd.domains.retrieval_task.prompt_head`), its last record block and question
(:func:`qd.domains.retrieval_task.parse_prompt`). When the asked key is among the records it
answers correctly with probability

    logit p = logit(p_max / (1 + (n / n50) ** slope) * exp(-beta * temperature))
              + shots[k] + slopes[k] * log2(n / n_ref) + b . f(instruction)

where ``n`` is the number of records in its context (held within the record counts the prompt
effects were measured at, ``context_range``: the fit says nothing outside it), ``k`` the worked
examples and ``f`` the instruction's features (:func:`instruction_features`, taken relative to the
default instruction's);
otherwise it answers what the real model answers when wrong (a code from the records, an invented
code, or "none", in the measured proportions). When the key is not among the records (a chunk that
does not hold it) it answers "none" with probability

    logit q = c0 + c1 * log2(n / n_ref) + shots'[k] + b' . f(instruction)

and a wrong code otherwise. Reverse lookups ("which key has code C?") use their own fitted curve.
Parameters come from ``domains/retrieval_fit.json`` (written by ``scripts/fit_retrieval_sim.py``;
its ``prompt`` entry holds the few-shot and instruction effects with their standard errors; a fit
file without it gives a model on which neither matters).

Calls are deterministic given (prompt, seed, temperature); at temperature below
:data:`GREEDY_T` the seed is ignored, as greedy decoding ignores it. Token counts use the fitted
``tokens = per_char * chars + offset`` estimate; latency is a nominal model (no sleeping).
Every call is recorded through the active tracer with ``model="simulated"``.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from qd.analysis.tracer import record_llm_call
from qd.domains.retrieval_task import DEFAULT_INSTRUCTION, NONE, parse_prompt, prompt_head
from qd.llm.client import LLMResponse

__all__ = ["SimulatedLLM", "load_fit", "instruction_features", "FEATURES", "FIT_PATH", "GREEDY_T", "SIM_MODEL"]

FIT_PATH = Path(__file__).with_name("retrieval_fit.json")
GREEDY_T = 0.05
SIM_MODEL = "simulated"
# Nominal throughput of the embedded model on 2 cores, for simulated latencies only.
_PROMPT_TOK_PER_S, _GEN_TOK_PER_S = 600.0, 50.0

_FALLBACK_FIT = {  # used only if the JSON is missing; scripts/fit_retrieval_sim.py writes the real one
    "forward": {"p_max": 0.9, "n50": 12.0, "slope": 1.5, "temperature_beta": 0.2},
    "reverse": {"p_max": 0.5, "n50": 8.0, "slope": 1.0},
    "wrong": {"none": 0.0, "distractor": 0.8},
    "tokens": {"per_char": 0.55, "offset": -35.0},
}


#: What the simulated model reads in an instruction (:func:`instruction_features`).
FEATURES = ("has_code", "has_none", "words")
_WORD = re.compile(r"[a-z0-9]+")


def instruction_features(instruction: str) -> dict[str, float]:
    """The features of an instruction text the fitted prompt effects depend on.

    ``has_code`` and ``has_none``: whether the words "code" and "none" (the two answers the task
    wants) occur; ``words``: its length in tens of words.
    """
    words = _WORD.findall(instruction.lower())
    return {"has_code": float("code" in words), "has_none": float("none" in words), "words": len(words) / 10.0}


@lru_cache(maxsize=4)
def load_fit(path: str | None = None) -> dict:
    """The fitted parameters (cached per path)."""
    p = Path(path) if path else FIT_PATH
    return json.loads(p.read_text()) if p.exists() else dict(_FALLBACK_FIT)


def _curve(n: int, params: dict) -> float:
    return params["p_max"] / (1.0 + (max(n, 1) / params["n50"]) ** params["slope"])


def _shift(p: float, delta: float) -> float:
    """``p`` moved by ``delta`` on the logit scale."""
    p = min(max(p, 1e-9), 1.0 - 1e-9)
    return 1.0 / (1.0 + math.exp(-(math.log(p / (1.0 - p)) + delta)))


class SimulatedLLM:
    """Stand-in for :class:`qd.llm.LLMClient` on retrieval prompts (see the module docstring).

    Parameters
    ----------
    fit_path : str, optional
        Parameter file; defaults to ``domains/retrieval_fit.json``.
    """

    model = SIM_MODEL

    def __init__(self, fit_path: str | None = None) -> None:
        self.fit_path = fit_path
        fit = load_fit(fit_path)
        self.forward, self.reverse = fit["forward"], fit["reverse"]
        self.wrong, self.tokens = fit["wrong"], fit["tokens"]
        self.prompt: dict | None = fit.get("prompt")
        self._default_features = instruction_features(DEFAULT_INSTRUCTION)

    def count_tokens(self, text: str) -> int:
        """Token estimate consistent with the real model's counts on these prompts."""
        return max(1, int(round(self.tokens["per_char"] * len(text) + self.tokens["offset"])))

    def _context(self, n_records: int) -> float:
        """``log2(n / n_ref)`` held within the record counts the prompt effects were measured at."""
        low, high = self.prompt["context_range"]  # type: ignore[index]
        return math.log2(min(max(n_records, low), high) / self.prompt["reference_n"])  # type: ignore[index]

    def _prompt_offset(self, kind: str, n_records: int, few_shot: int, instruction: str) -> float:
        """The fitted logit offset of ``few_shot`` worked examples and ``instruction`` (``kind``: present, absent)."""
        fit = self.prompt[kind]  # type: ignore[index]
        k = min(max(int(few_shot), 0), len(fit["shots"]) - 1)
        offset = fit["shots"][k]
        if "slopes" in fit:  # the few-shot effect changes with the records in context
            offset += fit["slopes"][k] * self._context(n_records)
        features = instruction_features(instruction)
        return offset + sum(b * (features[f] - self._default_features[f]) for f, b in fit["features"].items())

    def p_correct(self, n_records: int, temperature: float = 0.0, kind: str = "forward", few_shot: int = 0,
                  instruction: str = DEFAULT_INSTRUCTION) -> float:
        """Probability that one call answers correctly with ``n_records`` in its context (the key among them)."""
        if kind == "reverse":
            return _curve(n_records, self.reverse)
        p = _curve(n_records, self.forward) * math.exp(-self.forward.get("temperature_beta", 0.0) * temperature)
        if self.prompt is None:
            return p
        return _shift(p, self._prompt_offset("present", n_records, few_shot, instruction))

    def p_none(self, n_records: int, few_shot: int = 0, instruction: str = DEFAULT_INSTRUCTION) -> float:
        """Probability that one call answers "none" when the asked key is not among its ``n_records``."""
        if self.prompt is None:
            return self.wrong["none"]
        fit = self.prompt["absent"]
        logit = (fit["intercept"] + fit["log2_n"] * self._context(n_records)
                 + self._prompt_offset("absent", n_records, few_shot, instruction))
        return 1.0 / (1.0 + math.exp(-logit))

    def _answer(self, prompt: str, temperature: float, seed: int | None) -> str:
        records, kind, target = parse_prompt(prompt)
        greedy = temperature < GREEDY_T
        digest = hashlib.sha256(f"{prompt}\x00{'greedy' if greedy else seed}\x00{temperature:.4f}".encode()).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
        table = dict(records)
        if kind == "reverse":
            owner = next((k for k, c in records if c == target), None)
            if owner is not None and rng.random() < self.p_correct(len(records), kind="reverse"):
                return owner
            others = [k for k, _ in records if k != owner] or [k for k, _ in records]
            return others[int(rng.integers(len(others)))] if others else NONE
        instruction, shots = prompt_head(prompt)
        if target in table:
            if rng.random() < self.p_correct(len(records), temperature, few_shot=shots, instruction=instruction):
                return table[target]
            none = self.wrong["none"]
        else:  # a chunk without the key: "none" is the right answer here
            none = self.p_none(len(records), shots, instruction)
        u = rng.random()  # wrong (or absent key): answer like the real model does when wrong
        if u < none or not records:
            return NONE
        # the rest split between a code from the records and an invented one in the measured proportion
        distractor = self.wrong["distractor"] / max(1e-9, 1.0 - self.wrong["none"])
        if u < none + (1.0 - none) * min(1.0, distractor):
            wrong = [c for k, c in records if k != target] or [c for _, c in records]
            return wrong[int(rng.integers(len(wrong)))]
        return str(int(rng.integers(1000, 10000)))

    def complete(self, prompt: str, *, stop: Any = None, temperature: float | None = None,
                 max_tokens: int | None = None, name: str = "llm", deps: Sequence[int | None] | None = None,
                 seed: int | None = None, **_: Any) -> LLMResponse:
        """Answer ``prompt`` (a retrieval prompt) and record the call in the active tracer."""
        t = 0.0 if temperature is None else float(temperature)
        start = time.time()
        text = " " + self._answer(prompt, t, seed)
        t_in, t_out = self.count_tokens(prompt), self.count_tokens(text) + 1  # +1: the stop token
        latency = t_in / _PROMPT_TOK_PER_S + t_out / _GEN_TOK_PER_S
        # No price table knows the simulated model: its calls are marked unpriced (cost_usd=None).
        span_id = record_llm_call(name=name, model=SIM_MODEL, tokens_in=t_in, tokens_out=t_out, cached=False,
                                  latency_s=latency, start_s=start, ok=True, cost_usd=None, deps=deps,
                                  input=prompt, output=text)
        return LLMResponse(text, t_in, t_out, latency, False, 0.0, span_id, "stop", SIM_MODEL)
