"""SQLite run store: every evaluation, its lineage, trace summary and trace, and the archive as it stands.

The store is the run's source of truth. Writers commit evaluations in groups (one transaction
per group, :meth:`RunStore.transaction`), and with each group what readers need so that reading
a run costs the archive, not the history: the archive's current elites (table ``elites``) and its
statistics state, the running totals ``qd status`` prints, the counters. ``qd status``,
``qd elites`` and ``qd plot`` read those (one read transaction, so their figures agree with each
other even while a run writes). WAL mode with ``synchronous=NORMAL`` keeps a commit to a write
into the WAL (no fsync), and a process killed with SIGKILL loses nothing it committed.

Layout (``meta.schema_version``; a store without it is version 1, see docs/architecture.md, Run
directory): version 2 stores each configuration zlib-compressed, its 64-bit dedup key instead of
its sha256 text (the hash is recomputed from the configuration when a row is read), only the
non-zero fields of the trace summary, and metrics and feedback compressed when long. Version 1 stores are
read as they are; :meth:`RunStore.migrate` converts one in place, in one transaction.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import sqlite3
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii
from pathlib import Path
from typing import Any

import numpy as np

from qd.keyset import key_of, key_of_bytes
from qd.space.packing import Layout

__all__ = ["RunStore", "EvaluationRow", "EvaluationRecord", "SCHEMA_VERSION"]

SCHEMA_VERSION = 2

_COMMON = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS counters (scope TEXT NOT NULL, name TEXT NOT NULL, field TEXT NOT NULL,
    value REAL NOT NULL, PRIMARY KEY (scope, name, field));
CREATE TABLE IF NOT EXISTS history (evaluations INTEGER PRIMARY KEY, num_elites INTEGER, coverage REAL,
    qd_score REAL, obj_max REAL, wall_s REAL);
-- qd validate: re-evaluations of elites on held-out draws, accumulated per (config hash, split, draw)
CREATE TABLE IF NOT EXISTS validations (hash TEXT NOT NULL, split TEXT NOT NULL, draw INTEGER NOT NULL,
    status TEXT NOT NULL, objective REAL, measures TEXT NOT NULL, scores TEXT, PRIMARY KEY (hash, split, draw));
"""

_V2 = """
CREATE TABLE IF NOT EXISTS evaluations (
    id INTEGER PRIMARY KEY,
    key INTEGER NOT NULL,          -- dedup key: the first 8 bytes of the configuration's sha256, signed
    config BLOB NOT NULL,          -- zlib of the canonical JSON
    status TEXT NOT NULL,
    fitness REAL,
    measures TEXT NOT NULL,
    error TEXT NOT NULL DEFAULT '',
    feedback TEXT NOT NULL DEFAULT '',  -- or zlib of it when long
    operator TEXT NOT NULL,
    parent_ids TEXT NOT NULL,
    trace_summary TEXT NOT NULL,   -- JSON of the summary's non-zero fields
    metrics BLOB NOT NULL,         -- JSON text, or zlib of it when long
    archive_status INTEGER NOT NULL DEFAULT 0,
    submitted_at REAL NOT NULL,
    finished_at REAL NOT NULL
);
-- re-evaluations (qd.noise) by configuration: an elite's evaluations are its own row and these
CREATE INDEX IF NOT EXISTS evaluations_resample ON evaluations(key) WHERE operator = 'resample';
-- qd.noise: the draw (fresh instances/seeds), the order the noise policy saw it (seq) and the
-- per-instance scores of an evaluation, by its id
CREATE TABLE IF NOT EXISTS samples (id INTEGER PRIMARY KEY, draw INTEGER NOT NULL, seq INTEGER NOT NULL, scores TEXT);
-- the archive as it stands: one row per occupied cell (its configuration and feedback are its
-- evaluation's), rank = when the cell was occupied (the archive lists elites by it)
CREATE TABLE IF NOT EXISTS elites (cell INTEGER PRIMARY KEY, id INTEGER NOT NULL, objective REAL NOT NULL,
    threshold REAL NOT NULL, measures BLOB NOT NULL, rank INTEGER NOT NULL);
-- each evaluation's spans (qd.result.Span, text clipped to [run] trace_text_chars) as zlib-compressed compact JSON,
-- written in the evaluation's transaction; none for an evaluation that recorded no spans (its summary says so)
CREATE TABLE IF NOT EXISTS traces (id INTEGER PRIMARY KEY, spans BLOB NOT NULL);
"""

