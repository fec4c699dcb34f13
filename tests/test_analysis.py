"""Tracer (thread/async safety, nesting) and built-in descriptors on hand-written traces."""
from __future__ import annotations

import asyncio
import contextvars
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qd.analysis import (
    Tracer,
    active_tracer,
    autotrace,
    available_measures,
    critical_path_spans,
    export_trace_json,
    record_llm_call,
    resolve_measures,
    span,
    summarize,
    trace_critical_path,
    trace_max_fanout,
    traced,
)
from qd.analysis.descriptors import BUILTINS, max_depth, n_components, prompt_chars
from qd.analysis.tracer import begin_llm_call, finish_llm_call
from qd.domain import Domain
from qd.result import EvalResult
from qd.space import Bool, Float, Seq, Space, Text


def llm(name: str = "llm", deps=None, tokens_in: int = 1, tokens_out: int = 1, **kw):
    return record_llm_call(name=name, model="m", tokens_in=tokens_in, tokens_out=tokens_out, cached=False,
                           latency_s=0.0, start_s=0.0, deps=deps, **kw)


def S(id, kind, parent=None, deps=(), tin=0, tout=0, start=0.0, lat=0.0, cached=False, cost=0.0, name="x"):
    return {"id": id, "parent_id": parent, "deps": list(deps), "kind": kind, "name": name, "model": "m",
            "tokens_in": tin, "tokens_out": tout, "cached": cached, "latency_s": lat, "start_s": start, "ok": True,
            "error": "", "cost_usd": cost}


# plan -> search(tool) -> 3 parallel reads -> fuse -> [retrieve(tool) containing rewrite] -> final
HAND_TRACE = [
    S(0, "step", name="pipeline", start=100.0, lat=9.0),
    S(1, "llm", 0, (), 100, 10, start=100.0, lat=1.0, cost=0.001),
    S(2, "tool", 0, (1,), start=101.0, lat=0.5),
    S(3, "llm", 0, (2,), 300, 5, start=101.5, lat=2.0),
    S(4, "llm", 0, (2,), 250, 5, start=101.5, lat=2.5),
    S(5, "llm", 0, (2,), 200, 5, start=101.5, lat=1.5),
    S(6, "llm", 0, (3, 4, 5), 50, 20, start=104.0, lat=1.0, cost=0.002),
    S(7, "llm", 0, (), 10, 1, start=100.0, lat=0.0, cached=True),
    S(8, "tool", 0, (), start=105.0, lat=2.0),
    S(9, "llm", 8, (6,), 40, 4, start=105.0, lat=1.0),
    S(10, "llm", 0, (8,), 60, 3, start=107.0, lat=3.0),
]


def test_descriptors_of_a_hand_written_trace_are_exact():
    result = EvalResult(fitness=1.0, trace=HAND_TRACE)
    got = {name: fn({}, result) for name, fn in BUILTINS.items() if name in
           ("llm_calls", "tool_calls", "tokens_in", "tokens_out", "tokens_total", "critical_path", "max_fanout",
            "latency_s", "max_prompt_tokens", "cost_usd")}
    # plan(1) -> search -> read(2) -> fuse(3) -> rewrite inside retrieve(4) -> final(5)
    assert got == {"llm_calls": 8.0, "tool_calls": 2.0, "tokens_in": 1010.0, "tokens_out": 53.0,
                   "tokens_total": 1063.0, "critical_path": 5.0, "max_fanout": 3.0, "latency_s": 10.0,
                   "max_prompt_tokens": 300.0, "cost_usd": pytest.approx(0.003)}
    summary = summarize(HAND_TRACE)
    assert summary["cached_calls"] == 1 and summary["steps"] == 1 and summary["critical_path"] == 5
    json.dumps(summary)


