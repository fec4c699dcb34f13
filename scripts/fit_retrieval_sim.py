"""Measure the real model on the retrieval task and fit the simulated backend's parameters.

Single LLM calls over the whole record list (the prompts of :mod:`qd.domains.retrieval_task`):

* forward accuracy ("what is the code of K?") vs. records in context, greedy and at temperature 0.8;
* how wrong answers look (a code from the records, another 4-digit string, or "none");
* reverse-lookup accuracy ("which key has code C?", the verification call);
* prompt tokens vs. prompt characters (the simulated backend's token estimate);
* ``--prompt``: the effect of the prompt's few-shot examples and instruction text
  (:data:`INSTRUCTIONS` x ``few_shot`` 0-3 at :data:`PROMPT_N` records, and the default instruction
  x ``few_shot`` 0-3 at :data:`CONTEXT_N` records, greedy): the accuracy when the asked key is in
  the records, and how often the model answers "none" when it is not (what a chunk that does not
  hold the key should answer; an answer without a code counts, as the pipeline reads it). Fitted as
  logit offsets per ``few_shot`` (with a slope in log2 of the records for the present key) and a
  linear model of instruction features (:func:`qd.domains.retrieval_sim.instruction_features`), by
  binomial maximum likelihood, with standard errors from the observed information.

The fits go to ``domains/retrieval_fit.json``, which :mod:`qd.domains.retrieval_sim` loads;
``--prompt`` keeps the file's other entries and adds (or replaces) its ``prompt`` entry.

Usage::

    python scripts/fit_retrieval_sim.py [--trials 12] [--base-url URL] [--out domains/retrieval_fit.json]
    python scripts/fit_retrieval_sim.py --prompt [--prompt-trials 16]
"""
from __future__ import annotations

import argparse
import json
import math
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from scipy.optimize import curve_fit, minimize
from tqdm.auto import tqdm

from qd.domains.retrieval_sim import FEATURES, instruction_features
from qd.domains.retrieval_task import (
    DEFAULT_INSTRUCTION,
    forward_prompt,
    make_instance,
    parse_code,
    parse_key,
    reverse_prompt_with_example,
)
from qd.llm.cache import cache_path
from qd.llm.client import LLMClient, LLMError

FORWARD_N = (4, 8, 16, 32, 64)
WARM_N = (4, 16)
REVERSE_N = (2, 4, 8)
PROMPT_N = 8  # every instruction at this many records (mid-range: the context curve gives about 0.4 there)
CONTEXT_N = (16, 32)  # the default instruction also here: how the few-shot effect changes with context length
FEW_SHOT = (0, 1, 2, 3)
#: Instruction texts of the ``--prompt`` measurement, chosen so the features of
#: :func:`~qd.domains.retrieval_sim.instruction_features` vary (task words, length) rather than to be good.
INSTRUCTIONS = {
    "default": DEFAULT_INSTRUCTION,
    "empty": "",
    "terse": "Answer with the code.",
    "none_rule": "If the key is not in the records, answer none. Otherwise answer with its code.",
    "off_task": "Write a short story about a dragon who guards a castle.",
}


def p_curve(n: np.ndarray, p_max: float, n50: float, slope: float) -> np.ndarray:
    """Success probability of one call with ``n`` records in context."""
    return p_max / (1.0 + (np.asarray(n, float) / n50) ** slope)


def _forward(client: LLMClient, n: int, seed: int, temperature: float) -> dict:
    inst = make_instance(n, seed)
    prompt = forward_prompt(inst.records, inst.key, few_shot=0)
    r = client.complete(prompt, stop=["\n"], temperature=temperature, max_tokens=8, seed=seed)
    answer = parse_code(r.text)
    codes = {c for _, c in inst.records}
    kind = "correct" if answer == inst.code else ("none" if answer is None else
                                                   "distractor" if answer in codes else "invented")
    return {"n": n, "kind": kind, "chars": len(prompt), "tokens": r.tokens_in, "latency_s": r.latency_s}