# Version 1 (written before schema_version existed): kept to create such stores in tests and to read them.
# The last qd to write version 1 added the traces table of version 2 to it (RunStore.has_traces).
V1_SCHEMA = """
CREATE TABLE IF NOT EXISTS evaluations (
    id INTEGER PRIMARY KEY, hash TEXT NOT NULL, config TEXT NOT NULL, status TEXT NOT NULL, fitness REAL,
    measures TEXT NOT NULL, error TEXT NOT NULL DEFAULT '', feedback TEXT NOT NULL DEFAULT '', operator TEXT NOT NULL,
    parent_ids TEXT NOT NULL, trace_summary TEXT NOT NULL, metrics TEXT NOT NULL,
    archive_status INTEGER NOT NULL DEFAULT 0, submitted_at REAL NOT NULL, finished_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS evaluations_hash ON evaluations(hash);
CREATE TABLE IF NOT EXISTS samples (id INTEGER PRIMARY KEY, hash TEXT NOT NULL, draw INTEGER NOT NULL,
    seq INTEGER NOT NULL, scores TEXT);
"""

_COMPRESS_ABOVE = 120  # metrics JSON and feedback longer than this are stored compressed
_RESAMPLE = "resample"  # qd.noise.RESAMPLE (the store is below qd.noise)
_ELITE_STATE = "archive_state"
_COUNT = "evaluations"
_EVAL_COLUMNS = ("id", "hash", "config", "status", "fitness", "measures", "error", "feedback", "operator", "parent_ids",
                 "trace_summary", "metrics", "archive_status", "submitted_at", "finished_at")


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

    @property
    def objective(self) -> float:
        """The evaluation's objective (the row's field and the store's column keep the name ``fitness``)."""
        return self.fitness


@dataclass
class EvaluationRecord:
    """One evaluation to write (:meth:`RunStore.add_evaluations`).

    ``hash`` is the sha256 hex digest of ``config_json`` (``Space.hash``; None computes it).
    ``config_packed`` is the configuration as bytes of a flat numeric space (:class:`qd.space.Layout`,
    whose fields the store keeps in meta ``config_layout``: :meth:`RunStore.set_config_layout`), stored
    in place of ``config_json`` (then None); ``key`` its dedup key (None: made from the bytes).
    ``sample`` is ``(draw, noise-policy order, per-instance scores)`` (:meth:`RunStore.add_sample`),
    ``trace`` the evaluation's spans, for the traces table (docs/architecture.md, Run directory).
    """

    id: int
    config_json: str | None
    status: str
    fitness: float
    measures: dict[str, float]
    operator: str
    parent_ids: list[int]
    hash: str | None = None
    config_packed: bytes | None = None
    key: int | None = None
    error: str = ""
    feedback: str = ""
    trace_summary: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    archive_status: int = 0
    submitted_at: float = 0.0
    finished_at: float | None = None
    sample: tuple[int, int, list[float] | None] | None = None
    trace: list | None = None


_ENCODER = json.JSONEncoder(separators=(",", ":"), default=lambda v: _jsonable(v))


def _json(value: Any) -> str:
    """Compact JSON of ``value`` (``_ENCODER``'s text); a flat dict of numbers (measures, metrics) made directly."""
    if type(value) is not dict:
        return _ENCODER.encode(value)
    template = _TEMPLATES.get(tuple(value))
    if template is not None:  # every value a finite float: the common case, formatted in one step
        values = tuple(value.values())
        try:
            if all(map(math.isfinite, values)):
                return template % tuple(map(float.__repr__, values))
        except TypeError:  # a value that is not a float
            pass
    parts = []
    for k, v in value.items():
        t = type(v)
        if type(k) is not str or (t is not float and t is not int):
            return _ENCODER.encode(value)
        parts.append(encode_basestring_ascii(k) + ":" + (int.__repr__(v) if t is int else _float_json(v)))
    if len(_TEMPLATES) < 1024:
        _TEMPLATES[tuple(value)] = "{" + ",".join(encode_basestring_ascii(k).replace("%", "%%") + ":%s"
                                                   for k in value) + "}"
    return "{" + ",".join(parts) + "}"


_TEMPLATES: dict[tuple, str] = {}  # the keys of a flat dict of numbers -> its JSON with a %s for each value


