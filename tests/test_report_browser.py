"""qd report in a real browser: headless Chromium driven by selenium opens the file, clicks a cell, follows a
parent, opens the trace, changes the axes, filters the table, and makes no network request.

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them) and selenium (the ``test``
extra); elsewhere every test here skips, saying which is missing.
"""
from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from report_runs import SIM_MEASURES, arm_config, as_older_qd, empty_run, make_run, sim_config, with_damaged_traces

from qd.analysis.descriptors import critical_path_spans
from qd.analysis.selection import archive_over
from qd.archives.query import compile_where
from qd.report import CSP, report
from qd.rundir import read_run
from qd.runner import build_domain

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
MARKUP = '</script><img src=x onerror="window.pwned=1"><b>bold?</b>'


def _missing() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    for path in (CHROMIUM, DRIVER):
        if not Path(path).exists():
            return f"{path} not found (apt-get install -y chromium chromium-driver; .ci/run does)"
    return None


pytestmark = pytest.mark.skipif(_missing() is not None, reason=_missing() or "")


def chromium(user_data_dir: str):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1400,1000", f"--user-data-dir={user_data_dir}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(service=Service(DRIVER), options=options)


@pytest.fixture(scope="module")
def browser():
    profile = tempfile.mkdtemp(prefix="qd-chromium-")
    driver = chromium(profile)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The runs the tests open, with their reports: a simulated LLM pipeline (3 measures, one seed carrying
    markup in its instruction), an arm on a CVT archive, and the bad inputs."""
    base = tmp_path_factory.mktemp("browser")
    config = sim_config(name="browser-sim")
    seed = build_domain(config).default_config()
    seed["instruction"] = MARKUP
    config["run"]["seeds"] = ["default", seed]
    sim = make_run(config, base / "sim")
    out = {"sim": sim, "cvt": make_run(arm_config(150, archive="cvt"), base / "cvt"),
           "older": as_older_qd(sim, base / "older"), "empty": empty_run(sim_config(), base / "empty"),
           "damaged": with_damaged_traces(sim, base / "damaged", malformed=4, unreadable=7)}
    return {name: (path, report(path, base / f"{name}.html")) for name, path in out.items()}


def open_report(driver, page: Path, fragment: str = "") -> None:
    driver.get("about:blank")
    driver.get_log("browser")
    driver.get(page.as_uri() + (("#" + fragment) if fragment else ""))
    deadline = time.time() + 30
    while not driver.execute_script("return !!(window.qd && window.qd.interactive)"):
        if time.time() > deadline:
            raise AssertionError(f"the report never became interactive: {driver.get_log('browser')}")
        time.sleep(0.05)


def no_errors(driver) -> None:
    severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not severe, severe


def css(driver, selector: str):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def test_the_page_fetches_nothing_and_its_policy_forbids_fetching(browser, runs):
    _, page = runs["sim"]
    browser.get_log("performance")
    open_report(browser, page)
    requests = [json.loads(e["message"])["message"] for e in browser.get_log("performance")]
    urls = [m["params"]["request"]["url"] for m in requests if m["method"] == "Network.requestWillBeSent"]
    assert urls and set(urls) <= {"about:blank", page.as_uri()}, urls
    assert browser.execute_script(
        "return document.querySelector('meta[http-equiv=\"Content-Security-Policy\"]').content") == CSP
    no_errors(browser)
    # the policy is enforced: a request the page (or an injected script) tries is refused before it leaves
    outcome = browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        let violated = null;
        document.addEventListener('securitypolicyviolation', (e) => { violated = e.violatedDirective; });
        fetch('http://127.0.0.1:9/x').then(() => done('fetched'), () => setTimeout(() => done(violated), 50));
    """)
    assert outcome == "connect-src"
    assert any("violates the following Content Security Policy" in e["message"] for e in browser.get_log("browser"))


