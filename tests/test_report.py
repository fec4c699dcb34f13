"""qd report without a browser: the data it embeds is the run's (traces as committed, no re-run), the page is
self-contained, bad inputs give a report that says what is missing or an error naming the run; and
`qd elites --export-traces` writes OTLP JSON. The browser tests are in test_report_browser.py."""
from __future__ import annotations

import base64
import gzip
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from report_runs import (
    SIM_MEASURES,
    arm_config,
    as_older_qd,
    empty_run,
    make_run,
    sim_config,
    with_damaged_traces,
    without_traces,
)

from qd.analysis.descriptors import critical_path_spans, summarize
from qd.cli import main
from qd.report import CSP, Limits, collect, render
from qd.result import check_span
from qd.rundir import read_run
from qd.store import RunStore

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sim_run(tmp_path_factory):
    return make_run(sim_config(), tmp_path_factory.mktemp("report") / "sim")


@pytest.fixture(scope="module")
def sim_data(sim_run):
    return collect(sim_run)


def unpack(page: str) -> dict:
    packed = re.search(r'<script type="application/octet-stream" id="qd-data">([^<]*)</script>', page).group(1)
    return json.loads(gzip.decompress(base64.b64decode(packed)))


def test_every_evaluation_and_elite_of_the_run_is_in_the_data(sim_run, sim_data):
    run = read_run(sim_run)
    rows = list(run.store.evaluations())
    evals = sim_data["evals"]
    assert evals["id"] == [r.id for r in rows]
    assert [evals["statuses"][s] for s in evals["status"]] == [r.status for r in rows]
    assert [evals["operators"][o] for o in evals["operator"]] == [r.operator for r in rows]
    for name in SIM_MEASURES:
        assert evals["measures"][name] == [r.measures[name] for r in rows]
    assert {e["id"]: e["cell"] for e in sim_data["elites"]} == {int(e["id"]): int(e["index"]) for e in run.archive}
    assert sim_data["status"]["num_elites"] == len(run.archive) and sim_data["problems"] == []
    # the cell of each insertion is the one the archive gives its measures
    for i, r in enumerate(rows):
        if r.archive_status > 0:
            assert evals["cell"][i] == run.archive.index_of_single([r.measures[n] for n in SIM_MEASURES])
    run.store.close()


def test_each_trace_is_the_one_committed_with_its_evaluation(sim_run, sim_data):
    with RunStore(sim_run / "run.sqlite", readonly=True) as store:
        rows = {r.id: r for r in store.evaluations()}
        assert sorted(int(i) for i in sim_data["traces"]) == sorted(rows)  # all of them: the run is small
        for key, trace in sim_data["traces"].items():
            row = rows[int(key)]
            assert trace["spans"] == [check_span(s, k) for k, s in enumerate(store.trace(row.id))]
            summary = summarize(trace["spans"])
            # span count, critical path and tokens are the evaluation's own measures and summary
            assert {k: v for k, v in summary.items() if v} == row.trace_summary  # the store keeps non-zero fields
            assert len(trace["spans"]) == row.trace_summary["spans"] > 0
            assert sum(trace["spans"][k]["kind"] == "llm" for k in trace["critical"]) \
                == row.trace_summary["critical_path"] == row.measures["critical_path"]
            assert trace["critical"] == critical_path_spans(trace["spans"])
            assert all(s["input"] and "output" in s for s in trace["spans"] if s["kind"] == "llm")


def test_the_page_is_self_contained_and_carries_its_data(sim_data):
    page = render(sim_data)
    assert f'<meta http-equiv="Content-Security-Policy" content="{CSP}">' in page
    assert "default-src 'none'" in CSP
    # nothing the browser would fetch: no element with a src or href, no url() in the style, no @import
    from html.parser import HTMLParser

    class Tags(HTMLParser):
        def __init__(self):
            super().__init__()
            self.attributes = []

        def handle_starttag(self, tag, attrs):
            self.attributes += [(tag, name) for name, _ in attrs]

    tags = Tags()
    tags.feed(page)
    assert tags.attributes and not [a for a in tags.attributes if a[1] in ("src", "href", "srcset", "action")]
    assert "url(" not in page and "@import" not in page
    assert unpack(page) == json.loads(json.dumps(sim_data))
    assert page.count("<script") == 2 and page.count("</script>") == 2  # the data block and the code


