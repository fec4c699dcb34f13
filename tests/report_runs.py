"""Run directories the report tests read: real runs (qd.runner.run_search, serial), and the bad inputs a
report must survive, each made the way it arises (an older qd's layout, a run killed before its first
evaluation, a damaged trace)."""
from __future__ import annotations

import json
import shutil
import sqlite3
import zlib
from pathlib import Path

from store_versions import as_version_1

from qd.config import resolve_config
from qd.rundir import ARCHIVE_META, archive_spec
from qd.runner import build_archive, build_domain, run_search
from qd.store import RunStore

SIM_MEASURES = ["log2_calls", "max_prompt_tokens", "critical_path"]


def sim_config(name: str = "sim", evaluations: int = 90, **run: object) -> dict:
    """The retrieval pipeline on the simulated backend: every call a traced span, with prompt and answer text."""
    return resolve_config({
        "run": {"name": name, "evaluations": evaluations, "init_random": 15, "progress": False, "plot": False,
                "seed": 3, **run},
        "domain": {"name": "retrieval-sim", "options": {"n_pairs": 16, "n_instances": 2}},
        "archive": {"measures": SIM_MEASURES, "bins": [6, 5, 3], "ranges": [[0, 7], [0, 600], [0, 3]],
                    "noise": "none"},
        "operators": {"mutation": 1.0, "uniform_crossover": 0.5},
        "evaluator": {"backend": "serial"},
    })


def arm_config(evaluations: int = 300, archive: str = "grid") -> dict:
    """The planar arm (no LLM calls: empty traces) on a grid or a 2-D CVT archive."""
    layout = {"type": "cvt", "cells": 40} if archive == "cvt" else {"type": "grid", "bins": [12, 12]}
    return resolve_config({
        "run": {"name": f"arm-{archive}", "evaluations": evaluations, "init_random": 30, "progress": False,
                "plot": False},
        "domain": {"name": "arm", "options": {"joints": 6}},
        "archive": {"measures": ["x", "y"], "ranges": [[-6, 6], [-6, 6]], "noise": "none", **layout},
        "operators": {"iso_line_dd": 1.0},
        "evaluator": {"backend": "serial"},
    })


def make_run(config: dict, run_dir: Path) -> Path:
    run = run_search(config, run_dir, progress=False)
    run.store.close()
    return run_dir


def as_older_qd(src: Path, dst: Path) -> Path:
    """A copy of a run as a qd that kept no traces wrote it (run store version 1, no traces table)."""
    as_version_1(src, dst)
    db = sqlite3.connect(dst / "run.sqlite")
    with db:
        config = json.loads(db.execute("SELECT value FROM meta WHERE key = 'config'").fetchone()[0])
        del config["run"]["trace_text_chars"]  # a key that qd did not have
        db.execute("UPDATE meta SET value = ? WHERE key = 'config'", (json.dumps(config),))
    db.close()
    return dst


def without_traces(src: Path, dst: Path) -> Path:
    """A copy whose evaluations kept no trace rows (a version 1 store of a qd before traces, resumed)."""
    shutil.copytree(src, dst)
    with RunStore(dst / "run.sqlite") as store:
        store._db.execute("DELETE FROM traces")
    return dst


def empty_run(config: dict, run_dir: Path) -> Path:
    """A run killed after it started and before its first evaluation finished: config and layout, no rows."""
    run_dir.mkdir(parents=True)
    domain = build_domain(config)
    with RunStore(run_dir / "run.sqlite") as store:
        store.set_meta("config", config)
        store.set_meta("budget", config["run"]["evaluations"])
        store.set_meta(ARCHIVE_META, archive_spec(build_archive(config, domain)))
    return run_dir


def with_damaged_traces(src: Path, dst: Path, malformed: int, unreadable: int) -> Path:
    """A copy where evaluation ``malformed``'s second span has a string token count and ``unreadable``'s blob is cut."""
    shutil.copytree(src, dst)
    with RunStore(dst / "run.sqlite") as store:
        spans = store.trace(malformed)
        spans[1]["tokens_in"] = "many"
        store._db.execute("UPDATE traces SET spans = ? WHERE id = ?",
                          (zlib.compress(json.dumps(spans).encode()), malformed))
        blob = store._db.execute("SELECT spans FROM traces WHERE id = ?", (unreadable,)).fetchone()[0]
        store._db.execute("UPDATE traces SET spans = ? WHERE id = ?", (blob[: len(blob) // 2], unreadable))
    return dst