def test_click_a_cell_see_the_elite_follow_a_parent_and_open_its_trace(browser, runs):
    run_dir, page = runs["sim"]
    run = read_run(run_dir)
    rows = {r.id: r for r in run.store.evaluations()}
    open_report(browser, page, "view=map")
    shown = {int(c.get_attribute("data-eval")): c for c in css(browser, "#map-svg .cell[data-eval]")}
    elite_ids = {int(e["id"]) for e in run.archive}
    assert shown and set(shown) <= elite_ids
    child = next(i for i in sorted(shown) if rows[i].parent_ids)
    shown[child].click()
    assert css(browser, "#panel-title")[0].text.startswith(f"Evaluation #{child}")
    assert "elite" in css(browser, "#panel-title .badge")[0].text
    objective = next(float(e["objective"]) for e in run.archive if int(e["id"]) == child)
    assert f"accuracy {float(f'{objective:.5g}'):g}" in css(browser, "#score")[0].text
    parent = rows[child].parent_ids[0]
    css(browser, f'#parents a[data-eval="{parent}"]')[0].click()
    assert css(browser, "#panel-title")[0].text.startswith(f"Evaluation #{parent}")
    assert f"e={parent}" in browser.current_url  # the state is in the URL
    css(browser, "#open-trace")[0].click()
    assert css(browser, "#elite-title")[0].text.startswith(f"Evaluation #{parent}")
    stored = run.store.trace(parent)
    summary = rows[parent].trace_summary
    table_rows = css(browser, "#waterfall-table tbody tr")
    assert len(table_rows) == len(stored) == summary["spans"]
    highlighted = [int(r.get_attribute("data-span")) for r in css(browser, "#waterfall-table tbody tr.cp")]
    assert sorted(highlighted) == sorted(critical_path_spans(stored))
    assert len(css(browser, "#waterfall-table tbody tr.cp-llm")) == summary["critical_path"] \
        == rows[parent].measures["critical_path"]
    tokens = [r.find_elements("css selector", "td")[2].text for r in table_rows]
    assert sum(int(a) + int(b) for a, b in (t.split("/") for t in tokens if t)) == summary["tokens_total"]
    # a row opens its prompt and answer; the search box finds spans by their text
    llm = next(s for s in stored if s["kind"] == "llm")
    css(browser, f'#waterfall-table tr[data-span="{llm["id"]}"]')[0].click()
    assert css(browser, "#span-input")[0].text == llm["input"].strip()
    css(browser, "#trace-search")[0].send_keys("fuse")
    hits = css(browser, "#waterfall-table tr.hit")
    assert len(hits) == sum("fuse" in (s.get("name", "") + s.get("input", "") + s.get("output", "")).lower()
                            for s in stored)
    run.store.close()
    no_errors(browser)


def test_lineage_runs_from_a_seed_to_the_elite_with_each_step_and_its_change(browser, runs):
    run_dir, page = runs["sim"]
    run = read_run(run_dir)
    rows = {r.id: r for r in run.store.evaluations()}
    deepest = max((int(e["id"]) for e in run.archive), key=lambda i: _depth(i, rows))
    chain = [deepest]
    while rows[chain[-1]].parent_ids:
        chain.append(rows[chain[-1]].parent_ids[0])
    open_report(browser, page, f"view=elite&e={deepest}")
    items = css(browser, "#lineage li")
    assert [int(li.find_elements("css selector", "a")[0].get_attribute("data-eval")) for li in items] == chain[::-1]
    assert rows[chain[-1]].operator in ("seed", "random")
    for li, i in zip(items, chain[::-1]):
        assert rows[i].operator in li.text
    run.store.close()


def _depth(i, rows):
    n = 0
    while rows[i].parent_ids:
        i, n = rows[i].parent_ids[0], n + 1
    return n


def test_changing_the_axes_redraws_the_map_as_python_projects_it(browser, runs):
    from selenium.webdriver.support.ui import Select

    run_dir, page = runs["sim"]
    run = read_run(run_dir)
    open_report(browser, page, "view=map")
    assert len(css(browser, "#parallel-svg path")) == len(run.archive)  # three measures: parallel axes
    # two of the archive's measures: its cells, the best over the third
    Select(css(browser, "#axis-x")[0]).select_by_value("critical_path")
    Select(css(browser, "#axis-y")[0]).select_by_value("log2_calls")
    dims = run.archive.dims
    cells = {tuple(np.unravel_index(int(e["index"]), dims)) for e in run.archive}
    assert len(css(browser, "#map-svg .cell[data-eval]")) == len({(c[2], c[0]) for c in cells})
    assert "critical_path" in browser.current_url
    # a configuration parameter: each configuration at its mean, binned as `qd plot --measures` bins
    Select(css(browser, "#axis-x")[0]).select_by_value("config.chunk_size")
    rows = list(run.store.evaluations())
    with_param = SimpleNamespace(evaluations=lambda status=None: [
        SimpleNamespace(**{**vars(r), "measures": {**r.measures, "chunk_size": float(r.config["chunk_size"])}})
        for r in rows if status is None or r.status == status])
    expected = archive_over(with_param, ["chunk_size", "log2_calls"], like=run.archive)
    assert len(css(browser, "#map-svg .cell[data-eval]")) == len(expected)
    assert "each configuration at its mean" in css(browser, "#map-caption")[0].text
    run.store.close()
    no_errors(browser)


