"""Persistent SQLite cache of LLM responses, keyed by the sha256 of the full request.

A cached request is one whose every field that can change the answer (endpoint, model, API,
prompt or messages, temperature, max_tokens, stop, seed, sample index) is identical; with seeded
requests this makes whole runs reproducible and lets a resumed or repeated run skip paid calls.
The endpoint is the client's ``base_url`` (or ``embedded``), so two servers that expose the same
model name never replay each other's answers from a shared cache file; a server that changes the
model behind a name at the same URL does, so clear the cache then.
"""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

__all__ = ["RequestCache", "cache_path", "request_key"]


def cache_path(cache: str | Path | bool | None) -> Path | None:
    """A ``cache`` setting as a file: ``True`` is qd's shared cache, ``False``/``None``/``""`` none.

    The shared cache is ``$QD_CACHE_DIR/llm-cache.sqlite`` (default ``~/.cache/qd``).
    """
    if cache is True:
        return Path(os.environ.get("QD_CACHE_DIR", Path.home() / ".cache" / "qd")) / "llm-cache.sqlite"
    return Path(cache) if cache else None


def request_key(request: dict[str, Any]) -> str:
    """sha256 hex digest of a request, independent of key order.

    Parameters
    ----------
    request : dict
        JSON-serializable request fields.

    Returns
    -------
    str
        64-character hex key.
    """
    text = json.dumps(request, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class RequestCache:
    """Thread- and process-safe response cache in one SQLite file (WAL mode).

    Each thread gets its own connection (SQLite connections must not be shared across threads);
    WAL lets readers proceed while a writer commits, and ``busy_timeout`` absorbs write contention
    between processes. Only the path is pickled.

    Parameters
    ----------
    path : str or Path
        SQLite file; parent directories are created.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._conn()  # create the schema now so errors surface at construction

    def __repr__(self) -> str:
        return f"RequestCache({str(self.path)!r})"

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path = state["path"]
        self._local = threading.local()

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS responses ("
                " key TEXT PRIMARY KEY, response TEXT NOT NULL, created REAL NOT NULL)"
            )
            self._local.conn = conn
        return conn

    def get(self, key: str) -> dict[str, Any] | None:
        """The cached response for ``key``, or ``None``."""
        row = self._conn().execute("SELECT response FROM responses WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def put(self, key: str, response: dict[str, Any]) -> None:
        """Store (or replace) the response for ``key``."""
        self._conn().execute(
            "INSERT OR REPLACE INTO responses (key, response, created) VALUES (?, ?, ?)",
            (key, json.dumps(response, ensure_ascii=False), time.time()),
        )

    def __len__(self) -> int:
        return int(self._conn().execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def __contains__(self, key: str) -> bool:
        return self._conn().execute("SELECT 1 FROM responses WHERE key = ?", (key,)).fetchone() is not None

    def clear(self) -> None:
        """Delete every cached response."""
        self._conn().execute("DELETE FROM responses")

    def close(self) -> None:
        """Close this thread's connection (others close when their threads end)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