def _reverse(client: LLMClient, n: int, seed: int) -> dict:
    inst = make_instance(n, seed)
    prompt = reverse_prompt_with_example(inst.records, inst.code)
    r = client.complete(prompt, stop=["\n"], temperature=0.0, max_tokens=8, seed=seed)
    return {"n": n, "ok": parse_key(r.text) == inst.key, "chars": len(prompt), "tokens": r.tokens_in}


def _prompt_trial(client: LLMClient, instruction: str, shots: int, n: int, present: bool, seed: int) -> dict:
    """One greedy forward call; ``present=False`` asks for a key that is not among the records.

    A call that fails after the client's retries is returned as such (``ok`` None) and left out of
    the fit, so that a loaded machine costs trials, not the measurement.
    """
    inst = make_instance(n + (0 if present else 1), seed)
    records = inst.records if present else tuple(r for r in inst.records if r[0] != inst.key)
    prompt = forward_prompt(records, inst.key, instruction=instruction, few_shot=shots)
    try:
        r = client.complete(prompt, stop=["\n"], temperature=0.0, max_tokens=8, seed=seed)
    except LLMError as exc:
        return {"ok": None, "latency_s": math.nan, "error": str(exc)[:200]}
    answer = parse_code(r.text)
    return {"ok": answer == inst.code if present else answer is None, "latency_s": r.latency_s, "cached": r.cached}