def test_critical_path_and_fanout_edge_cases():
    assert trace_critical_path([]) == 0 and trace_max_fanout([]) == 0
    assert trace_critical_path([S(0, "tool")]) == 0
    # five parallel votes (same parent, no deps) then a fusion: width 5, depth 2
    votes = [S(i, "llm") for i in range(5)] + [S(5, "llm", deps=range(5))]
    assert trace_critical_path(votes) == 2 and trace_max_fanout(votes) == 5
    # sequential chain: each call consumes the previous one -> depth n, fanout 1
    chain = [S(0, "llm")] + [S(i, "llm", deps=(i - 1,)) for i in range(1, 6)]
    assert trace_critical_path(chain) == 6 and trace_max_fanout(chain) == 1
    # unknown dependency ids and a (malformed) cycle do not crash
    assert trace_critical_path([S(0, "llm", deps=(1, 99)), S(1, "llm", deps=(0,))]) == 2


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["llm", "tool"]), st.lists(st.integers(0, 30), max_size=3)),
                min_size=1, max_size=30))
def test_critical_path_matches_a_longest_path_recurrence(spec):
    # Random DAG (deps only on earlier ids); compare with a forward dynamic programme.
    trace = [S(i, kind, deps=[d for d in deps if d < i]) for i, (kind, deps) in enumerate(spec)]
    best = []
    for s in trace:
        best.append(max((best[d] for d in s["deps"]), default=0) + (s["kind"] == "llm"))
    assert trace_critical_path(trace) == max(best)
    assert trace_critical_path(trace) <= sum(s["kind"] == "llm" for s in trace)
    # the chain behind the number: each span consumes the one before it, and it holds that many LLM calls
    chain = critical_path_spans(trace)
    assert sum(trace[i]["kind"] == "llm" for i in chain) == max(best)
    assert all(a in trace[b]["deps"] for a, b in zip(chain, chain[1:]))
    assert not chain or trace[chain[0]]["kind"] == trace[chain[-1]]["kind"] == "llm"


def test_the_critical_path_of_the_hand_trace_is_plan_search_read_fuse_rewrite_final():
    # any of the three reads gives a chain of 5: the one with the lowest id is taken
    assert critical_path_spans(HAND_TRACE) == [1, 2, 3, 6, 9, 8, 10]


def test_tracer_nesting_parent_ids_and_deps():
    assert active_tracer() is None and llm() is None
    with Tracer() as t:
        assert active_tracer() is t
        with span("step", "outer") as outer:
            a = llm("a")
            with span("tool", "inner", deps=[a]) as inner:
                b = llm("b", deps=[a, None])
        llm("c", deps=[b])
    assert active_tracer() is None
    spans = t.spans
    assert [s["id"] for s in spans] == list(range(5))
    by_name = {s["name"]: s for s in spans}
    assert by_name["a"]["parent_id"] == outer and by_name["b"]["parent_id"] == inner
    assert by_name["b"]["deps"] == [a] and by_name["inner"]["deps"] == [a]
    assert by_name["c"]["parent_id"] is None and by_name["outer"]["latency_s"] >= 0
    assert trace_critical_path(spans) == 3


def test_recorded_and_begun_calls_infer_the_same_deps_from_their_flow():
    """record_llm_call and begin/finish_llm_call share one inference rule (module docstring of the tracer)."""
    def begun(name: str) -> int | None:
        return finish_llm_call(begin_llm_call(), name=name, model="m", tokens_in=1, tokens_out=1)

    with Tracer() as t:
        first = llm("first")
        second = begun("second")
        with ThreadPoolExecutor(2) as pool:  # two flows forked off this one, each starting after "second"
            forks = [f.result() for f in [pool.submit(contextvars.copy_context().run, fn, n)
                                          for fn, n in ((llm, "fork-a"), (begun, "fork-b"))]]
        joined = llm("joined")
        last = begun("last")
    deps = {s["name"]: s["deps"] for s in t.spans}
    # "joined" follows the forks, which follow "second": no direct edge to "second" (it would count
    # once more in its fan-out)
    assert deps == {"first": [], "second": [first], "fork-a": [second], "fork-b": [second],
                    "joined": forks, "last": [joined]}
    assert last == 5


