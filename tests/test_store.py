import hashlib
import math
import sqlite3

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qd.analysis.descriptors import resolve_measures
from qd.archives import GridArchive
from qd.domains.arm import ArmDomain
from qd.evaluators import SerialEvaluator
from qd.keyset import key_of
from qd.listeners import SearchListener, StoreRecorder
from qd.llm.client import LLMClient, Usage
from qd.operators.classic import IsoLineDD, Mutation
from qd.search import Search
from qd.store import RunStore


def _digest(text):
    return hashlib.sha256(text.encode()).hexdigest()


def _add(store, i, status="ok", fitness=1.0):
    store.add_evaluation(id=i, config_json=f'{{"a":{i}}}', status=status, fitness=fitness,
                         measures={"x": float(i)}, error="", feedback="fine", operator="mutation",
                         parent_ids=[i - 1] if i else [], trace_summary={"llm_calls": i}, metrics={},
                         archive_status=2, submitted_at=0.0)


def test_rows_survive_reopening_in_id_order(tmp_path):
    path = tmp_path / "run.sqlite"
    with RunStore(path) as store:
        for i in (2, 0, 1):
            _add(store, i)
        _add(store, 3, status="error", fitness=math.nan)
        store.set_meta("budget", 10)
        store.set_counters("operators", {"mutation": {"offspring": 4, "valid": 3}})
    with RunStore(path) as store:
        rows = list(store.evaluations())
        assert [r.id for r in rows] == [0, 1, 2, 3]
        assert rows[1].config == {"a": 1} and rows[1].parent_ids == [0]
        assert math.isnan(rows[3].fitness) and rows[3].status == "error"
        assert store.count() == 4 and store.max_id() == 3
        assert store.status_counts() == {"ok": 3, "error": 1}
        assert store.get_meta("budget") == 10
        assert store.counters("operators") == {"mutation": {"offspring": 4.0, "valid": 3.0}}
        assert store.get(2).trace_summary == {"llm_calls": 2}
        assert store.get(99) is None
        assert [r.hash for r in rows] == [_digest(f'{{"a":{i}}}') for i in range(4)]  # the config's sha256
        assert sorted(store.keys().tolist()) == sorted(key_of(r.hash) for r in rows)
        lean = list(store.objectives())
        assert [(i, h, status) for i, h, status, _ in lean] == [(r.id, r.hash, r.status) for r in rows]
        assert [f for *_, f in lean[:3]] == [r.fitness for r in rows[:3]] and math.isnan(lean[3][3])


def test_store_uses_wal(tmp_path):
    with RunStore(tmp_path / "run.sqlite") as store:
        assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_counters_are_committed_in_the_evaluation_transaction(tmp_path):
    with RunStore(tmp_path / "run.sqlite") as store:
        store.add_evaluation(id=0, config_json="{}", status="ok", fitness=1.0, measures={}, error="",
                             feedback="", operator="mutation", parent_ids=[], trace_summary={}, metrics={},
                             archive_status=1, submitted_at=0.0,
                             counters={"operators": {"mutation": {"evaluated": 1}}, "llm": {"total": {"calls": 2}}})
        assert store.counters("operators") == {"mutation": {"evaluated": 1.0}}
        assert store.counters("llm") == {"total": {"calls": 2.0}}
        # a counter that cannot be stored rolls the evaluation back with it: rows and counters never disagree
        with pytest.raises(ValueError, match="could not convert string to float"):
            store.add_evaluation(id=1, config_json='{"b":1}', status="ok", fitness=1.0, measures={}, error="",
                                 feedback="", operator="mutation", parent_ids=[], trace_summary={}, metrics={},
                                 archive_status=1, submitted_at=0.0,
                                 counters={"operators": {"mutation": {"evaluated": "two"}}})
        assert store.count() == 1 and store.counters("operators") == {"mutation": {"evaluated": 1.0}}


def test_a_readonly_store_writes_nothing(tmp_path):
    path = tmp_path / "run.sqlite"
    with RunStore(path) as store:
        _add(store, 0)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with RunStore(path, readonly=True) as store:
        assert store.count() == 1
        with pytest.raises(sqlite3.OperationalError, match="readonly|read-only"):
            _add(store, 1)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # no -wal/-shm either
    with pytest.raises(FileNotFoundError, match="no run store at"):
        RunStore(tmp_path / "missing.sqlite", readonly=True)


