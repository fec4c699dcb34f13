"""How much the prompt's text moves the topics domain's score on the embedded model.

Evaluates a grid of prompts of :mod:`qd.domains.topics` (instructions x field names x worked
examples, ``demo_order`` as listed) on held-out headlines (the validation split, ``--draws`` draws of
``--headlines`` each) with greedy calls to the embedded gemma-3-270m, and prints the accuracy of
each prompt with its binomial standard error, the spread the instruction alone causes at each
(field names, few_shot), and the wall time per evaluation. Usage::

    python scripts/measure_topics.py [--headlines 8] [--draws 2] [--base-url URL]

Calls go through qd's request cache (greedy: a repeated prompt is replayed), so a rerun is fast.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from anywhere without installing

from qd.domains.topics import DEFAULT_INSTRUCTION, TopicsDomain  # noqa: E402
from qd.evaluation import evaluate_config, with_draw  # noqa: E402

INSTRUCTIONS = {
    "default": DEFAULT_INSTRUCTION,
    "none": "",
    "names the topics": "Classify each headline by its topic: sports, food, technology or weather.",
    "off task": "Write a short story about a dragon.",
}
LABELS = (("Input", "Output"), ("Headline", "Topic"))
FEW_SHOT = (0, 1, 2, 4)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--headlines", type=int, default=8, help="headlines per evaluation (default 8)")
    parser.add_argument("--draws", type=int, default=2, help="validation draws per prompt (default 2)")
    parser.add_argument("--base-url", default=None, help="OpenAI-compatible endpoint (default: the embedded model)")
    args = parser.parse_args(argv)
    domain = TopicsDomain(n_instances=args.headlines, base_url=args.base_url, cache=True, timeout_s=600.0)
    rows, seconds = [], []
    for (inp, out) in LABELS:
        for k in FEW_SHOT:
            for name, instruction in INSTRUCTIONS.items():
                config = {"instruction": instruction, "input_label": inp, "output_label": out, "few_shot": k,
                          "demo_order": "as_listed"}
                scores = []
                for draw in range(args.draws):
                    start = time.perf_counter()
                    result = evaluate_config(domain, with_draw(config, draw, "validation"))
                    if not any(s.get("cached") for s in result.trace):
                        seconds.append(time.perf_counter() - start)
                    scores += result.scores
                acc = float(np.mean(scores))
                rows.append((inp, out, k, name, acc, math.sqrt(acc * (1 - acc) / len(scores)), len(scores)))
                print(f"{inp}/{out} few_shot={k} {name:<17} accuracy {acc:.2f}", file=sys.stderr, flush=True)
    print("| field names | few_shot | " + " | ".join(INSTRUCTIONS) + " | spread from the instruction |")
    print("|---|---|" + "---|" * (len(INSTRUCTIONS) + 1))
    for (inp, out) in LABELS:
        for k in FEW_SHOT:
            accs = [r for r in rows if r[0] == inp and r[2] == k]
            cells = " | ".join(f"{r[4]:.2f} ± {r[5]:.2f}" for r in accs)
            spread = max(r[4] for r in accs) - min(r[4] for r in accs)
            print(f"| {inp}/{out} | {k} | {cells} | {spread:.2f} |")
    n = rows[0][6]
    print(f"\n{n} held-out headlines per prompt; ± is the binomial standard error.")
    if seconds:
        print(f"wall time per evaluation of {args.headlines} headlines (uncached): median {np.median(seconds):.2f} s, "
              f"{len(seconds)} evaluations")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
