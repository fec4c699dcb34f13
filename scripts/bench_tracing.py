"""Overhead of automatic tracing per LLM call, against the same calls untraced, in the same run.

A local OpenAI-compatible server (tests/counting_openai.py) answers instantly, so the call's wall
time is the client's and the HTTP round trip's: the worst case for the relative overhead. Blocks
of traced and untraced calls alternate so that machine load drifts affect both alike.

Three numbers per call kind (plain chat completion, streamed chat completion with usage):

* ``traced_us - untraced_us``: the end-to-end difference of the means (noisy on a loaded machine);
* ``hook_us``: the tracing work alone, timed in-process (begin span, read model and usage,
  finish span, inferred deps), which is what the difference estimates;
* ``ratio``: ``hook_us`` over the untraced call's wall time.

Usage::

    python scripts/bench_tracing.py [--calls 400] [--rounds 5] [--out bench_tracing.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import openai  # noqa: E402
from counting_openai import CountingOpenAI  # noqa: E402

from qd.analysis import Tracer, autotrace  # noqa: E402
from qd.analysis import tracer as tracer_mod  # noqa: E402

TARGET_US, TARGET_RATIO = 50.0, 0.02


def _call(client: openai.OpenAI, stream: bool) -> None:
    if stream:
        for _ in client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
                                                stream=True, stream_options={"include_usage": True}):
            pass
    else:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])


def _block(client: openai.OpenAI, n: int, stream: bool, traced: bool) -> float:
    """Mean wall time per call (s) of ``n`` calls, traced inside a Tracer or passed through untraced."""
    if traced:
        with Tracer() as t:
            start = time.perf_counter()
            for _ in range(n):
                _call(client, stream)
            elapsed = time.perf_counter() - start
        assert len(t.spans) == n, (len(t.spans), n)
        return elapsed / n
    token = autotrace.suppressed()  # the hooks pass straight through, as for an inner layer
    try:
        start = time.perf_counter()
        for _ in range(n):
            _call(client, stream)
        return (time.perf_counter() - start) / n
    finally:
        autotrace._IN_CALL.reset(token)


def _hook_cost(client: openai.OpenAI, n: int, stream: bool) -> float:
    """Time spent in the tracing code itself per call (s), measured by wrapping its entry points."""
    spent, depth = [0.0], [0]
    begin, finish = tracer_mod.begin_llm_call, tracer_mod.finish_llm_call
    scan, observe = autotrace._Observer.scan, autotrace._observe

    def timed(fn):
        def wrapper(*args, **kwargs):
            depth[0] += 1  # nested entry points (observe -> scan -> finish) are counted once
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                depth[0] -= 1
                if depth[0] == 0:
                    spent[0] += time.perf_counter() - t0
        return wrapper

    autotrace.begin_llm_call = timed(begin)
    autotrace.finish_llm_call = timed(finish)
    autotrace._Observer.scan = timed(scan)
    autotrace._observe = timed(observe)
    try:
        with Tracer():
            for _ in range(n):
                _call(client, stream)
    finally:
        autotrace.begin_llm_call, autotrace.finish_llm_call = begin, finish
        autotrace._Observer.scan, autotrace._observe = scan, observe
    # The wrappers' own perf_counter calls are counted too: this over-states the cost slightly.
    return spent[0] / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=400, help="calls per block")
    parser.add_argument("--rounds", type=int, default=5, help="traced/untraced block pairs")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args()
    autotrace.install()
    report = {}
    with CountingOpenAI() as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="sk-bench", max_retries=0)
        for stream in (False, True):
            kind = "stream" if stream else "plain"
            _block(client, 50, stream, traced=False)  # warm up connections and code paths
            _block(client, 50, stream, traced=True)
            untraced, traced = [], []
            for _ in range(args.rounds):
                untraced.append(_block(client, args.calls, stream, traced=False))
                traced.append(_block(client, args.calls, stream, traced=True))
            hook = _hook_cost(client, args.calls, stream)
            base = statistics.median(untraced)
            row = {
                "untraced_us": round(base * 1e6, 1),
                "traced_us": round(statistics.median(traced) * 1e6, 1),
                "difference_us": round((statistics.median(traced) - base) * 1e6, 1),
                "hook_us": round(hook * 1e6, 1),
                "ratio": round(hook / base, 4),
            }
            row["within_target"] = row["hook_us"] <= TARGET_US and row["ratio"] < TARGET_RATIO
            report[kind] = row
            print(f"{kind:>6}: untraced {row['untraced_us']:8.1f} us/call  traced {row['traced_us']:8.1f} us/call  "
                  f"difference {row['difference_us']:6.1f} us  tracing code {row['hook_us']:5.1f} us "
                  f"({100 * row['ratio']:.2f}% of a call)  target <= {TARGET_US:g} us and < {100 * TARGET_RATIO:g}%: "
                  f"{'met' if row['within_target'] else 'NOT met'}")
        client.close()
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