def test_a_call_is_priced_by_its_caller_else_by_the_tracers_table_else_marked_unpriced():
    with Tracer(prices={"m": (1.0, 2.0)}) as t:
        llm("caller-priced", cost_usd=0.5)
        llm("caller-has-no-price", cost_usd=None)
        record_llm_call(name="unknown-model", model="house", tokens_in=3, tokens_out=2, cached=False,
                        latency_s=0.0, start_s=0.0)
        finish_llm_call(begin_llm_call(), name="tracer-priced", model="m", tokens_in=3, tokens_out=2)
        finish_llm_call(begin_llm_call(), name="nobody", model="house", tokens_in=3, tokens_out=2)
    spans = {s["name"]: s for s in t.spans}
    assert spans["caller-priced"]["cost_usd"] == 0.5 and "unpriced" not in spans["caller-priced"]
    # the tracer's table prices what the caller could not ("m": 1 and 2 USD per 1M tokens)
    assert spans["caller-has-no-price"]["cost_usd"] > 0 and "unpriced" not in spans["caller-has-no-price"]
    assert spans["unknown-model"]["cost_usd"] == 0 and spans["unknown-model"]["unpriced"] is True
    assert spans["tracer-priced"]["cost_usd"] == pytest.approx(7e-6) and "unpriced" not in spans["tracer-priced"]
    assert spans["nobody"]["cost_usd"] == 0 and spans["nobody"]["unpriced"] is True
    assert summarize(list(spans.values()))["unpriced_models"] == ["house"]


def test_span_records_errors_and_inner_tracer_shadows_outer():
    with Tracer() as outer:
        with pytest.raises(RuntimeError, match="boom"):
            with span("tool", "broken"):
                raise RuntimeError("boom")
        with Tracer() as inner:
            llm("inner-only")
        llm("outer-only")
    assert [s["name"] for s in outer.spans] == ["broken", "outer-only"]
    assert outer.spans[0]["ok"] is False and "boom" in outer.spans[0]["error"]
    assert [s["name"] for s in inner.spans] == ["inner-only"] and inner.spans[0]["parent_id"] is None
    with pytest.raises(ValueError, match="kind"):
        with span("bogus", "x"):
            pass


def test_tracer_does_not_see_other_threads_unless_context_copied():
    barrier = threading.Barrier(2)
    results: dict[str, list] = {}

    def worker(tag: str, use_tracer: bool):
        if use_tracer:
            with Tracer() as t:
                barrier.wait()
                for i in range(50):
                    llm(f"{tag}{i}")
                barrier.wait()
            results[tag] = t.spans
        else:
            barrier.wait()
            results[tag] = [llm(f"{tag}{i}") for i in range(50)]  # no tracer in this thread
            barrier.wait()

    for pair in ((("A", True), ("B", True)), (("A", True), ("C", False))):
        threads = [threading.Thread(target=worker, args=args) for args in pair]
        [th.start() for th in threads]
        [th.join() for th in threads]
        assert [s["name"] for s in results["A"]] == [f"A{i}" for i in range(50)]
    assert [s["name"] for s in results["B"]] == [f"B{i}" for i in range(50)]
    assert results["C"] == [None] * 50

    # with a copied context, pool threads record into the tracer under the span open at copy time
    with Tracer() as t:
        with span("step", "map") as parent:
            with ThreadPoolExecutor(4) as pool:
                # copy in the submitting thread: pool threads have their own (empty) contexts
                futures = [pool.submit(contextvars.copy_context().run, llm, f"chunk{i}") for i in range(20)]
                ids = [f.result() for f in futures]
            ctx = contextvars.copy_context()
        with ThreadPoolExecutor(2) as pool:
            ids += list(pool.map(lambda i: ctx.copy().run(llm, f"late{i}"), range(4)))
        autotrace.install()  # from now on a pool the traced code submits to runs in a copy of its context
        kept = ThreadPoolExecutor(1).submit(llm, "kept").result()
    assert kept is not None and None not in ids and len(set(ids + [kept])) == 25
    spans = t.spans
    assert len(spans) == 26 and all(s["parent_id"] == parent for s in spans[1:25]) and spans[25]["name"] == "kept"