def test_the_replay_slider_rebuilds_the_map_insertion_by_insertion(browser, runs):
    run_dir, page = runs["sim"]
    run = read_run(run_dir)
    rows = sorted(run.store.evaluations(), key=lambda r: (r.finished_at - run.store.get(0).submitted_at, r.id))
    for k in (0, 10, 45):
        open_report(browser, page, f"view=map&x=log2_calls&y=max_prompt_tokens&t={k}")
        latest = {}
        for r in rows[:k]:
            if r.archive_status > 0:
                latest[run.archive.index_of_single([r.measures[n] for n in SIM_MEASURES])] = r.id
        projected = {np.unravel_index(c, run.archive.dims)[:2] for c in latest}
        assert len(css(browser, "#map-svg .cell[data-eval]")) == len(projected)
        assert f"{k} of {len(rows)} evaluations" in css(browser, "#replay-label")[0].text
    run.store.close()


def _row_env(row, archive, elites):
    cell = archive.index_of_single([row.measures[n] for n in archive.measure_names]) \
        if row.status == "ok" and math.isfinite(row.fitness) else -1
    env = {"id": row.id, "objective": row.fitness, "fitness": row.fitness, "status": row.status,
           "operator": row.operator, "index": cell, "elite": row.id in elites, "accuracy": row.fitness}
    env.update(row.measures)
    return env


@pytest.mark.parametrize("expression", [
    "log2_calls <= 3 and objective > 0", "operator == 'mutation' or elite", "not (critical_path >= 2)",
    "max_prompt_tokens / 100 - log2_calls * 2 > -4", "accuracy >= 0.5 and index % 2 == 0", "status != 'ok'"])
def test_the_table_filter_gives_the_rows_qd_elites_where_would(browser, runs, expression):
    run_dir, page = runs["sim"]
    run = read_run(run_dir)
    elites = {int(e["id"]) for e in run.archive}
    test = compile_where(expression)
    expected = [r.id for r in run.store.evaluations() if test(_row_env(r, run.archive, elites))]
    open_report(browser, page, "view=table")
    box = css(browser, "#filter")[0]
    box.clear()
    box.send_keys(expression + "\n")
    assert css(browser, "#filter-count")[0].text == f"{len(expected)} of 90 evaluations"
    shown = [int(r.get_attribute("data-eval")) for r in css(browser, "#evals tbody tr")]
    assert shown == expected[:100]
    run.store.close()


def test_a_bad_filter_says_why(browser, runs):
    _, page = runs["sim"]
    open_report(browser, page, "view=table&q=" + "llm_callz < 3".replace(" ", "%20"))
    error = css(browser, "#filter-error")[0].text
    assert "where: unknown name 'llm_callz'; available: accuracy, critical_path," in error
    assert css(browser, "#filter-count")[0].text == "0 of 90 evaluations"


NAMES = ["a", "b", "s", "flag"]
_leaf = st.one_of(st.sampled_from(NAMES + ["missing"]), st.integers(-5, 5).map(str),
                  st.floats(-4, 4, allow_nan=False).map(lambda v: f"{v:.3g}"),
                  st.sampled_from(["'x'", "'y'", '"x"', "True", "False", "1e3", ".5", "0x1f", "1_0", "None"]))


def _combine(children):
    binary = st.tuples(children, st.sampled_from(["+", "-", "*", "/", "%", "**", "<", "<=", ">", ">=", "==", "!=",
                                                  " and ", " or ", "//", " in "]), children)
    return st.one_of(binary.map(lambda t: f"{t[0]}{t[1]}{t[2]}"), children.map(lambda c: f"({c})"),
                     children.map(lambda c: f"not {c}"), children.map(lambda c: f"-{c}"),
                     children.map(lambda c: f"+{c}"),
                     st.tuples(children, children).map(lambda t: f"{t[0]} < {t[1]} < a"))


EXPRESSIONS = st.recursive(_leaf, _combine, max_leaves=8)
ENVS = st.fixed_dictionaries({"a": st.sampled_from([0.0, 1.0, -2.5, 3.0, math.nan, math.inf]),
                              "b": st.integers(-3, 3), "s": st.sampled_from(["x", "y", ""]), "flag": st.booleans()})


