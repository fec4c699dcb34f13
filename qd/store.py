"""SQLite run store: every evaluation, its lineage, trace summary and trace, committed as it lands.

The store is the run's source of truth: ``qd run --resume`` rebuilds the archive by
replaying it, ``qd status`` and ``qd elites`` read it. WAL mode with
``synchronous=NORMAL`` keeps a commit to a write into the WAL (no fsync), so one
commit per evaluation is cheap, and a process killed with SIGKILL loses nothing
it committed.
"""
from __future__ import annotations

import json
import math
import sqlite3
import time
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["RunStore", "EvaluationRow"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS evaluations (
    id INTEGER PRIMARY KEY,
    hash TEXT NOT NULL,
    config TEXT NOT NULL,
    status TEXT NOT NULL,
    fitness REAL,
    measures TEXT NOT NULL,
    error TEXT NOT NULL DEFAULT '',
    feedback TEXT NOT NULL DEFAULT '',
    operator TEXT NOT NULL,
    parent_ids TEXT NOT NULL,
    trace_summary TEXT NOT NULL,
    metrics TEXT NOT NULL,
    archive_status INTEGER NOT NULL DEFAULT 0,
    submitted_at REAL NOT NULL,
    finished_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS evaluations_hash ON evaluations(hash);
CREATE TABLE IF NOT EXISTS counters (scope TEXT NOT NULL, name TEXT NOT NULL, field TEXT NOT NULL,
    value REAL NOT NULL, PRIMARY KEY (scope, name, field));
CREATE TABLE IF NOT EXISTS history (evaluations INTEGER PRIMARY KEY, num_elites INTEGER, coverage REAL,
    qd_score REAL, obj_max REAL, wall_s REAL);
-- qd.noise: the draw (fresh instances/seeds), the order the noise policy saw it (seq) and the
-- per-instance scores of an evaluation, by its id
CREATE TABLE IF NOT EXISTS samples (id INTEGER PRIMARY KEY, hash TEXT NOT NULL, draw INTEGER NOT NULL,
    seq INTEGER NOT NULL, scores TEXT);
-- each evaluation's spans (qd.result.Span, text clipped to [run] trace_text_chars) as zlib-compressed compact JSON;
-- written in the evaluation's transaction (docs/architecture.md, Run directory)
CREATE TABLE IF NOT EXISTS traces (id INTEGER PRIMARY KEY, spans BLOB NOT NULL);
-- qd validate: re-evaluations of elites on held-out draws, accumulated per (config hash, split, draw)
CREATE TABLE IF NOT EXISTS validations (hash TEXT NOT NULL, split TEXT NOT NULL, draw INTEGER NOT NULL,
    status TEXT NOT NULL, objective REAL, measures TEXT NOT NULL, scores TEXT, PRIMARY KEY (hash, split, draw));
"""


@dataclass
class EvaluationRow:
    """One stored evaluation (see docs/architecture.md, Run directory)."""

    id: int
    hash: str
    config: dict
    status: str
    fitness: float
    measures: dict[str, float]
    error: str
    feedback: str
    operator: str
    parent_ids: list[int]
    trace_summary: dict
    metrics: dict
    archive_status: int
    submitted_at: float
    finished_at: float


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=_jsonable)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    return repr(value)


class RunStore:
    """The run's SQLite file (``RUN_DIR/run.sqlite``).

    Parameters
    ----------
    path : str or Path
        Database file; created with its schema when missing.
    readonly : bool
        Open an existing file for reading only (``qd status``, ``qd plot``, ``qd elites``): no
        schema is created and every write fails.
    """

    def __init__(self, path: str | Path, *, readonly: bool = False):
        self.path = Path(path)
        self.readonly = readonly
        if readonly:
            if not self.path.exists():
                raise FileNotFoundError(f"no run store at {self.path}")
            # With no -wal file nothing is writing the run now, and immutable=1 reads the file without
            # creating SQLite's -wal/-shm side files; a live run is read through its WAL (mode=ro).
            live = Path(f"{self.path}-wal").exists()
            self._db = sqlite3.connect(f"{self.path.resolve().as_uri()}?{'mode=ro' if live else 'immutable=1'}",
                                       uri=True, isolation_level=None, check_same_thread=False)
            self.has_traces = self._has_table("traces")
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self.has_traces = True

    def _has_table(self, name: str) -> bool:
        return self._db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone() \
            is not None

    def close(self) -> None:
        """Close the connection (a no-op when already closed)."""
        self._db.close()

    def begin_snapshot(self) -> None:
        """Start a read transaction: every later read sees the store as it is now, until :meth:`close`.

        For a read-only store read while a run writes to it (WAL keeps the snapshot's pages).
        """
        self._db.execute("BEGIN")
        self._db.execute("SELECT COUNT(*) FROM meta").fetchone()  # a deferred transaction starts at its first read

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- meta ---------------------------------------------------------------------------------
    def set_meta(self, key: str, value: Any) -> None:
        """Store a JSON-able value under ``key``."""
        self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, _json(value)))

    def get_meta(self, key: str, default: Any = None) -> Any:
        """The value stored under ``key``, or ``default``."""
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    # -- evaluations --------------------------------------------------------------------------
    def add_evaluation(self, *, id: int, hash: str, config_json: str, status: str, fitness: float,
                       measures: dict[str, float], error: str, feedback: str, operator: str,
                       parent_ids: list[int], trace_summary: dict, metrics: dict, archive_status: int,
                       submitted_at: float, finished_at: float | None = None,
                       counters: dict[str, dict[str, dict[str, float]]] | None = None,
                       sample: tuple[int, int, list[float] | None] | None = None,
                       trace: list[Any] | None = None) -> None:
        """Insert and commit one finished evaluation.

        ``counters`` (scope -> name -> field -> value), ``sample`` (draw, noise-policy order,
        per-instance scores: :meth:`add_sample`) and ``trace`` (the evaluation's spans, read back by
        :meth:`trace`) are written in the same transaction (counters: only the fields given; the
        others keep their values), so they are exactly as durable as the evaluation rows: a killed
        run resumes from the state of its last committed evaluation.
        """
        row = (id, hash, config_json, status, fitness if math.isfinite(fitness) else None, _json(measures),
               error, feedback, operator, _json(parent_ids), _json(trace_summary), _json(metrics),
               archive_status, submitted_at, time.time() if finished_at is None else finished_at)
        if not counters and sample is None and trace is None:
            self._db.execute("INSERT INTO evaluations VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", row)
            return
        blob = None if trace is None else zlib.compress(_json(list(trace)).encode())
        self._db.execute("BEGIN")
        try:
            self._db.execute("INSERT INTO evaluations VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", row)
            if blob is not None:
                self._db.execute("INSERT INTO traces VALUES (?, ?)", (id, blob))
            if counters:
                self._db.executemany("INSERT OR REPLACE INTO counters VALUES (?,?,?,?)",
                                     [(scope, name, field, float(value)) for scope, table in counters.items()
                                      for name, fields in table.items() for field, value in fields.items()])
            if sample is not None:
                self.add_sample(id, hash, *sample)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def count(self) -> int:
        """Number of finished evaluations."""
        return self._db.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0]

    def max_id(self) -> int:
        """Largest evaluation id so far (-1 for an empty store)."""
        value = self._db.execute("SELECT MAX(id) FROM evaluations").fetchone()[0]
        return -1 if value is None else value

    def hashes(self) -> set[str]:
        """Dedup keys of every finished evaluation."""
        return {row[0] for row in self._db.execute("SELECT hash FROM evaluations")}

    def status_counts(self) -> dict[str, int]:
        """Count of evaluations per status."""
        return dict(self._db.execute("SELECT status, COUNT(*) FROM evaluations GROUP BY status").fetchall())

    def evaluations(self, status: str | None = None) -> Iterator[EvaluationRow]:
        """Every stored evaluation in id order (the order the archive saw them)."""
        if status is None:
            return self._rows("", ())
        return self._rows("WHERE status = ?", (status,))

    def objectives(self) -> Iterator[tuple[int, str, str, float]]:
        """``(id, hash, status, fitness)`` of every evaluation in id order (NaN for no fitness).

        A lean :meth:`evaluations`: the JSON columns (config, trace, ...) are not read.
        """
        for i, h, status, fitness in self._db.execute("SELECT id, hash, status, fitness FROM evaluations ORDER BY id"):
            yield i, h, status, math.nan if fitness is None else fitness

    def get(self, eval_id: int) -> EvaluationRow | None:
        """One evaluation by id, or None."""
        return next(self._rows("WHERE id = ?", (eval_id,)), None)

    def _rows(self, where: str, args: tuple) -> Iterator[EvaluationRow]:
        for row in self._db.execute(f"SELECT * FROM evaluations {where} ORDER BY id", args):
            yield EvaluationRow(
                id=row[0], hash=row[1], config=json.loads(row[2]), status=row[3],
                fitness=math.nan if row[4] is None else row[4], measures=json.loads(row[5]), error=row[6],
                feedback=row[7], operator=row[8], parent_ids=json.loads(row[9]),
                trace_summary=json.loads(row[10]), metrics=json.loads(row[11]), archive_status=row[12],
                submitted_at=row[13], finished_at=row[14])

    # -- traces ------------------------------------------------------------------------------------
    def trace(self, eval_id: int) -> list[dict[str, Any]] | None:
        """The spans stored with evaluation ``eval_id``; ``None`` when none were (a store of an older qd).

        Raises
        ------
        ValueError
            When the stored trace cannot be read (naming the evaluation and the store).
        """
        return self.traces([eval_id]).get(eval_id)

    def traces(self, ids: Iterable[int]) -> dict[int, list[dict[str, Any]]]:
        """Evaluation id -> stored spans, for those of ``ids`` that have a trace.

        Raises
        ------
        ValueError
            When a stored trace cannot be read (naming the evaluation and the store).
        """
        if not self.has_traces:
            return {}
        wanted = sorted({int(i) for i in ids})
        out: dict[int, list[dict[str, Any]]] = {}
        for start in range(0, len(wanted), 500):  # SQLite's bound-parameter limit
            chunk = wanted[start:start + 500]
            rows = self._db.execute(f"SELECT id, spans FROM traces WHERE id IN ({','.join('?' * len(chunk))})",
                                    chunk)
            for i, blob in rows:
                out[i] = self._spans(i, blob)
        return out

    def _spans(self, eval_id: int, blob: bytes) -> list[dict[str, Any]]:
        try:
            spans = json.loads(zlib.decompress(blob))
        except (zlib.error, ValueError, TypeError) as exc:
            raise ValueError(f"the trace of evaluation {eval_id} in {self.path} is unreadable "
                             f"({type(exc).__name__}: {exc})") from None
        if not isinstance(spans, list):
            raise ValueError(f"the trace of evaluation {eval_id} in {self.path} is not a list of spans")
        return spans

    def trace_count(self) -> int:
        """Evaluations with a stored trace (0 for a store of an older qd, which keeps none)."""
        return self._db.execute("SELECT COUNT(*) FROM traces").fetchone()[0] if self.has_traces else 0

    def operator_summary(self) -> dict[str, dict[str, int]]:
        """Per operator: evaluated offspring and archive gains (new cells + improvements)."""
        rows = self._db.execute(
            "SELECT operator, COUNT(*), SUM(archive_status > 0), SUM(status = 'ok') FROM evaluations GROUP BY operator")
        return {op: {"evaluated": n, "gains": int(g or 0), "ok": int(ok or 0)} for op, n, g, ok in rows}

    # -- samples and validations (qd.noise, qd validate) --------------------------------------
    def add_sample(self, id: int, hash: str, draw: int, seq: int, scores: list[float] | None) -> None:
        """Record the draw, the noise policy's order ``seq`` and the per-instance scores of evaluation ``id``."""
        self._db.execute("INSERT OR REPLACE INTO samples VALUES (?,?,?,?,?)",
                         (id, hash, int(draw), int(seq), None if scores is None else _json(scores)))

    def samples(self) -> dict[int, tuple[str, int, int, list[float] | None]]:
        """Evaluation id -> (config hash, draw, seq, per-instance scores or None)."""
        return {i: (h, d, q, None if s is None else json.loads(s))
                for i, h, d, q, s in self._db.execute("SELECT id, hash, draw, seq, scores FROM samples")}

    def add_validation(self, hash: str, split: str, draw: int, status: str, objective: float,
                       measures: dict[str, float], scores: list[float] | None) -> None:
        """Record one held-out re-evaluation of the configuration ``hash``."""
        self._db.execute("INSERT OR REPLACE INTO validations VALUES (?,?,?,?,?,?,?)",
                         (hash, split, int(draw), status, objective if math.isfinite(objective) else None,
                          _json(measures), None if scores is None else _json(scores)))

    def validations(self, split: str | None = None) -> list[dict[str, Any]]:
        """Stored held-out re-evaluations (``hash, split, draw, status, objective, measures, scores``)."""
        where, args = ("WHERE split = ?", (split,)) if split is not None else ("", ())
        cols = ("hash", "split", "draw", "status", "objective", "measures", "scores")
        out = []
        for row in self._db.execute(f"SELECT * FROM validations {where} ORDER BY hash, split, draw", args):
            item = dict(zip(cols, row))
            item["objective"] = math.nan if item["objective"] is None else item["objective"]
            item["measures"] = json.loads(item["measures"])
            item["scores"] = None if item["scores"] is None else json.loads(item["scores"])
            out.append(item)
        return out

    # -- counters (operator and LLM accounting that is not one row per evaluation) ------------
    def set_counters(self, scope: str, counters: dict[str, dict[str, float]]) -> None:
        """Replace the counters of ``scope`` (e.g. "operators", "llm") with ``{name: {field: value}}``."""
        self._db.execute("BEGIN")
        try:
            self._replace_counters(scope, counters)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _replace_counters(self, scope: str, counters: dict[str, dict[str, float]]) -> None:
        rows = [(scope, name, field, float(value)) for name, fields in counters.items()
                for field, value in fields.items()]
        self._db.execute("DELETE FROM counters WHERE scope = ?", (scope,))
        self._db.executemany("INSERT INTO counters VALUES (?,?,?,?)", rows)

    def counters(self, scope: str) -> dict[str, dict[str, float]]:
        """The counters of ``scope`` as ``{name: {field: value}}``."""
        out: dict[str, dict[str, float]] = {}
        for name, field, value in self._db.execute(
                "SELECT name, field, value FROM counters WHERE scope = ?", (scope,)):
            out.setdefault(name, {})[field] = value
        return out

    # -- history (QD curve) -------------------------------------------------------------------
    def add_history(self, evaluations: int, num_elites: int, coverage: float, qd_score: float,
                    obj_max: float, wall_s: float) -> None:
        """Record archive stats after ``evaluations`` finished evaluations."""
        self._db.execute("INSERT OR REPLACE INTO history VALUES (?,?,?,?,?,?)",
                         (evaluations, num_elites, coverage, qd_score,
                          obj_max if math.isfinite(obj_max) else None, wall_s))

    def history(self) -> list[dict[str, float]]:
        """Archive stats over the run, in evaluation order."""
        cols = ("evaluations", "num_elites", "coverage", "qd_score", "obj_max", "wall_s")
        return [dict(zip(cols, row)) for row in self._db.execute("SELECT * FROM history ORDER BY evaluations")]