def _float_json(value: float) -> str:
    """A float as ``json`` writes it (``NaN``, ``Infinity`` and ``-Infinity`` included)."""
    if value != value:
        return "NaN"
    if value in (math.inf, -math.inf):
        return "Infinity" if value > 0 else "-Infinity"
    return float.__repr__(value)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    return repr(value)


def _int_list(values: list[int]) -> str:
    """JSON of a list of ints (parent ids), without the encoder's overhead."""
    for v in values:
        if type(v) is not int:
            return _json(values)
    return "[" + ",".join(map(int.__repr__, values)) + "]"


def _text(value: str | bytes) -> str:
    """A stored JSON column as text (version 2 compresses some into BLOBs)."""
    return zlib.decompress(value).decode() if isinstance(value, bytes) else value


def _packed(text: str) -> str | bytes:
    return zlib.compress(text.encode(), 1) if len(text) > _COMPRESS_ABOVE else text


_PACKED = b"\x00"  # leads a configuration stored as bytes (a zlib stream never starts with 0)
_LAYOUT = "config_layout"


def _digest(config_text: str) -> str:
    return hashlib.sha256(config_text.encode("utf-8", "surrogatepass")).hexdigest()


class RunStore:
    """The run's SQLite file (``RUN_DIR/run.sqlite``).

    Parameters
    ----------
    path : str or Path
        Database file; created with its schema (version 2) when missing.
    readonly : bool
        Open an existing file for reading only (``qd status``, ``qd plot``, ``qd elites``): no
        schema is created, every write fails, and every read sees the store as it was at the first
        one (one read transaction, held until :meth:`close`), so figures read one after another
        agree even while a run writes.

    Attributes
    ----------
    version : int
        The store's layout (``meta.schema_version``; 1 for a store without it).
    has_traces : bool
        Whether the store keeps evaluations' spans (table ``traces``): every version 2 store,
        and version 1 stores of the last qd that wrote that layout.
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
            self._db.execute("BEGIN")  # one snapshot for every read of this connection
            self.version = self._read_version()
            self.has_traces = self._has_table("traces")
            self._layout: Layout | None = None
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        fresh = self._db.execute("SELECT 1 FROM sqlite_master WHERE name = 'evaluations'").fetchone() is None
        self._db.executescript(_COMMON)
        if fresh:
            with self.transaction():
                for statement in _statements(_V2):
                    self._db.execute(statement)
                self.set_meta("schema_version", SCHEMA_VERSION)
        self.version = self._read_version()
        self.has_traces = self._has_table("traces")
        self._layout = None

    def _has_table(self, name: str) -> bool:
        return self._db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone() \
            is not None

    def _read_version(self) -> int:
        if self._db.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone() is None:
            self._db.close()
            raise sqlite3.OperationalError(f"{self.path} holds no run store (yet: a run may be creating it)")
        row = self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return 1 if row is None else int(json.loads(row[0]))

    def close(self) -> None:
        """Close the connection (a no-op when already closed)."""
        self._db.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[RunStore]:
        """Group the writes of the ``with`` block into one transaction (a group commit).

        Inside an enclosing transaction the block joins it. An exception rolls the group back.
        """
        if self._db.in_transaction:
            yield self
            return
        self._db.execute("BEGIN")
        try:
            yield self
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _require_v2(self) -> None:
        if self.version < 2:
            raise RuntimeError(f"{self.path} is a version {self.version} run store: `qd run --resume` converts it "
                               "(RunStore.migrate) before anything is written")

    # -- meta ---------------------------------------------------------------------------------
    def set_meta(self, key: str, value: Any) -> None:
        """Store a JSON-able value under ``key``."""
        self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, _json(value)))

    def get_meta(self, key: str, default: Any = None) -> Any:
        """The value stored under ``key``, or ``default``."""
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    # -- evaluations --------------------------------------------------------------------------
    def add_evaluation(self, *, id: int, config_json: str, status: str, fitness: float,
                       measures: dict[str, float], error: str, feedback: str, operator: str,
                       parent_ids: list[int], trace_summary: dict, metrics: dict, archive_status: int,
                       submitted_at: float, finished_at: float | None = None, hash: str | None = None,
                       counters: dict[str, dict[str, dict[str, float]]] | None = None,
                       sample: tuple[int, int, list[float] | None] | None = None, trace: list | None = None) -> None:
        """Insert and commit one finished evaluation (:meth:`add_evaluations` of one).

        ``counters`` (scope -> name -> field -> value, :meth:`update_counters`), ``sample``
        (draw, noise-policy order, per-instance scores: :meth:`add_sample`) and ``trace`` (the
        evaluation's spans, read back by :meth:`trace`) are written in the same transaction, so
        they are exactly as durable as the evaluation rows: a killed run resumes from the state of
        its last committed evaluation.
        """
        record = EvaluationRecord(id=id, hash=hash, config_json=config_json, status=status, fitness=fitness,
                                  measures=measures, error=error, feedback=feedback, operator=operator,
                                  parent_ids=parent_ids, trace_summary=trace_summary, metrics=metrics,
                                  archive_status=archive_status, submitted_at=submitted_at, finished_at=finished_at,
                                  sample=sample, trace=trace)
        with self.transaction():
            self.add_evaluations([record])
            if counters:
                self.update_counters(counters)

    def add_evaluations(self, records: Sequence[EvaluationRecord]) -> None:
        """Insert evaluations with their samples (and traces) in one transaction (joining an enclosing one)."""
        self._require_v2()
        now = time.time()
        rows, samples, traces = [], [], []
        compress, dumps, isfinite = zlib.compress, _json, math.isfinite
        last_summary: dict | None = None
        summary = "{}"
        for r in records:
            if r.config_packed is not None:
                key = r.key if r.key is not None else key_of_bytes(r.config_packed)
                config: bytes = _PACKED + r.config_packed
            else:
                assert r.config_json is not None, f"evaluation {r.id} has no configuration"
                key = key_of(r.hash if r.hash is not None else _digest(r.config_json))
                config = compress(r.config_json.encode(), 1)
            if r.trace_summary is not last_summary:  # evaluations without calls share one summary: written once
                last_summary = r.trace_summary
                summary = dumps({k: v for k, v in last_summary.items() if v}) if any(last_summary.values()) else "{}"
            rows.append((r.id, key, config, r.status,
                         r.fitness if isfinite(r.fitness) else None, dumps(r.measures), r.error, _packed(r.feedback),
                         r.operator, _int_list(r.parent_ids), summary,
                         _packed(dumps(r.metrics)), r.archive_status, r.submitted_at,
                         now if r.finished_at is None else r.finished_at))
            if r.sample is not None:
                draw, seq, scores = r.sample
                samples.append((r.id, int(draw), int(seq), None if scores is None else _json(scores)))
            if r.trace is not None:
                traces.append((r.id, r.trace))
        with self.transaction():
            self._db.executemany("INSERT INTO evaluations VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
            if samples:
                self._db.executemany("INSERT OR REPLACE INTO samples VALUES (?,?,?,?)", samples)
            if traces:
                self._add_traces(traces)
            self._db.execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET "
                             "value = CAST(CAST(value AS INTEGER) + excluded.value AS TEXT)", (_COUNT, str(len(rows))))

    def _add_traces(self, traces: list[tuple[int, list]]) -> None:
        """Write evaluations' spans as zlib-compressed compact JSON (inside :meth:`add_evaluations`'s transaction)."""
        compress, dumps = zlib.compress, _json
        self._db.executemany("INSERT INTO traces VALUES (?, ?)",
                             [(i, compress(dumps(list(spans)).encode())) for i, spans in traces])

    def config_layout(self) -> Layout | None:
        """The layout of configurations stored as bytes (meta ``config_layout``), None where they are JSON."""
        if self._layout is None:
            fields = self.get_meta(_LAYOUT)
            self._layout = None if fields is None else Layout.from_list(fields)
        return self._layout

    def set_config_layout(self, layout: Layout) -> None:
        """Record the layout of the configurations stored as bytes (before or with the first of them)."""
        self.set_meta(_LAYOUT, layout.to_list())
        self._layout = layout

    def _config(self, value: str | bytes) -> tuple[dict, str]:
        """A stored configuration and its canonical JSON, whichever way it was stored."""
        if isinstance(value, bytes) and value[:1] == _PACKED:
            layout = self.config_layout()
            if layout is None:
                raise ValueError(f"{self.path} stores configurations as bytes but keeps no {_LAYOUT}")
            config = layout.unpack(value[1:])
            return config, layout.canonical(config)
        text = _text(value)
        return json.loads(text), text

    def count(self) -> int:
        """Number of finished evaluations."""
        if self.version >= 2:
            return int(self.get_meta(_COUNT, 0))
        return self._db.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0]

    def max_id(self) -> int:
        """Largest evaluation id so far (-1 for an empty store)."""
        value = self._db.execute("SELECT MAX(id) FROM evaluations").fetchone()[0]
        return -1 if value is None else value

    def keys(self) -> np.ndarray:
        """The 64-bit dedup key (:func:`qd.keyset.key_of`) of every finished evaluation (an ``int64`` array)."""
        column = "key" if self.version >= 2 else "hash"
        parts, cursor = [], self._db.execute(f"SELECT {column} FROM evaluations")
        while chunk := cursor.fetchmany(65536):
            values = [v for (v,) in chunk] if self.version >= 2 else [key_of(h) for (h,) in chunk]
            parts.append(np.array(values, dtype=np.int64))
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def status_counts(self) -> dict[str, int]:
        """Count of evaluations per status (reads every row; ``qd status`` reads the running totals)."""
        return dict(self._db.execute("SELECT status, COUNT(*) FROM evaluations GROUP BY status").fetchall())

    def evaluations(self, status: str | None = None, *, after: int | None = None) -> Iterator[EvaluationRow]:
        """Every stored evaluation in id order (of ``status``; with ids above ``after``), read as it is consumed.

        The archive saw them in this order unless results landed out of order.
        """
        where, params = [], []
        if status is not None:
            where.append("status = ?")
            params.append(status)
        if after is not None:
            where.append("id > ?")
            params.append(int(after))
        return self._rows(f"WHERE {' AND '.join(where)}" if where else "", tuple(params))

    def evaluations_in_seq_order(self) -> Iterator[tuple[EvaluationRow, tuple[int, int] | None]]:
        """Every evaluation with its ``(draw, seq)`` sample, in the order the noise policy saw them.

        Evaluations without a sample come last, in id order (what ``qd.noise`` replays).
        """
        query = (f"SELECT {self._columns('e.')}, s.draw, s.seq FROM evaluations e LEFT JOIN samples s ON s.id = e.id "
                 "ORDER BY s.seq IS NULL, s.seq, e.id")
        for row in self._db.execute(query):
            yield self._row(row[:15]), (None if row[16] is None else (row[15], row[16]))

    def objectives(self) -> Iterator[tuple[int, str, str, float]]:
        """``(id, hash, status, fitness)`` of every evaluation in id order (NaN for no fitness; reads every row)."""
        for row in self._rows("", ()):
            yield row.id, row.hash, row.status, row.fitness

    def objectives_of(self, ids: Iterable[int]) -> dict[int, list[tuple[int, str, float]]]:
        """Per evaluation id: ``(id, status, fitness)`` of every evaluation of its configuration, in id order.

        What ``qd elites`` reads of the elites' repeated evaluations (``qd.noise``), without reading
        the other rows.
        """
        column = "key" if self.version >= 2 else "hash"
        own: dict[Any, int] = {}
        found: dict[int, set[tuple[int, str, float]]] = {}
        for i, k, status, fitness in self._select_in(f"id, {column}, status, fitness", (int(i) for i in ids)):
            own[k] = i
            found[i] = {(i, status, math.nan if fitness is None else fitness)}
        # version 2: the resample index holds the repeats (an elite's own row was read above)
        repeats = f" AND operator = '{_RESAMPLE}'" if self.version >= 2 else ""
        for k, i, status, fitness in self._select_in(f"{column}, id, status, fitness", own, column=column,
                                                     extra=repeats):
            found[own[k]].add((i, status, math.nan if fitness is None else fitness))
        return {i: sorted(found[i]) for i in sorted(found)}

    def hashes_of(self, ids: Iterable[int]) -> dict[int, str]:
        """Per evaluation id: its configuration's hash (sha256 of the canonical JSON)."""
        if self.version < 2:
            return dict(self._select_in("id, hash", (int(i) for i in ids)))
        return {i: _digest(self._config(value)[1]) for i, value in self._select_in("id, config", (int(i) for i in ids))}

    def get(self, eval_id: int) -> EvaluationRow | None:
        """One evaluation by id, or None."""
        return next(self._rows("WHERE id = ?", (eval_id,)), None)

    def rows_of(self, ids: Iterable[int]) -> list[EvaluationRow]:
        """The evaluations of ``ids`` that exist, in id order (reads those rows only)."""
        return [self._row(row) for row in self._select_in(self._columns(), (int(i) for i in ids))]

    def parents_of(self, ids: Iterable[int]) -> dict[int, list[int]]:
        """Per evaluation of ``ids`` that exists: its parents' ids (lineage, without reading configurations)."""
        return {i: json.loads(parents) for i, parents in self._select_in("id, parent_ids", (int(i) for i in ids))}

    def _select_in(self, columns: str, values: Iterable[Any], *, table: str = "evaluations", column: str = "id",
                   extra: str = "") -> Iterator[tuple]:
        """Rows of ``SELECT columns FROM table WHERE column IN values extra``, by ascending ``column``.

        Asked in chunks of 500 values (SQLite's bound-parameter limit); each value once.
        """
        for chunk in _chunks(sorted(set(values)), 500):
            marks = ",".join("?" * len(chunk))
            yield from self._db.execute(f"SELECT {columns} FROM {table} WHERE {column} IN ({marks}){extra} "
                                        f"ORDER BY {column}", chunk)

    def outline(self, spend: bool = True) -> dict[str, np.ndarray]:
        """The small columns of every evaluation, in id order, as arrays (no configuration is read).

        ``id``, ``archive_status``, ``submitted_at``, ``finished_at``, and with ``spend`` the
        pipeline's ``cost_usd`` and ``tokens_total`` from the trace summaries (0 without).
        """
        spent = ("COALESCE(json_extract(trace_summary, '$.cost_usd'), 0), "
                 "COALESCE(json_extract(trace_summary, '$.tokens_total'), 0)") if spend else "0, 0"
        rows = self._db.execute(f"SELECT id, archive_status, submitted_at, finished_at, {spent} FROM evaluations "
                                "ORDER BY id").fetchall()
        columns = list(zip(*rows)) if rows else [()] * 6
        types = (np.int64, np.int64, float, float, float, np.int64)
        names = ("id", "archive_status", "submitted_at", "finished_at", "cost_usd", "tokens_total")
        return {n: np.array(c, dtype=t) for n, c, t in zip(names, columns, types)}

    def _columns(self, prefix: str = "") -> str:
        """The evaluation columns in :class:`EvaluationRow` order (NULL for a version 2 store's hash)."""
        return ", ".join("NULL" if c == "hash" and self.version >= 2 else prefix + c for c in _EVAL_COLUMNS)

    def _rows(self, where: str, args: tuple) -> Iterator[EvaluationRow]:
        for row in self._db.execute(f"SELECT {self._columns()} FROM evaluations {where} ORDER BY id", args):
            yield self._row(row)

    def _row(self, row: Sequence[Any]) -> EvaluationRow:
        config, text = self._config(row[2])
        return EvaluationRow(
            id=row[0], hash=row[1] if row[1] is not None else _digest(text), config=config,
            status=row[3], fitness=math.nan if row[4] is None else row[4], measures=json.loads(row[5]),
            error=row[6], feedback=_text(row[7]), operator=row[8], parent_ids=json.loads(row[9]),
            trace_summary=json.loads(row[10]), metrics=json.loads(_text(row[11])), archive_status=row[12],
            submitted_at=row[13], finished_at=row[14])

    # -- traces ------------------------------------------------------------------------------------
    def trace(self, eval_id: int) -> list[dict[str, Any]] | None:
        """The spans of evaluation ``eval_id`` (:meth:`traces`); ``None`` when none were recorded.

        Raises
        ------
        ValueError
            When the stored trace cannot be read (naming the evaluation and the store).
        """
        return self.traces([eval_id]).get(eval_id)

    def traces(self, ids: Iterable[int], unreadable: list[str] | None = None) -> dict[int, list[dict[str, Any]]]:
        """Evaluation id -> spans, for those of ``ids`` whose trace the store knows.

        A stored trace, or ``[]`` for an evaluation whose trace summary counts no spans (no row is
        written for those). Left out: ids of no evaluation, evaluations whose spans were not
        kept (run by a qd before traces were kept, then resumed), and every id of a store without
        a traces table (a version 1 store of a qd before traces were kept: :attr:`has_traces`).

        Parameters
        ----------
        ids : iterable of int
            Evaluation ids.
        unreadable : list of str, optional
            Given, a stored trace that cannot be read is left out and a message naming it is
            appended here; otherwise it raises.

        Raises
        ------
        ValueError
            When a stored trace cannot be read and ``unreadable`` is not given (naming the
            evaluation and the store).
        """
        if not self.has_traces:
            return {}
        wanted = {int(i) for i in ids}
        out: dict[int, list[dict[str, Any]]] = {}
        stored: set[int] = set()
        for i, blob in self._select_in("id, spans", wanted, table="traces"):
            stored.add(i)
            try:
                out[i] = self._spans(i, blob)
            except ValueError as exc:
                if unreadable is None:
                    raise
                unreadable.append(str(exc))
        for i, summary in self._select_in("id, trace_summary", wanted - stored):
            if not json.loads(summary).get("spans"):
                out[i] = []
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
        """Evaluations with a stored trace row (those that recorded spans; 0 for a store without a traces table)."""
        return self._db.execute("SELECT COUNT(*) FROM traces").fetchone()[0] if self.has_traces else 0

    def operator_summary(self) -> dict[str, dict[str, int]]:
        """Per operator: evaluated offspring and archive gains (new cells + improvements); reads every row."""
        rows = self._db.execute(
            "SELECT operator, COUNT(*), SUM(archive_status > 0), SUM(status = 'ok') FROM evaluations GROUP BY operator")
        return {op: {"evaluated": n, "gains": int(g or 0), "ok": int(ok or 0)} for op, n, g, ok in rows}

    # -- the archive as it stands (version 2) -------------------------------------------------
    def put_elites(self, elites: Iterable[tuple[int, int, float, float, np.ndarray, int]], emptied: Iterable[int],
                   state: dict[str, Any]) -> None:
        """Write changed cells of the archive, the cells now empty, and the archive's statistics state.

        ``elites`` rows are ``(cell, id, objective, threshold, measures, rank)``; ``state`` is
        ``qd.archives.archive_state``.
        """
        self._require_v2()
        with self.transaction():
            self._db.executemany("DELETE FROM elites WHERE cell = ?", [(int(c),) for c in emptied])
            self._db.executemany("INSERT OR REPLACE INTO elites VALUES (?,?,?,?,?,?)",
                                 [(int(c), int(i), float(o), float(t), np.asarray(m, dtype=np.float64).tobytes(),
                                   int(r)) for c, i, o, t, m, r in elites])
            self.set_meta(_ELITE_STATE, state)

    def clear_elites(self) -> None:
        """Remove every stored elite (before the whole archive is written again)."""
        self._db.execute("DELETE FROM elites")

    def elites(self, configs: bool = True) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """The stored archive and its statistics state; None for a store that keeps none (version 1).

        Per elite, in rank order: ``cell, id, objective, threshold, measures, rank, config, feedback``
        (``config`` and ``feedback`` None each without ``configs``: then no evaluation row is read).
        """
        if self.version < 2:
            return None
        state = self.get_meta(_ELITE_STATE)
        if state is None:
            return None
        out: dict[str, list] = {k: [] for k in ("cell", "id", "objective", "threshold", "measures", "rank",
                                                "config", "feedback")}
        if configs:
            query = ("SELECT l.cell, l.id, l.objective, l.threshold, l.measures, l.rank, e.config, e.feedback "
                     "FROM elites l JOIN evaluations e ON e.id = l.id ORDER BY l.rank")
        else:
            query = "SELECT cell, id, objective, threshold, measures, rank, NULL, NULL FROM elites ORDER BY rank"
        for cell, i, obj, thr, meas, rank, config, feedback in self._db.execute(query):
            out["cell"].append(cell)
            out["id"].append(i)
            out["objective"].append(obj)
            out["threshold"].append(thr)
            out["measures"].append(np.frombuffer(meas, dtype=np.float64))
            out["rank"].append(rank)
            out["config"].append(None if config is None else self._config(config)[0])
            out["feedback"].append(None if feedback is None else _text(feedback))
        return out, state

    def configs_of(self, ids: Iterable[int]) -> dict[int, tuple[dict, str]]:
        """Per evaluation id: its configuration and feedback."""
        return {i: (self._config(config)[0], _text(feedback))
                for i, config, feedback in self._select_in("id, config, feedback", (int(i) for i in ids))}

    # -- samples and validations (qd.noise, qd validate) --------------------------------------
    def add_sample(self, id: int, hash: str, draw: int, seq: int, scores: list[float] | None) -> None:
        """Record the draw, the noise policy's order ``seq`` and the per-instance scores of evaluation ``id``.

        ``hash`` is the configuration's (version 1 stores keep it; version 2 has it in the evaluation).
        """
        score_text = None if scores is None else _json(scores)
        if self.version >= 2:
            self._db.execute("INSERT OR REPLACE INTO samples VALUES (?,?,?,?)", (id, int(draw), int(seq), score_text))
        else:
            self._db.execute("INSERT OR REPLACE INTO samples VALUES (?,?,?,?,?)",
                             (id, hash, int(draw), int(seq), score_text))

    def samples(self) -> dict[int, tuple[int, int, list[float] | None]]:
        """Evaluation id -> (draw, seq, per-instance scores or None)."""
        return {i: (d, q, None if s is None else json.loads(s))
                for i, d, q, s in self._db.execute("SELECT id, draw, seq, scores FROM samples")}

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
        with self.transaction():
            rows = [(scope, name, f, float(value)) for name, fields in counters.items() for f, value in fields.items()]
            self._db.execute("DELETE FROM counters WHERE scope = ?", (scope,))
            self._db.executemany("INSERT INTO counters VALUES (?,?,?,?)", rows)

    def update_counters(self, counters: dict[str, dict[str, dict[str, float]]]) -> None:
        """Write the given counter fields (scope -> name -> field -> value); the others keep their values."""
        self._db.executemany("INSERT OR REPLACE INTO counters VALUES (?,?,?,?)",
                             [(scope, name, f, float(value)) for scope, table in counters.items()
                              for name, fields in table.items() for f, value in fields.items()])

    def counters(self, scope: str) -> dict[str, dict[str, float]]:
        """The counters of ``scope`` as ``{name: {field: value}}``."""
        out: dict[str, dict[str, float]] = {}
        for name, f, value in self._db.execute("SELECT name, field, value FROM counters WHERE scope = ?", (scope,)):
            out.setdefault(name, {})[f] = value
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

    # -- version 1 -> 2 -------------------------------------------------------------------------
    def migrate(self, rebuild: Callable[[RunStore], None] | None = None) -> None:
        """Convert a version 1 store to version 2 in place, in one transaction.

        Every evaluation is rewritten in the version 2 layout (configurations compressed, dedup keys
        instead of hashes), samples lose their copy of the hash, and ``rebuild(store)`` (called inside
        the transaction, on the converted tables) writes what version 1 did not keep: the archive's
        elites and the running totals. A store without a traces table gets one (the converted
        evaluations keep no spans; :meth:`traces` leaves them out). A crash part-way leaves the
        version 1 store as it was.
        """
        if self.version >= 2:
            return
        try:
            with self.transaction():
                db = self._db
                db.execute("ALTER TABLE evaluations RENAME TO evaluations_v1")
                db.execute("DROP INDEX IF EXISTS evaluations_hash")
                db.execute("ALTER TABLE samples RENAME TO samples_v1")
                for statement in _statements(_V2):
                    db.execute(statement)
                self.version = SCHEMA_VERSION
                cursor = db.execute(f"SELECT {', '.join(_EVAL_COLUMNS)} FROM evaluations_v1 ORDER BY id")
                while chunk := cursor.fetchmany(4096):
                    self.add_evaluations([_record(row) for row in chunk])
                db.execute("INSERT INTO samples SELECT id, draw, seq, scores FROM samples_v1")
                db.execute("DROP TABLE evaluations_v1")
                db.execute("DROP TABLE samples_v1")
                self.set_meta(_COUNT, db.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0])
                self.set_meta("schema_version", SCHEMA_VERSION)
                if rebuild is not None:
                    rebuild(self)
        except BaseException:
            self.version = 1
            raise
        self.has_traces = True  # version 2's table: the converted evaluations had none kept, unless qd kept them


def _statements(script: str) -> list[str]:
    """The SQL statements of a schema script, comments removed."""
    lines = [line for line in script.splitlines() if not line.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def _record(row: Sequence[Any]) -> EvaluationRecord:
    """A version 1 row (its columns in :data:`_EVAL_COLUMNS` order) as a record to write again."""
    return EvaluationRecord(id=row[0], hash=row[1], config_json=row[2], status=row[3],
                            fitness=math.nan if row[4] is None else row[4], measures=json.loads(row[5]), error=row[6],
                            feedback=row[7], operator=row[8], parent_ids=json.loads(row[9]),
                            trace_summary=json.loads(row[10]), metrics=json.loads(row[11]), archive_status=row[12],
                            submitted_at=row[13], finished_at=row[14])


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