# Token soup: mostly not Python at all, so the page must refuse exactly what Python refuses.
TOKENS = ["a", "b", "s", "flag", "1", "2.5", "1.", ".5", "1e3", "1e", "0o7", "0b1", "0x", "07", "1_000", "1__0", "'x'",
          '"y"', "'a\\nb'", "r'\\n'", "b'x'", "f'x'", "'''t'''", "(", ")", "[", "]", ",", ".", "+", "-", "*", "/", "//",
          "%", "**", "<", "<=", ">", ">=", "==", "!=", "=", "and", "or", "not", "in", "is", "if", "else", "None",
          "True", "lambda", ":", "~", "&", "|", "<<", "@", ";", "\n", "\t", "# note\n", "\\\n", "é", "$"]
SOUP = st.lists(st.sampled_from(TOKENS), min_size=1, max_size=9).map(" ".join)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(expression=st.one_of(EXPRESSIONS, SOUP), env=ENVS)
@example(expression="\\\n a", env={"a": 0.0, "b": 0, "s": "x", "flag": False})  # the page read it, Python refused
def test_filter_expressions_mean_the_same_in_the_page_as_in_python(browser, runs, expression, env):
    if not browser.execute_script("return !!(window.qd && window.qd.interactive)"):
        open_report(browser, runs["sim"][1])
    try:
        expected = ("ok", compile_where(expression)(env))
    except ValueError:
        expected = ("error", None)
    encoded = json.dumps({k: (repr(v) if isinstance(v, float) and not math.isfinite(v) else v) for k, v in env.items()})
    got = browser.execute_script("""
        const env = JSON.parse(arguments[1], (k, v) => v === 'nan' ? NaN : v === 'inf' ? Infinity : v);
        return window.qd.where(arguments[0], env);""", expression, encoded)
    assert (("ok", got["value"]) if got["ok"] else ("error", None)) == expected, (expression, env, got)


def test_a_cvt_map_draws_voronoi_cells_and_a_click_opens_the_elite(browser, runs):
    run_dir, page = runs["cvt"]
    run = read_run(run_dir)
    open_report(browser, page, "view=map")
    assert len(css(browser, "#map-svg polygon.cell")) == run.archive.cells
    filled = css(browser, "#map-svg polygon.cell[data-eval]")
    assert {int(p.get_attribute("data-eval")) for p in filled} == {int(e["id"]) for e in run.archive}
    target = filled[len(filled) // 2]
    ident = int(target.get_attribute("data-eval"))
    browser.execute_script("arguments[0].dispatchEvent(new MouseEvent('click', {bubbles: true}))", target)
    assert css(browser, "#panel-title")[0].text.startswith(f"Evaluation #{ident}")
    open_report(browser, page, f"view=elite&e={ident}")  # deep link
    assert "recorded no spans" in css(browser, "#trace-box")[0].text  # the arm makes no LLM calls
    run.store.close()
    no_errors(browser)


def test_text_from_the_run_is_shown_as_text_never_run(browser, runs):
    run_dir, page = runs["sim"]
    run = read_run(run_dir)
    seed = next(r.id for r in run.store.evaluations() if r.config["instruction"] == MARKUP)
    open_report(browser, page, f"view=elite&e={seed}")
    assert json.dumps(MARKUP) in css(browser, "#config")[0].text
    assert browser.execute_script("return window.pwned === undefined && document.querySelectorAll('img, b').length")\
        == 0
    run.store.close()


@pytest.mark.parametrize("kind, view, selector, text", [
    ("older", "summary", "#problems", "no traces: this store was written by a qd that did not keep them"),
    ("older", "elite&e=3", "#trace-missing", "This run's store keeps no traces"),
    ("empty", "summary", "#problems", "the run has no evaluations yet"),
    ("empty", "map", "#map-caption", "0 of 90 cells filled"),
    ("damaged", "elite&e=4", "#trace-box", "1 malformed span(s) left out: trace[1].tokens_in must be an integer"),
    ("damaged", "summary", "#problems", "the trace of evaluation 7 in"),
])
def test_bad_inputs_give_a_report_that_says_what_is_missing(browser, runs, kind, view, selector, text):
    _, page = runs[kind]
    open_report(browser, page, f"view={view}")
    assert text in css(browser, selector)[0].text
    no_errors(browser)


def test_every_view_renders_without_errors(browser, runs):
    _, page = runs["sim"]
    for view in ("summary", "map", "elite&e=0", "progress", "table"):
        open_report(browser, page, f"view={view}")
        assert not browser.execute_script(f"return document.getElementById('view-{view.split('&')[0]}').hidden")
        no_errors(browser)
        if view == "progress":  # seed, random, mutation, uniform_crossover
            assert {r.find_elements("css selector", "td")[0].text for r in css(browser, "#operators tbody tr")} \
                >= {"seed", "random", "mutation", "uniform_crossover"}