def test_tracer_is_asyncio_safe_and_traced_decorates_sync_and_async():
    @traced("tool", name="lookup")
    async def lookup(i: int) -> int:
        await asyncio.sleep(0)
        llm(f"inside{i}")
        await asyncio.sleep(0)
        return i

    @traced()
    def helper(x: int) -> int:
        llm("helper-call")
        return x + 1

    async def main():
        with Tracer() as t:
            out = await asyncio.gather(*(lookup(i) for i in range(10)))
        return t, out

    t, out = asyncio.run(main())
    assert out == list(range(10))
    spans = t.spans
    tools = {s["id"]: s for s in spans if s["kind"] == "tool"}
    calls = [s for s in spans if s["kind"] == "llm"]
    assert len(tools) == 10 and len(calls) == 10 and all(s["name"] == "lookup" for s in tools.values())
    # each call sits under its own task's span even though tasks interleave
    assert sorted(s["parent_id"] for s in calls) == sorted(tools)
    assert len({s["parent_id"] for s in calls}) == 10
    with Tracer() as t2:
        assert helper(1) == 2
    names = [s["name"] for s in t2.spans]
    assert names[0].endswith("helper") and names[1] == "helper-call" and t2.spans[1]["parent_id"] == 0
    assert helper(2) == 3  # no tracer: plain call


def test_static_descriptors_with_and_without_space():
    space = Space({"instruction": Text(100), "t": Float(0, 1),
                   "layers": Seq(Space({"p": Text(50), "v": Bool()}), 0, 4)})
    config = {"instruction": "abcd", "t": 0.5, "layers": [{"p": "xy", "v": True}, {"p": "", "v": False}]}
    assert prompt_chars(config, space=space) == 6.0
    assert n_components(config, space=space) == 2.0 and n_components({"a": 1}, space=None) == 1.0
    assert max_depth(config) == 3.0 and max_depth({"a": 1}) == 1.0
    assert prompt_chars({"a": "xyz", "b": ["pq"]}) == 5.0


class _Dom(Domain):
    name = "toy"
    space = Space({"instruction": Text(100), "t": Float(0, 1)})
    default_measures = ("score2", "t_value")

    def descriptors(self):
        return {"t_value": lambda c, r: c["t"]}


def custom_descriptor(config, result):
    return 42.0


def test_resolve_measures_order_passthrough_import_and_errors():
    dom = _Dom()
    fns = resolve_measures(["llm_calls", "t_value", "score2", "prompt_chars",
                            "tests.test_analysis:custom_descriptor"], dom)
    result = EvalResult(fitness=1.0, measures={"score2": 7.5}, trace=HAND_TRACE)
    config = {"instruction": "hello", "t": 0.25}
    assert [f(config, result) for f in fns] == [8.0, 0.25, 7.5, 5.0, 42.0]
    assert [f.__name__ for f in fns][:2] == ["llm_calls", "t_value"]
    with pytest.raises(KeyError, match="score2"):
        fns[2](config, EvalResult(fitness=1.0))
    with pytest.raises(ValueError) as err:
        resolve_measures(["llm_call"], dom)
    message = str(err.value)
    assert "'llm_call'" in message and "did you mean 'llm_calls'" in message
    for name in ("critical_path", "max_prompt_tokens", "n_components", "t_value", "score2"):
        assert name in message
    assert available_measures(dom)[-2:] == ["t_value", "score2"]
    with pytest.raises(ValueError, match="cannot load descriptor .*no module .no_such_pkg.*Fix"):
        resolve_measures(["no_such_pkg.mod:f"], dom)
    with pytest.raises(ValueError, match="no attribute"):
        resolve_measures(["tests.test_analysis:nope"], dom)
    with pytest.raises(ValueError, match="list of names"):
        resolve_measures("llm_calls", dom)