def _logistic_fit(rows: list[dict], columns: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Binomial maximum likelihood of ``logit p = X @ beta``; returns ``beta`` and its standard errors.

    ``rows`` hold ``k`` successes of ``n`` trials and one value per column. A weak ridge (1e-3)
    keeps the estimate finite when a cell is all successes or all failures.
    """
    x = np.array([[r[c] for c in columns] for r in rows], float)
    k = np.array([r["k"] for r in rows], float)
    n = np.array([r["n_trials"] for r in rows], float)

    def nll(beta: np.ndarray) -> tuple[float, np.ndarray]:
        eta = x @ beta
        value = float(np.sum(n * np.logaddexp(0.0, eta) - k * eta) + 1e-3 * beta @ beta)
        grad = x.T @ (n / (1.0 + np.exp(-eta)) - k) + 2e-3 * beta
        return value, grad

    beta = minimize(nll, np.zeros(len(columns)), jac=True, method="L-BFGS-B").x
    p = 1.0 / (1.0 + np.exp(-(x @ beta)))
    info = x.T @ (x * (n * p * (1 - p))[:, None]) + 2e-3 * np.eye(len(columns))
    return beta, np.sqrt(np.diag(np.linalg.inv(info)))


def measure_prompt_effects(client: LLMClient, trials: int) -> dict:
    """The ``prompt`` entry of the fit file: measured counts, fitted offsets and their standard errors.

    Offsets are relative to the context-length measurement's prompt (``few_shot = 0``, the default
    instruction), on the logit scale, with ``x = log2(n / reference_n)``: the simulated model adds
    ``shots[k] + slopes[k] * x + features . (f(instruction) - f(default))`` of ``present`` to the
    logit of its context curve, and answers "none" for an absent key with probability
    ``sigmoid(intercept + log2_n * x + shots[k] + features . (f(instruction) - f(default)))`` of ``absent``.
    """
    grid = [(name, k, PROMPT_N) for name in INSTRUCTIONS for k in FEW_SHOT]
    grid += [("default", k, n) for n in CONTEXT_N for k in FEW_SHOT]
    jobs = [(name, k, n, present, 80_000 + 9973 * list(INSTRUCTIONS).index(name) + 131 * n + 17 * k
             + (0 if present else 7) + i) for name, k, n in grid for present in (True, False) for i in range(trials)]
    with ThreadPoolExecutor(4) as pool:
        calls = pool.map(lambda j: _prompt_trial(client, INSTRUCTIONS[j[0]], j[1], j[2], j[3], j[4]), jobs)
        outs = list(tqdm(calls, total=len(jobs), desc="prompt effects", unit="call"))
    cells: dict[tuple, list[bool]] = {}
    for (name, k, n, present, _), out in zip(jobs, outs):
        if out["ok"] is not None:
            cells.setdefault((name, k, n, present), []).append(out["ok"])
    rows = []
    all_n = (PROMPT_N, *CONTEXT_N)
    for (name, k, n, present), oks in cells.items():
        feats = instruction_features(INSTRUCTIONS[name])
        x = math.log2(n / PROMPT_N)
        rows.append({"instruction": name, "few_shot": k, "n": n, "present": present, "k": int(sum(oks)),
                     "n_trials": len(oks), **{f"shot{s}": float(k == s) for s in FEW_SHOT[1:]},
                     **{f"slope{s}": x * (k == s) for s in FEW_SHOT[1:]},
                     **{f"n{m}": float(n == m) for m in all_n}, "log2_n": x, "one": 1.0,
                     **{f: feats[f] - instruction_features(DEFAULT_INSTRUCTION)[f] for f in FEATURES}})
    shot_cols = [f"shot{s}" for s in FEW_SHOT[1:]]
    slope_cols = [f"slope{s}" for s in FEW_SHOT[1:]]
    present_cols = [f"n{m}" for m in all_n] + shot_cols + slope_cols + list(FEATURES)
    absent_cols = ["one", "log2_n"] + shot_cols + list(FEATURES)
    fits = {}
    for kind, cols in (("present", present_cols), ("absent", absent_cols)):
        beta, se = _logistic_fit([r for r in rows if r["present"] == (kind == "present")], cols)
        coef = dict(zip(cols, beta.tolist()))
        err = dict(zip(cols, se.tolist()))
        fits[kind] = {"shots": [0.0] + [coef[c] for c in shot_cols], "shots_se": [0.0] + [err[c] for c in shot_cols],
                      "features": {f: coef[f] for f in FEATURES}, "features_se": {f: err[f] for f in FEATURES}}
        if kind == "absent":
            fits[kind].update(intercept=coef["one"], intercept_se=err["one"], log2_n=coef["log2_n"],
                              log2_n_se=err["log2_n"])
        else:
            fits[kind].update(slopes=[0.0] + [coef[c] for c in slope_cols],
                              slopes_se=[0.0] + [err[c] for c in slope_cols],
                              baseline_logit={str(m): coef[f"n{m}"] for m in all_n})
    measured = [{k: r[k] for k in ("instruction", "few_shot", "n", "present", "k", "n_trials")} for r in rows]
    return {"instructions": INSTRUCTIONS, "trials_per_cell": trials, "reference_n": PROMPT_N,
            "context_range": [min(all_n), max(all_n)], "cells": measured,
            **fits,
            "failed_calls": sum(o["ok"] is None for o in outs),
            "computed_calls": sum(not o.get("cached", True) for o in outs),
            "mean_latency_s": round(float(np.nanmean([o["latency_s"] for o in outs if not o.get("cached", True)]
                                                     or [math.nan])), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--prompt", action="store_true", help="measure only the few-shot and instruction effects")
    ap.add_argument("--prompt-trials", type=int, default=8, help="trials per (instruction, few_shot, n, present)")
    ap.add_argument("--base-url", default=None)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "domains" / "retrieval_fit.json"))
    args = ap.parse_args()
    if args.prompt:
        # Greedy calls through qd's request cache: an interrupted measurement resumes where it stopped.
        # A loaded machine queues requests for minutes, hence the long timeout.
        client = LLMClient(base_url=args.base_url, max_tokens=8, concurrency=4, cache=cache_path(True), timeout_s=600)
        t0 = time.time()
        prompt = measure_prompt_effects(client, args.prompt_trials)
        prompt["seconds"] = round(time.time() - t0, 1)
        out = Path(args.out)
        fit = json.loads(out.read_text()) if out.exists() else {}
        if not prompt["computed_calls"] and "prompt" in fit:  # a replay from the cache: keep the measurement's time
            prompt.update({k: fit["prompt"][k] for k in ("seconds", "mean_latency_s") if k in fit["prompt"]})
        fit["prompt"] = prompt
        out.write_text(json.dumps(fit, indent=1) + "\n")
        print(json.dumps({k: v for k, v in prompt.items() if k != "cells"}, indent=1))
        return
    client = LLMClient(base_url=args.base_url, max_tokens=8, concurrency=4)
    t0 = time.time()
    jobs = [(_forward, (client, n, 50_000 + 97 * n + i, 0.0)) for n in FORWARD_N for i in range(args.trials)]
    jobs += [(_forward, (client, n, 60_000 + 97 * n + i, 0.8)) for n in WARM_N for i in range(args.trials)]
    jobs += [(_reverse, (client, n, 70_000 + 97 * n + i)) for n in REVERSE_N for i in range(args.trials)]
    with ThreadPoolExecutor(4) as pool:
        rows = list(pool.map(lambda job: job[0](*job[1]), jobs))
    greedy = rows[: len(FORWARD_N) * args.trials]
    warm = rows[len(greedy): len(greedy) + len(WARM_N) * args.trials]
    reverse = rows[len(greedy) + len(warm):]

    def acc(rs, n, key="kind"):
        sel = [r for r in rs if r["n"] == n]
        return float(np.mean([(r[key] == "correct") if key == "kind" else r[key] for r in sel]))

    fwd = {n: acc(greedy, n) for n in FORWARD_N}
    (p_max, n50, slope), _ = curve_fit(p_curve, list(fwd), list(fwd.values()), p0=(0.9, 8.0, 1.5),
                                       bounds=([0.05, 0.5, 0.3], [1.0, 500.0, 6.0]))
    # temperature: p_t = p_0 * exp(-beta * t), beta from the warm/greedy ratio at the same n
    ratios = [max(acc(warm, n), 1e-3) / max(acc(greedy, n), 1e-3) for n in WARM_N if acc(greedy, n) > 0]
    beta = float(max(0.0, -math.log(float(np.mean(ratios))) / 0.8)) if ratios else 0.0
    wrong = [r for r in greedy + warm if r["kind"] != "correct"]
    n_wrong = max(1, len(wrong))
    rev = {n: acc(reverse, n, "ok") for n in REVERSE_N}
    (r_max, r50, r_slope), _ = curve_fit(p_curve, list(rev), [max(v, 1e-3) for v in rev.values()],
                                         p0=(0.6, 8.0, 1.0), bounds=([0.02, 0.5, 0.3], [1.0, 500.0, 6.0]))
    chars = np.array([r["chars"] for r in rows], float)
    tokens = np.array([r["tokens"] for r in rows], float)
    tok_per_char, tok_offset = np.polyfit(chars, tokens, 1)
    fit = {
        "model": client.model if args.base_url else "gemma-3-270m (embedded, q4_k_m)",
        "measured": {
            "trials_per_point": args.trials,
            "forward_greedy_accuracy": {str(n): v for n, v in fwd.items()},
            "forward_t0.8_accuracy": {str(n): acc(warm, n) for n in WARM_N},
            "reverse_accuracy": {str(n): v for n, v in rev.items()},
            "wrong_answer_kinds": {k: sum(r["kind"] == k for r in wrong) for k in ("distractor", "invented", "none")},
            "seconds": round(time.time() - t0, 1),
            "mean_latency_s_by_n": {str(n): round(float(np.mean([r["latency_s"] for r in greedy if r["n"] == n])), 3)
                                    for n in FORWARD_N},
        },
        "forward": {"p_max": float(p_max), "n50": float(n50), "slope": float(slope), "temperature_beta": beta},
        "reverse": {"p_max": float(r_max), "n50": float(r50), "slope": float(r_slope)},
        "wrong": {"none": sum(r["kind"] == "none" for r in wrong) / n_wrong,
                  "distractor": sum(r["kind"] == "distractor" for r in wrong) / n_wrong},
        "tokens": {"per_char": float(tok_per_char), "offset": float(tok_offset)},
    }
    Path(args.out).write_text(json.dumps(fit, indent=1) + "\n")
    print(json.dumps(fit, indent=1))


if __name__ == "__main__":
    main()