def test_text_from_the_run_cannot_end_the_script_element(sim_data):
    data = json.loads(json.dumps(sim_data))
    data["meta"]["name"] = "</script><script>alert(1)</script>"
    page = render(data)
    assert page.count("</script>") == 2 and "alert(1)" not in page.split("<body>")[1].split('id="qd-data">')[0]
    assert "&lt;/script&gt;" in page.split("</title>")[0]  # the title is escaped
    assert unpack(page)["meta"]["name"] == data["meta"]["name"]


def test_the_script_parses(tmp_path):
    node = subprocess.run(["node", "--version"], capture_output=True) if _has("node") else None
    if node is None or node.returncode:
        pytest.skip("node is not installed (the browser tests run the script itself)")
    script = (ROOT / "qd" / "report" / "templates" / "report.js")
    assert subprocess.run(["node", "--check", str(script)], capture_output=True).returncode == 0


def _has(program: str) -> bool:
    import shutil

    return shutil.which(program) is not None


def test_qd_report_writes_the_file_and_reads_the_store_only(sim_run, tmp_path, capsys):
    before = {p.name: p.read_bytes() for p in sim_run.iterdir() if p.is_file() and not p.name.endswith("-shm")}
    assert main(["report", str(sim_run), "-o", str(tmp_path / "out" / "r.html")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "out" / "r.html")
    page = (tmp_path / "out" / "r.html").read_text()
    assert unpack(page)["meta"]["evaluations"] == 90
    after = {p.name: p.read_bytes() for p in sim_run.iterdir() if p.is_file() and not p.name.endswith("-shm")}
    assert after == before


def test_a_run_in_progress_is_reported_as_one_snapshot(sim_run, tmp_path):
    """A writer commits while the report reads: every figure comes from the state the report opened."""
    import shutil

    shutil.copytree(sim_run, tmp_path / "live")
    path = tmp_path / "live" / "run.sqlite"
    writer = RunStore(path)  # holds the WAL open, as a running search does
    run = read_run(tmp_path / "live")
    row = writer.get(5)
    writer.add_evaluation(id=1000, config_json=json.dumps({**row.config, "new": 1}), status="ok", fitness=1.0,
                          measures=row.measures, error="", feedback="", operator="mutation", parent_ids=[5],
                          trace_summary=row.trace_summary, metrics={}, archive_status=2, submitted_at=row.submitted_at,
                          trace=writer.trace(5))
    assert run.store.count() == 90 and 1000 not in {r.id for r in run.store.evaluations()}
    run.store.close()
    assert len(collect(tmp_path / "live")["evals"]["id"]) == 91  # a new report sees it
    writer.close()


@pytest.mark.parametrize("kind", ["older_qd", "no_trace_rows", "empty", "damaged"])
def test_bad_input_gives_a_report_that_says_what_is_missing(sim_run, tmp_path, kind):
    if kind == "older_qd":
        run_dir = as_older_qd(sim_run, tmp_path / "v1")
        expected = "no traces: this store was written by a qd that did not keep them"
    elif kind == "no_trace_rows":
        run_dir = without_traces(sim_run, tmp_path / "bare")
        expected = "90 evaluation(s) have no stored trace"
    elif kind == "empty":
        run_dir = empty_run(sim_config(), tmp_path / "empty")
        expected = None
    else:
        run_dir = with_damaged_traces(sim_run, tmp_path / "damaged", malformed=4, unreadable=7)
        expected = "evaluation 4: 1 malformed span(s) left out of its trace: trace[1].tokens_in must be an integer"
    assert main(["report", str(run_dir), "-o", str(tmp_path / "r.html")]) == 0
    data = unpack((tmp_path / "r.html").read_text())
    if kind == "empty":
        assert data["evals"]["id"] == [] and data["elites"] == [] and data["status"]["evaluations"] == 0
        return
    assert any(p.startswith(expected) for p in data["problems"]), data["problems"]
    if kind == "damaged":
        assert any("the trace of evaluation 7 in" in p and "is unreadable" in p for p in data["problems"])
        with RunStore(sim_run / "run.sqlite", readonly=True) as store:
            assert "7" not in data["traces"] and len(data["traces"]["4"]["spans"]) == len(store.trace(4)) - 1
        assert len(data["traces"]["4"]["malformed"]) == 1
    else:
        assert data["traces"] == {}


def test_a_directory_that_is_no_run_or_lacks_its_layout_is_an_error_naming_it(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert f"{tmp_path / 'nothing'} is not a qd run directory (no run.sqlite)" in capsys.readouterr().err
    run_dir = empty_run(sim_config(), tmp_path / "old")
    with RunStore(run_dir / "run.sqlite") as store:
        store._db.execute("DELETE FROM meta WHERE key = 'archive'")
    assert main(["report", str(run_dir)]) == 2
    assert f"{run_dir}/run.sqlite does not describe its archive" in capsys.readouterr().err


def test_a_large_run_keeps_elites_ancestors_and_insertions_within_the_limits(sim_run):
    data = collect(sim_run, Limits(rows=40, config_chars=2_000, trace_spans=300))
    kept = set(data["evals"]["id"])
    run = read_run(sim_run)
    rows = {r.id: r for r in run.store.evaluations()}
    elites = {int(e["id"]) for e in run.archive}
    inserted = {i for i, r in rows.items() if r.archive_status > 0}
    ancestors, stack = set(), [p for e in elites for p in rows[e].parent_ids]
    while stack:
        i = stack.pop()
        if i not in ancestors:
            ancestors.add(i)
            stack.extend(rows[i].parent_ids)
    assert elites | ancestors | inserted <= kept and len(kept) == max(40, len(elites | ancestors | inserted))
    # configurations up to the limit, the elites' first
    configs = {int(i): c for i, c in data["configs"].items()}
    assert sum(len(json.dumps(c, separators=(",", ":"))) for c in configs.values()) <= 2_000
    assert all(configs[i] == rows[i].config for i in configs)
    assert set(configs) < elites or elites <= set(configs)
    assert any(p.startswith(f"configurations are embedded for {len(configs)} of {len(kept)} evaluations")
               for p in data["problems"])
    assert sum(len(t["spans"]) for t in data["traces"].values()) <= 300
    assert any(p.startswith(f"the table holds {len(kept)} of 90 evaluations") for p in data["problems"])
    run.store.close()


def test_a_cvt_archive_comes_with_its_voronoi_cells(tmp_path):
    from qd.report.cells import voronoi_polygons

    run_dir = make_run(arm_config(120, archive="cvt"), tmp_path / "cvt")
    data = collect(run_dir)
    archive = read_run(run_dir).archive
    polygons = data["archive"]["polygons"]
    assert len(polygons) == archive.cells == 40
    # each polygon's vertices are nearer its own centroid than any other (Voronoi), within the ranges
    centroids = archive.centroids
    for cell, poly in enumerate(polygons):
        vertices = np.array(poly)
        assert np.all(vertices >= -6 - 1e-9) and np.all(vertices <= 6 + 1e-9)
        d = np.linalg.norm(vertices[:, None, :] - centroids[None, :, :], axis=2)
        assert np.all(d[:, cell] <= d.min(axis=1) + 1e-5)  # vertices are kept to 7 digits
    # their areas tile the box
    area = sum(0.5 * abs(np.dot(p[:, 0], np.roll(p[:, 1], 1)) - np.dot(p[:, 1], np.roll(p[:, 0], 1)))
               for p in map(np.array, voronoi_polygons(centroids, [-6, -6], [6, 6])))
    assert area == pytest.approx(144.0)


def test_traces_export_as_otlp_json_with_openinference_attributes(sim_run, tmp_path, capsys):
    out = tmp_path / "otlp.json"
    assert main(["elites", str(sim_run), "--top", "3", "--export-traces", str(out)]) == 0
    records = json.loads(capsys.readouterr().out)
    doc = json.loads(out.read_text())
    (resource,) = doc["resourceSpans"]
    assert {"key": "service.name", "value": {"stringValue": "qd"}} in resource["resource"]["attributes"]
    (scope,) = resource["scopeSpans"]
    spans = scope["spans"]
    with RunStore(sim_run / "run.sqlite", readonly=True) as store:
        stored = {r["id"]: store.trace(r["id"]) for r in records}
    assert len(spans) == sum(len(t) + 1 for t in stored.values())  # a root span per elite
    by_trace: dict[str, list] = {}
    for span in spans:
        assert re.fullmatch(r"[0-9a-f]{32}", span["traceId"]) and re.fullmatch(r"[0-9a-f]{16}", span["spanId"])
        assert int(span["startTimeUnixNano"]) <= int(span["endTimeUnixNano"])
        assert all(set(a) == {"key", "value"} and len(a["value"]) == 1 for a in span["attributes"])
        by_trace.setdefault(span["traceId"], []).append(span)
    assert len(by_trace) == len(records)
    for record in records:
        attrs = lambda span: {a["key"]: next(iter(a["value"].values())) for a in span["attributes"]}  # noqa: E731
        trace = next(t for t in by_trace.values() if any(attrs(s).get("qd.evaluation.id") == str(record["id"])
                                                         for s in t))
        root = next(s for s in trace if "parentSpanId" not in s)
        ids = {s["spanId"] for s in trace}
        assert all(s["parentSpanId"] in ids for s in trace if s is not root)
        llm = [s for s in trace if attrs(s)["openinference.span.kind"] == "LLM"]
        want = [s for s in stored[record["id"]] if s["kind"] == "llm"]
        assert len(llm) == len(want) > 0
        assert sum(int(attrs(s)["llm.token_count.prompt"]) for s in llm) == sum(s["tokens_in"] for s in want)
        assert {attrs(s)["input.value"] for s in llm} == {s["input"] for s in want}
        assert {attrs(s)["llm.model_name"] for s in llm} == {"simulated"}
        assert json.loads(attrs(root)["input.value"]) == record["config"]
    _parse_with_opentelemetry_proto(out)


def _parse_with_opentelemetry_proto(path: Path) -> None:
    """Parse the file with opentelemetry-proto's protobuf JSON parser, where it is installed.

    OTLP/JSON writes trace and span ids in hex where protobuf's JSON mapping has base64 (the OTLP
    spec's one deviation), so the ids are converted first, as an OTLP receiver does.
    """
    code = r'''
import base64, json, sys
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
doc = json.load(open(sys.argv[1]))
for rs in doc["resourceSpans"]:
    for ss in rs["scopeSpans"]:
        for span in ss["spans"]:
            for key in ("traceId", "spanId", "parentSpanId"):
                if key in span:
                    span[key] = base64.b64encode(bytes.fromhex(span[key])).decode()
            for link in span.get("links", []):
                for key in ("traceId", "spanId"):
                    link[key] = base64.b64encode(bytes.fromhex(link[key])).decode()
message = json_format.ParseDict(doc, ExportTraceServiceRequest())
spans = [s for rs in message.resource_spans for ss in rs.scope_spans for s in ss.spans]
assert all(len(s.trace_id) == 16 and len(s.span_id) == 8 for s in spans)
print(len(spans))
'''
    # opentelemetry-proto installed beside Ray breaks Ray's dashboard (it then imports an `opentelemetry` without
    # its API), so it lives in a folder of its own: .ci/run installs it in .ci/otlp-proto.
    where = os.environ.get("QD_OTLP_PROTO", str(ROOT / ".ci" / "otlp-proto"))
    env = {**os.environ, "PYTHONPATH": where}
    check = subprocess.run([sys.executable, "-c", "import opentelemetry.proto"], env=env, capture_output=True)
    if check.returncode:
        pytest.skip(f"opentelemetry-proto is not installed in {where} (pip install --target {where} "
                    "opentelemetry-proto): the OTLP shape was checked, not parsed by its protobuf schema")
    done = subprocess.run([sys.executable, "-c", code, str(path)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) == len(json.loads(path.read_text())["resourceSpans"][0]["scopeSpans"][0]["spans"])


def test_elites_traces_of_a_store_without_them_are_re_run_and_say_so(sim_run, tmp_path, capsys):
    old = as_older_qd(sim_run, tmp_path / "v1")
    assert main(["elites", str(old), "--top", "1", "--traces", str(tmp_path / "t")]) == 0
    captured = capsys.readouterr()
    assert "1 of 1 selected elites have no stored trace (the store was written before qd kept traces), so " \
           "re-running them imports and runs the domain" in captured.err
    (record,) = json.loads(captured.out)
    written = json.loads((tmp_path / "t" / f"elite-{record['id']}.json").read_text())
    assert written["meta"]["source"] == "rerun" and written["meta"]["rerun_status"] == "ok"


def test_a_run_is_reported_in_progress_while_its_lock_is_held(sim_run, tmp_path):
    import shutil

    from qd.rundir import RunLock, is_running

    shutil.copytree(sim_run, tmp_path / "run")
    assert not is_running(tmp_path / "run") and not collect(tmp_path / "run")["meta"]["running"]
    with RunLock(tmp_path / "run"):
        assert is_running(tmp_path / "run") and collect(tmp_path / "run")["meta"]["running"]
    assert not is_running(tmp_path / "run")
