"""Run stores in the layouts older qd versions wrote, made from a run this qd wrote.

:func:`as_version_1` rewrites a run directory's store in the version 1 layout (before
``meta.schema_version``; tests/data holds stores an older qd wrote itself): every evaluation with its
hash text and plain JSON columns, samples with their hash, and none of what version 2 added (the
archive as it stands, the running totals, the evaluation count). ``traces=True`` keeps the traces
table, as the last qd that wrote version 1 did.
"""
from __future__ import annotations

import json
import shutil
import sqlite3
import zlib
from pathlib import Path

from qd.analysis.descriptors import summarize
from qd.store import _COMMON, V1_SCHEMA, RunStore, _statements

_V2_ONLY_META = ("schema_version", "archive_state", "totals", "evaluations")


def as_version_1(src: Path, dst: Path, traces: bool = False) -> Path:
    """A copy of the run directory ``src`` at ``dst`` whose store has the version 1 layout."""
    shutil.copytree(src, dst)
    path = dst / "run.sqlite"
    for side in ("-wal", "-shm"):
        Path(f"{path}{side}").unlink(missing_ok=True)
    with RunStore(src / "run.sqlite", readonly=True) as store:
        rows = list(store.evaluations())
        samples = store.samples()
        spans = store.traces(r.id for r in rows) if traces else {}
    old = sqlite3.connect(src / "run.sqlite")
    meta = [(k, v) for k, v in old.execute("SELECT key, value FROM meta") if k not in _V2_ONLY_META]
    copied = {t: old.execute(f"SELECT * FROM {t}").fetchall() for t in ("counters", "history", "validations")}
    texts = {i: zlib.decompress(c).decode() for i, c in old.execute("SELECT id, config FROM evaluations")}
    old.close()
    path.unlink()
    empty = summarize([])
    db = sqlite3.connect(path)
    with db:
        for statement in _statements(_COMMON) + _statements(V1_SCHEMA):
            db.execute(statement)
        db.executemany("INSERT INTO meta VALUES (?, ?)", meta)
        for table, values in copied.items():
            if values:
                db.executemany(f"INSERT INTO {table} VALUES ({','.join('?' * len(values[0]))})", values)
        db.executemany("INSERT INTO evaluations VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", [
            (r.id, r.hash, texts[r.id], r.status,
             None if r.fitness != r.fitness else r.fitness, json.dumps(r.measures), r.error, r.feedback, r.operator,
             json.dumps(r.parent_ids), json.dumps({**empty, **r.trace_summary}), json.dumps(r.metrics),
             r.archive_status, r.submitted_at, r.finished_at) for r in rows])
        hashes = {r.id: r.hash for r in rows}
        db.executemany("INSERT INTO samples VALUES (?,?,?,?,?)",
                       [(i, hashes[i], d, q, None if s is None else json.dumps(s)) for i, (d, q, s) in samples.items()])
        if traces:
            db.execute("CREATE TABLE traces (id INTEGER PRIMARY KEY, spans BLOB NOT NULL)")
            db.executemany("INSERT INTO traces VALUES (?, ?)", [
                (i, zlib.compress(json.dumps(trace, separators=(",", ":")).encode())) for i, trace in spans.items()])
    db.close()
    return dst