def test_export_trace_json(tmp_path):
    path = export_trace_json(HAND_TRACE, tmp_path / "t" / "trace.json")
    data = json.loads(path.read_text())
    assert len(data["spans"]) == len(HAND_TRACE) and data["summary"]["critical_path"] == 5
    assert data["spans"][3]["rel_start_s"] == pytest.approx(1.5)


def test_a_map_over_other_measures_holds_each_configuration_once_at_its_means(tmp_path):
    from qd.analysis.selection import archive_over
    from qd.archives import GridArchive
    from qd.store import RunStore

    like = GridArchive(dims=[2], ranges=[(0, 1)], measure_names=["m"], qd_score_offset=-5.0)
    with RunStore(tmp_path / "run.sqlite") as store:
        with pytest.raises(ValueError, match="no usable evaluation"):
            archive_over(store, ["a", "b"], like)
        # config "A" twice (a re-evaluation), "B" once, and a failed evaluation
        for i, (h, fitness, a, b, status) in enumerate([("A", 1.0, 0.0, 0.0, "ok"), ("B", 0.5, 4.0, 4.0, "ok"),
                                                       ("A", 3.0, 2.0, 2.0, "ok"), ("C", 9.0, 4.0, 0.0, "error")]):
            store.add_evaluation(id=i, hash=h, config_json=json.dumps({"k": h}), status=status, fitness=fitness,
                                 measures={"a": a, "b": b}, error="", feedback="", operator="m", parent_ids=[],
                                 trace_summary={}, metrics={}, archive_status=0, submitted_at=0.0)
        archive = archive_over(store, ["a", "b"], like)
        with pytest.raises(ValueError, match=r"unknown \['z'\]; stored: \['a', 'b'\]"):
            archive_over(store, ["a", "z"], like)
    elites = {e["solution"]["k"]: e for e in archive}
    assert sorted(elites) == ["A", "B"] and archive.qd_score_offset == -5.0
    assert elites["A"]["objective"] == 2.0 and list(elites["A"]["measures"]) == [1.0, 1.0] and elites["A"]["id"] == 0
    assert elites["B"]["objective"] == 0.5


@given(st.text(max_size=300), st.integers(0, 400))
def test_clipped_text_keeps_both_ends_within_the_limit(text, limit):
    from qd.result import clip_text

    clipped = clip_text(text, limit)
    assert len(clipped) <= limit
    if len(text) <= limit:
        assert clipped == text
    elif limit > 0:
        head, _, tail = clipped.rpartition("…")
        assert len(clipped) == limit and text.startswith(head) and text.endswith(tail)
        assert len(tail) == limit // 3


def test_recorded_calls_keep_text_up_to_the_tracer_limit():
    from qd.analysis.tracer import record_llm_call

    with Tracer(text_chars=9) as tracer:
        record_llm_call(name="a", model="m", tokens_in=1, tokens_out=1, cached=False, latency_s=0.1, start_s=0.0,
                        input=[{"role": "user", "content": "hi"}], output="yes")
        tracer.add_span(kind="llm", name="b", input="x" * 20, output=None)
    a, b = tracer.spans
    assert (a["input"], a["output"]) == ("user: hi", "yes")
    assert b["input"] == "xxxxx…xxx" and "output" not in b
    with Tracer(text_chars=0) as tracer:
        tracer.add_span(kind="llm", name="c", input="prompt", output="answer")
    assert "input" not in tracer.spans[0] and "output" not in tracer.spans[0]