class _CheckCountersThenSpend(SearchListener):
    """After each group commit: the store holds every counter table exactly; then spends LLM usage for the next."""

    def __init__(self, spend: list[tuple[str, int]]):
        self.spend, self.checked = spend, 0

    def on_results(self, search, events):
        recorder = next(x for x in search.listeners if isinstance(x, StoreRecorder))
        for scope, table in recorder.counters(search).items():
            assert search.store.counters(scope) == table, scope
        for _ in events:
            self.checked += 1
            tag, tokens = self.spend[(self.checked - 1) % len(self.spend)]
            if tokens:  # what LLMClient counts for one call under this tag
                for usage in (search.llm_client.usage, search.llm_client.usage_by_tag.setdefault(tag, Usage())):
                    usage.calls += 1
                    usage.tokens_in += tokens


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spend=st.lists(st.tuples(st.sampled_from(["lmx", "llm_mutation", "pipeline"]), st.integers(0, 3)),
                      min_size=1, max_size=6),
       adapt_every=st.integers(1, 7))
def test_the_counters_committed_with_each_group_are_the_whole_tables(tmp_path_factory, spend, adapt_every):
    # Each commit writes only the fields that moved; the store must still hold every table exactly
    # (operator shares moving with adaptive weights, noise policy, LLM usage added to an earlier session's).
    domain = ArmDomain(joints=4)
    archive = GridArchive(dims=[8, 8], ranges=domain.default_ranges, measure_names=["x", "y"])
    ops = {"iso_line_dd": (IsoLineDD(domain.space), 1.0), "mutation": (Mutation(domain.space), 0.5)}
    with RunStore(tmp_path_factory.mktemp("run") / "run.sqlite") as store:
        store.set_counters("llm", {"total": {"calls": 5.0}, "earlier_only": {"calls": 2.0}})
        check = _CheckCountersThenSpend(spend)
        search = Search(domain, archive, SerialEvaluator(domain), operators=ops,
                        measures=resolve_measures(["x", "y"], domain), budget=40, store=store,
                        llm_client=LLMClient(base_url="http://127.0.0.1:9", model="m"), listeners=[check],
                        init_random=5, adaptive=True, adapt_every=adapt_every, noise="adaptive", progress=False,
                        commit_s=0.0)  # one commit per batch: every spend is checked after the next commit
        search.run()
        search.close()
        assert check.checked == 40
        assert store.counters("llm")["earlier_only"] == {"calls": 2.0}
        assert store.counters("llm")["total"]["calls"] == 5 + sum(1 for i in range(40) if spend[i % len(spend)][1])


SPAN = st.fixed_dictionaries(
    {"id": st.integers(0, 50), "parent_id": st.none() | st.integers(0, 50), "deps": st.lists(st.integers(0, 50)),
     "kind": st.sampled_from(["llm", "tool", "step"]), "name": st.text(max_size=10),
     "tokens_in": st.integers(0, 10**6), "latency_s": st.floats(0, 1e4), "start_s": st.floats(0, 2e9),
     "ok": st.booleans(), "cached": st.booleans(), "cost_usd": st.floats(0, 10)},
    optional={"input": st.text(max_size=40), "output": st.text(max_size=40), "unpriced": st.just(True)})


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(traces=st.lists(st.lists(SPAN, max_size=5), min_size=1, max_size=4))
def test_stored_traces_read_back_exactly(tmp_path_factory, traces):
    path = tmp_path_factory.mktemp("traces") / "run.sqlite"
    with RunStore(path) as store:
        for i, trace in enumerate(traces):
            store.add_evaluation(id=i, config_json=f"{{\"t\":{i}}}", status="ok", fitness=1.0, measures={},
                                 error="", feedback="", operator="seed", parent_ids=[], trace_summary={}, metrics={},
                                 archive_status=1, submitted_at=0.0, trace=trace)
        store.add_evaluation(id=len(traces), config_json='{"untraced":1}', status="ok", fitness=1.0, measures={},
                             error="", feedback="", operator="seed", parent_ids=[], trace_summary={"spans": 2},
                             metrics={}, archive_status=1, submitted_at=0.0)  # spans recorded, none kept
    with RunStore(path, readonly=True) as store:
        assert store.traces(range(len(traces) + 1)) == dict(enumerate(traces))
        assert store.trace(0) == traces[0] and store.trace(len(traces)) is None
        assert store.trace_count() == len(traces)


def test_a_trace_is_committed_in_its_evaluation_transaction(tmp_path):
    with RunStore(tmp_path / "run.sqlite") as store:
        store._db.execute("INSERT INTO traces VALUES (1, x'00')")  # a clash makes the trace insert fail
        with pytest.raises(sqlite3.IntegrityError):
            store.add_evaluation(id=1, config_json="{}", status="ok", fitness=1.0, measures={}, error="",
                                 feedback="", operator="seed", parent_ids=[], trace_summary={}, metrics={},
                                 archive_status=1, submitted_at=0.0, trace=[{"id": 0, "kind": "llm"}])
        assert store.count() == 0  # the evaluation went with it


