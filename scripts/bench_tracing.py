"""Overhead of automatic tracing per LLM call, against the same calls untraced, in the same run.

A local OpenAI-compatible server (tests/counting_openai.py) answers instantly, so the call's wall
time is the client's and the HTTP round trip's: the worst case for the relative overhead. Traced
and untraced calls alternate one by one so that machine load affects both alike.

Three numbers per call kind (plain chat completion, streamed chat completion with usage):

* ``traced_us - untraced_us``: the end-to-end difference of the median calls (noisy on a loaded machine);
* ``hook_us``: the tracing work alone (check the path, open the span, read model and usage, pass
  a stream through its wrapper, close the span with inferred deps), replayed on a recorded
  exchange without the network, fastest of repeated runs: what the difference estimates;
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


def _paired(client: openai.OpenAI, n: int, stream: bool) -> tuple[list[float], list[float]]:
    """Wall time (s) of ``n`` untraced and ``n`` traced calls, alternating call by call.

    Alternating single calls (rather than blocks) makes load spikes hit both kinds alike; the
    untraced call passes straight through the hooks, as an inner layer's call does.
    """
    untraced, traced = [], []
    for batch in range(0, n, 20):  # a tracer per 20 calls, as an evaluation holds a few spans
        with Tracer() as t:
            for _ in range(min(20, n - batch)):
                token = autotrace.suppressed()
                start = time.perf_counter()
                _call(client, stream)
                untraced.append(time.perf_counter() - start)
                autotrace._IN_CALL.reset(token)
                start = time.perf_counter()
                _call(client, stream)
                traced.append(time.perf_counter() - start)
        assert len(t.spans) == min(20, n - batch), len(t.spans)
    return untraced, traced


class _Chunks:
    """A response body handed over chunk by chunk, as a transport does."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    def __iter__(self):
        return iter(self.chunks)

    def close(self) -> None:
        pass


def _hook_cost(base_url: str, stream: bool) -> float:
    """Time (s) the tracing code spends on one call: the fastest of repeated runs on a recorded exchange.

    One real request and response are recorded from the server, then replayed through exactly
    what the HTTP hook does around a call (check the path, open the span, read model and usage,
    follow the stream, close the span with inferred deps) without the network. The minimum over
    repeats is robust to machine load, unlike the end-to-end difference.
    """
    import httpx2

    body = {"messages": [{"role": "user", "content": "hi"}], "model": "gpt-4o-mini"}
    if stream:
        body.update(stream=True, stream_options={"include_usage": True})
    with httpx2.Client() as http:
        request = http.build_request("POST", base_url + "/chat/completions", json=body)
        token = autotrace.suppressed()
        try:
            recorded = http.send(request)
        finally:
            autotrace._IN_CALL.reset(token)
    chunks = [recorded.content[i:i + 256] for i in range(0, len(recorded.content), 256)]  # as a socket delivers
    sync_stream, _ = autotrace._stream_classes(httpx2)

    def one(traced: bool) -> None:
        if traced:
            if not autotrace._is_llm_post(request.method, request.url.path, lambda: autotrace._httpx_body(request)):
                raise AssertionError("not an LLM call")
            observer = autotrace._Observer(tracer_mod.begin_llm_call(), request.url.path,
                                           autotrace._httpx_body(request))
            with autotrace._recording(observer):
                pass
        if stream:
            response = httpx2.Response(200, headers=recorded.headers, stream=_Chunks(chunks))
            if traced:
                autotrace._observe(observer, response, sync_stream)
            for _ in response.stream:
                pass
            response.stream.close()
        else:
            response = httpx2.Response(200, headers=recorded.headers, content=recorded.content)
            if traced:
                autotrace._observe(observer, response, sync_stream)

    def fastest(traced: bool) -> float:
        best = float("inf")
        for _ in range(7):
            with Tracer():  # a fresh tracer per batch, as each evaluation has
                start = time.perf_counter()
                for _ in range(200):
                    one(traced)
                best = min(best, (time.perf_counter() - start) / 200)
        return best

    # The replay builds a response object the real call builds anyway: only the difference is tracing.
    return max(0.0, fastest(True) - fastest(False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=400, help="traced/untraced call pairs per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args()
    autotrace.install()
    report = {}
    with CountingOpenAI() as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="sk-bench", max_retries=0)
        for stream in (False, True):
            kind = "stream" if stream else "plain"
            _paired(client, 50, stream)  # warm up connections and code paths
            untraced, traced = [], []
            for _ in range(args.rounds):
                u, t = _paired(client, args.calls, stream)
                untraced += u
                traced += t
            hook = _hook_cost(server.base_url, stream)
            base = statistics.median(untraced)
            row = {
                "untraced_us": round(base * 1e6, 1),
                "traced_us": round(statistics.median(traced) * 1e6, 1),
                "difference_us": round((statistics.median(traced) - base) * 1e6, 1),  # medians of single calls
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
