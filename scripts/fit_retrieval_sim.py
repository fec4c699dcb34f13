"""Measure the real model on the retrieval task and fit the simulated backend's parameters.

Single LLM calls over the whole record list (the prompts of :mod:`qd.domains.retrieval_task`):

* forward accuracy ("what is the code of K?") vs. records in context, greedy and at temperature 0.8;
* how wrong answers look (a code from the records, another 4-digit string, or "none");
* reverse-lookup accuracy ("which key has code C?", the verification call);
* prompt tokens vs. prompt characters (the simulated backend's token estimate).

The fit ``p(n) = p_max / (1 + (n / n50) ** slope)`` and the rest go to
``domains/retrieval_fit.json``, which :mod:`qd.domains.retrieval_sim` loads.

Usage::

    python scripts/fit_retrieval_sim.py [--trials 12] [--base-url URL] [--out domains/retrieval_fit.json]
"""
from __future__ import annotations

import argparse
import json
import math
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from scipy.optimize import curve_fit

from qd.domains.retrieval_task import (
    forward_prompt,
    make_instance,
    parse_code,
    parse_key,
    reverse_prompt_with_example,
)
from qd.llm.client import LLMClient

FORWARD_N = (4, 8, 16, 32, 64)
WARM_N = (4, 16)
REVERSE_N = (2, 4, 8)


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--base-url", default=None)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "domains" / "retrieval_fit.json"))
    args = ap.parse_args()
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