def test_a_store_without_a_traces_table_reads_as_having_no_traces(tmp_path):
    from store_versions import as_version_1

    with RunStore(tmp_path / "src" / "run.sqlite") as store:
        _add(store, 0)
    path = as_version_1(tmp_path / "src", tmp_path / "v1") / "run.sqlite"  # a qd before traces were kept
    with RunStore(path, readonly=True) as store:
        assert not store.has_traces and store.trace(0) is None and store.traces([0]) == {}
        assert store.trace_count() == 0
    with RunStore(path) as store:  # a resume converts it: the table appears, new rows get traces
        store.migrate()
        assert store.has_traces and store.trace(0) == []  # its summary counts no spans
        store.add_evaluation(id=1, config_json='{"a":1}', status="ok", fitness=1.0, measures={}, error="",
                             feedback="", operator="seed", parent_ids=[], trace_summary={"spans": 1}, metrics={},
                             archive_status=1, submitted_at=0.0, trace=[{"id": 0, "kind": "tool"}])
        assert store.trace(1) == [{"id": 0, "kind": "tool"}]


def test_an_unreadable_trace_is_an_error_naming_the_evaluation_and_store(tmp_path):
    path = tmp_path / "run.sqlite"
    with RunStore(path) as store:
        _add(store, 0)
        store._db.execute("INSERT INTO traces VALUES (0, x'0102')")
        with pytest.raises(ValueError, match=r"the trace of evaluation 0 in .*run.sqlite is unreadable"):
            store.trace(0)


def test_unreadable_traces_are_collected_when_asked_and_the_readable_ones_returned(tmp_path):
    with RunStore(tmp_path / "run.sqlite") as store:
        for i in range(4):
            store.add_evaluation(id=i, config_json=f'{{"x": {i}}}', status="ok", fitness=1.0, measures={}, error="",
                                 feedback="", operator="seed", parent_ids=[], trace_summary={"spans": 1}, metrics={},
                                 archive_status=1, submitted_at=0.0, trace=[{"id": 0, "kind": "tool", "i": i}])
        store._db.execute("UPDATE traces SET spans = x'0102' WHERE id IN (1, 3)")
        problems: list[str] = []
        traces = store.traces(range(6), unreadable=problems)
        assert sorted(traces) == [0, 2] and traces[2] == [{"id": 0, "kind": "tool", "i": 2}]
        assert [p.split(" in ")[0] for p in problems] == ["the trace of evaluation 1", "the trace of evaluation 3"]
        with pytest.raises(ValueError, match="evaluation 1"):
            store.traces(range(6))


def test_a_search_stores_each_evaluation_trace_with_its_text_clipped(tmp_path):
    from qd.analysis.descriptors import summarize
    from qd.domains import get_domain

    domain = get_domain("retrieval-sim", n_pairs=8, n_instances=2)
    domain.trace_text_chars = 40
    archive = GridArchive(dims=[4, 4], ranges=[[0, 6], [0, 200]], measure_names=["log2_calls", "max_prompt_tokens"])
    with RunStore(tmp_path / "run.sqlite") as store:
        search = Search(domain, archive, SerialEvaluator(domain), operators={"mutation": (Mutation(domain.space), 1.0)},
                        measures=resolve_measures(archive.measure_names, domain), budget=12, store=store,
                        init_random=4, seed=2)
        with search:
            search.run()
        rows = list(store.evaluations())
        traces = store.traces(r.id for r in rows)
    assert sorted(traces) == [r.id for r in rows]
    for row in rows:
        trace = traces[row.id]
        # the stored trace is the one the summary (its non-zero fields) was made from
        assert {k: v for k, v in summarize(trace).items() if v} == row.trace_summary
        llm = [s for s in trace if s["kind"] == "llm"]
        assert llm and all(0 < len(s["input"]) <= 40 and s["output"] for s in llm)


@pytest.mark.parametrize("chars", [0, 25])
def test_run_trace_text_chars_reaches_the_stored_spans(tmp_path, chars):
    from report_runs import make_run, sim_config

    run_dir = make_run(sim_config(evaluations=6, init_random=6, trace_text_chars=chars), tmp_path / "run")
    with RunStore(run_dir / "run.sqlite", readonly=True) as store:
        spans = [s for t in store.traces(range(6)).values() for s in t if s["kind"] == "llm"]
    assert spans
    if chars:
        assert all(0 < len(s["input"]) <= chars and len(s["output"]) <= chars for s in spans)
        assert any(len(s["input"]) == chars and "…" in s["input"] for s in spans)
    else:
        assert not any("input" in s or "output" in s for s in spans)
