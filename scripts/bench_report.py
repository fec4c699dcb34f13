"""`qd report` at scale: store bytes per evaluation, report size and build time, Chromium's load time.

The load time is what headless Chromium takes from loading the file to an interactive map.

Runs the 20-joint arm (Iso+LineDD on a 100x100 grid, as scripts/bench_arm.py) for ``--arm-evals`` and
``--big-evals`` evaluations on the serial evaluator, then reports on them and on any run directories given with
``--run`` (the demo's retrieval run: ``qd run --out runs/demo``). For each: evaluations, store bytes per
evaluation (the whole file, and the traces table alone), report build time, file size, and Chromium's
load-to-interactive time (the page's own ``performance.now()`` when its map is drawn, median of ``--repeats``
fresh loads). ``--screenshots DIR`` also writes a picture of each view of the first ``--run``.

Needs Debian's chromium and chromium-driver and selenium (the test extra).

    python scripts/bench_report.py [--arm-evals 10000] [--big-evals 100000] [--run runs/demo] [--screenshots docs/img]
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from qd.config import resolve_config
from qd.report import collect, write_report
from qd.runner import run_search
from qd.store import RunStore

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def arm_config(evals: int) -> dict:
    return resolve_config({
        "run": {"name": f"arm-{evals}", "evaluations": evals, "seeds": "default", "init_random": 0,
                "progress": False, "plot": False},
        "domain": {"name": "arm", "options": {"joints": 20}},
        "archive": {"type": "grid", "measures": ["x", "y"], "bins": [100, 100], "ranges": [[-20, 20], [-20, 20]],
                    "qd_score_offset": -10.0, "noise": "none"},
        "operators": {"iso_line_dd": {"weight": 1.0, "iso_sigma": 0.05, "line_sigma": 0.2}},
        "evaluator": {"backend": "serial"},
    })


def store_bytes(run_dir: Path) -> dict:
    path = run_dir / "run.sqlite"
    with RunStore(path) as store:  # a checkpoint folds the WAL into the file, so its size is the data's
        store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        n = store.count()
        traces = store._db.execute("SELECT COALESCE(SUM(LENGTH(spans)), 0) FROM traces").fetchone()[0]
        spans = store._db.execute("SELECT COUNT(*) FROM traces").fetchone()[0]
    return {"evaluations": n, "file_per_eval": path.stat().st_size / max(1, n), "traces_per_eval": traces / max(1, n),
            "traced": spans}


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1400,1000", f"--user-data-dir={tempfile.mkdtemp(prefix='qd-bench-')}"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(DRIVER), options=options)


def load(driver, page: Path, fragment: str = "") -> dict:
    driver.get("about:blank")
    driver.get(page.as_uri() + (("#" + fragment) if fragment else ""))
    deadline = time.time() + 120
    while not driver.execute_script("return !!(window.qd && window.qd.interactive)"):
        if time.time() > deadline:
            raise RuntimeError(f"{page} never became interactive")
        time.sleep(0.02)
    return driver.execute_script("return window.qd.timings")


def measure(name: str, run_dir: Path, out: Path, driver, repeats: int) -> None:
    sizes = store_bytes(run_dir)
    start = time.perf_counter()
    data = collect(run_dir)
    built = time.perf_counter() - start
    page = write_report(data, out / f"{name}.html")
    timings = [load(driver, page) for _ in range(repeats)]
    interactive = statistics.median(t["interactive"] for t in timings)
    decoded = statistics.median(t["decoded"] for t in timings)
    print(f"{name}: {sizes['evaluations']} evaluations ({sizes['traced']} traced); store {sizes['file_per_eval']:.0f} "
          f"B/evaluation, traces {sizes['traces_per_eval']:.0f} B/evaluation; report built in {built:.1f} s, "
          f"{page.stat().st_size / 1e6:.2f} MB; Chromium: data unpacked at {decoded:.0f} ms, map interactive at "
          f"{interactive:.0f} ms after navigation (median of {repeats}); table rows {len(data['evals']['id'])}, "
          f"traces embedded {len(data['traces'])}", flush=True)
    for problem in data["problems"]:
        print(f"  note: {problem}")


def showcase(data: dict) -> int | None:
    """The elite the pictures show: the longest lineage among the better half, then the best score."""
    evals = data["evals"]
    parents = dict(zip(evals["id"], evals["parents"]))

    def depth(i: int) -> int:
        n = 0
        while parents.get(i):
            i, n = parents[i][0], n + 1
        return n

    scores = sorted(e["objective"] or 0 for e in data["elites"])
    good = [e for e in data["elites"] if (e["objective"] or 0) >= scores[len(scores) // 2]] if scores else []
    pick = max(good, key=lambda e: (depth(e["id"]), e["objective"] or 0, -e["id"]), default=None)
    return pick and pick["id"]


def screenshots(driver, page: Path, directory: Path, elite: int | None) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    views = {"summary": "view=summary", "map": "view=map" + (f"&e={elite}" if elite is not None else ""),
             "progress": "view=progress", "table": "view=table"}
    if elite is not None:
        views["evaluation"] = f"view=elite&e={elite}"
        views["trace"] = f"view=elite&e={elite}"
        views["span"] = f"view=elite&e={elite}"
    for name, fragment in views.items():
        driver.set_window_size(1400, 1000 if name != "evaluation" else 1900)
        load(driver, page, fragment)
        if name == "trace":
            driver.execute_script("document.getElementById('trace').scrollIntoView(); window.scrollBy(0, -60)")
        if name == "span":  # the last LLM call on the critical path, its prompt and answer
            driver.execute_script("const rows = document.querySelectorAll('#waterfall-table tr.cp-llm');"
                                  "rows[rows.length - 1].click();"
                                  "document.getElementById('span-detail').scrollIntoView(); window.scrollBy(0, -60)")
        time.sleep(0.3)
        driver.save_screenshot(str(directory / f"report_{name}.png"))
        print(f"wrote {directory / f'report_{name}.png'}")
    driver.set_window_size(1400, 1000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arm-evals", type=int, default=10_000)
    parser.add_argument("--big-evals", type=int, default=100_000, help="0: skip")
    parser.add_argument("--run", action="append", default=[], help="a run directory to report on too")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", default=None, help="where runs and reports go (default: a temporary folder)")
    parser.add_argument("--screenshots", default=None, help="write a picture of each view of the first --run here")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="qd-bench-report-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"load: {os.getloadavg()[0]:.1f} (1 min); work in {work}", flush=True)
    runs = []
    for evals in [args.arm_evals] + ([args.big_evals] if args.big_evals else []):
        run_dir = work / f"arm-{evals}"
        if not (run_dir / "run.sqlite").exists():
            start = time.perf_counter()
            run_search(arm_config(evals), run_dir, progress=False).store.close()
            print(f"arm-{evals}: ran in {time.perf_counter() - start:.0f} s", flush=True)
        runs.append((f"arm-{evals}", run_dir))
    runs += [(Path(r).name, Path(r)) for r in args.run]
    driver = browser()
    try:
        for name, run_dir in runs:
            measure(name, run_dir, work, driver, args.repeats)
        if args.screenshots and args.run:
            first = Path(args.run[0])
            screenshots(driver, work / f"{first.name}.html", Path(args.screenshots), showcase(collect(first)))
    finally:
        driver.quit()
    print(f"load: {os.getloadavg()[0]:.1f} (1 min)")


if __name__ == "__main__":
    main()
