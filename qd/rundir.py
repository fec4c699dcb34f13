"""The run directory as data: its lock, its config fingerprint, and reading it without its domain.

* :class:`RunLock`: one writer per run directory (``RUN_DIR/lock`` names the holder's pid and
  host; the kernel drops the lock when the holder dies, so a crash leaves nothing to clean).
* :func:`meaning` / :func:`check_resume`: the config keys that give a score and a cell their
  meaning (domain and its options, the archive's measures, ranges, bins and type) may not change
  on resume; the others (budget, workers, operator weights, LLM endpoint, ...) may, and each
  change is recorded in the store (:func:`record_resume`) once the resumed search has started.
* :func:`archive_spec` / :func:`read_run`: the archive's layout is stored in the run, so
  ``qd status``, ``qd plot`` and ``qd elites`` rebuild the archive from the store alone and
  never import the domain named in ``config.toml`` (a run directory may come from someone else);
  they read the archive as it stands and the running totals, not every evaluation.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qd.archive_store import load_archive, replay
from qd.archives import CVTArchive, GridArchive
from qd.config import DEFAULTS, load_config
from qd.store import RunStore
from qd.totals import TOTALS_META, RunTotals

__all__ = ["RunLock", "RunLockedError", "ReadRun", "meaning", "fingerprint", "check_resume", "record_resume",
           "archive_spec", "archive_from_spec", "check_same_archive", "read_run", "read_archive", "open_store",
           "is_running", "LOCK_NAME", "MEANING_KEYS"]

LOCK_NAME = "lock"

# Sections whose every key gives a score or a cell its meaning (see the module docstring).
MEANING_KEYS: tuple[str, ...] = ("domain", "archive")
_DEFAULTS_JSON = json.loads(json.dumps(DEFAULTS, default=str))  # as a stored config holds them


class RunLockedError(RuntimeError):
    """Another live process holds the run directory."""


class RunStartingError(ValueError):
    """The run directory's store exists but its run has not stored its config yet."""


class RunLock:
    """Exclusive lock on a run directory, held while a search writes to it.

    Parameters
    ----------
    run_dir : str or Path
        The run directory (created if missing).

    Raises
    ------
    RunLockedError
        From :meth:`acquire` when a live process holds the lock; the message names its pid,
        host and start time.
    """

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        """Take the lock (an ``flock`` on ``RUN_DIR/lock``) and write this process's pid and host into it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                raise RunLockedError(f"{self.path.parent} is in use by {describe_holder(self.path)}; "
                                     "wait for it to finish (or stop it) before resuming") from None
            try:  # the previous holder may have removed the file between our open and our flock
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode())
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        """Remove the lock file and drop the lock (a no-op when not held)."""
        if self._fd is None:
            return
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def describe_holder(path: str | Path) -> str:
    """``pid 123 on host h (since ...)`` from a lock file, or what is known of it."""
    try:
        holder = json.loads(Path(path).read_text() or "{}")
    except (OSError, ValueError):
        holder = {}
    if not holder:
        return "another process (its lock file names no holder yet)"
    return f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')} (since {holder.get('since', '?')})"


# -- config fingerprint ------------------------------------------------------------------------
def meaning(config: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The flattened ``section.key -> value`` of the keys that give scores and cells their meaning."""
    out: dict[str, Any] = {}
    for section in MEANING_KEYS:
        for key, value in config.get(section, {}).items():
            out[f"{section}.{key}"] = value
    return out


def fingerprint(config: dict[str, dict[str, Any]]) -> str:
    """sha256 of :func:`meaning` (canonical JSON)."""
    text = json.dumps(meaning(config), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _flat(config: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {f"{s}.{k}": v for s, values in config.items() for k, v in values.items()}


def check_resume(store: RunStore, config: dict[str, dict[str, Any]]) -> dict[str, list[Any]]:
    """Refuse a resume that changes what scores and cells mean; return what else changed.

    Nothing is written: the resume records the changes (:func:`record_resume`) once it has
    started, so a resume that fails to start leaves the run as it was.

    Parameters
    ----------
    store : RunStore
        The run being resumed (its ``config`` meta is the previous session's config).
    config : dict
        The resolved config of this session.

    Returns
    -------
    dict
        ``section.key -> [old, new]`` for every key that changed (all of them safe).

    Raises
    ------
    ValueError
        Naming every changed meaning-giving key with its old and new value.
    """
    previous = store.get_meta("config")
    if previous is None:
        return {}
    # Compare through JSON: the stored config went through it (tuples are lists, and so on).
    now = json.loads(json.dumps(config, default=str))
    # A key the run's qd did not have yet (added since) meant its default: it is no change.
    old_meaning, new_meaning = {**meaning(_DEFAULTS_JSON), **meaning(previous)}, meaning(now)
    changed = sorted(k for k in old_meaning.keys() | new_meaning.keys() if old_meaning.get(k) != new_meaning.get(k))
    if changed:
        lines = "\n".join(f"  {k}: {old_meaning.get(k)!r} -> {new_meaning.get(k)!r}" for k in changed)
        raise ValueError(f"cannot resume with a config that changes what scores and cells mean:\n{lines}\n"
                         "restore these keys (or start a new run with --out); budget, workers, operator weights "
                         "and the LLM endpoint may change on resume")
    old_flat, new_flat = _flat(previous), _flat(now)
    return {k: [old_flat.get(k), new_flat.get(k)] for k in sorted(old_flat.keys() | new_flat.keys())
            if old_flat.get(k) != new_flat.get(k)}


def record_resume(store: RunStore, changed: dict[str, list[Any]]) -> None:
    """Append a resume's changed keys (:func:`check_resume`) to the store's ``resumes`` meta (none: nothing)."""
    if changed:
        resumes = store.get_meta("resumes", [])
        resumes.append({"at": time.strftime("%Y-%m-%d %H:%M:%S"), "evaluations": store.count(), "changed": changed})
        store.set_meta("resumes", resumes)


# -- reading a run without its domain -------------------------------------------------------------
ARCHIVE_META = "archive"


def archive_spec(archive: Any) -> dict[str, Any]:
    """What rebuilds an empty copy of ``archive`` without its domain (JSON-able)."""
    spec: dict[str, Any] = {"type": type(archive).__name__, "params": archive._params()}
    if type(archive).__name__ == "CVTArchive":
        spec["centroids"] = archive.centroids.tolist()
    return spec


def archive_from_spec(spec: dict[str, Any]) -> Any:
    """An empty archive from :func:`archive_spec`."""
    params = dict(spec["params"])
    if isinstance(params.get("solution_dim"), list):
        params["solution_dim"] = tuple(params["solution_dim"])
    if params.get("extra_fields"):
        params["extra_fields"] = {n: (tuple(s), d) for n, (s, d) in params["extra_fields"].items()}
    if spec["type"] == "CVTArchive":
        import numpy as np

        return CVTArchive(centroids=np.asarray(spec["centroids"], dtype=float), **params)
    if spec["type"] == "GridArchive":
        return GridArchive(**params)
    raise ValueError(f"unknown archive type {spec['type']!r} in the run store")


def check_same_archive(store: RunStore, archive: Any) -> None:
    """Refuse to resume into an archive laid out differently from the stored one.

    This catches what the config keys alone do not: a domain whose default measures or ranges
    changed, or CVT centroids that follow ``run.seed``.

    Raises
    ------
    ValueError
        Naming the archive parameters that differ.
    """
    stored = store.get_meta(ARCHIVE_META)
    if stored is None:
        return
    now = json.loads(json.dumps(archive_spec(archive), default=str))
    params = sorted(k for k in stored["params"].keys() | now["params"].keys()
                    if stored["params"].get(k) != now["params"].get(k))
    if stored["type"] != now["type"]:
        params.insert(0, "type")
    if stored.get("centroids") != now.get("centroids"):
        params.append("centroids (a CVT archive's centroids follow run.seed)")
    if params:
        raise ValueError(f"cannot resume: the archive this config builds differs from the run's in "
                         f"{', '.join(params)}; restore the run's config or start a new run with --out")


@dataclass
class ReadRun:
    """A run directory opened read-only: its config (parsed, not acted on), store, archive and totals.

    Attributes
    ----------
    path : Path
        The run directory.
    config : dict
        The config the run stored.
    store : RunStore
        Opened read-only in one read transaction: everything read from it agrees with ``archive``
        and ``totals``, even while the run writes.
    archive : archive
        The archive as it stood at the last commit (elites with ``solution`` = configuration,
        ``id`` = evaluation id, ``feedback``).
    totals : dict
        The running totals (``qd.totals.RunTotals.as_dict``): evaluations, statuses, failures,
        the pipeline's LLM spend, measure values out of range.
    """

    path: Path
    config: dict
    store: RunStore
    archive: Any
    totals: dict


def read_run(run_dir: str | Path, solutions: bool = True) -> ReadRun:
    """Open a run directory for reading: the store only, never the domain named in its config.

    What it reads costs the archive, not the history: the stored elites and running totals (a
    version 1 store, which kept neither, is replayed and counted row by row). Without
    ``solutions`` the elites' configurations and feedback are left None (``qd status``, ``qd plot``:
    their evaluation rows are not read; ``store.configs_of(ids)`` reads the ones needed). Every
    read of the returned store sees the run as it was when it was opened, even while a search
    writes to it (one read transaction, held until ``store.close()``).

    Raises
    ------
    FileNotFoundError
        When ``run_dir`` holds no ``run.sqlite``.
    ValueError
        When the store does not describe its archive (a run written before qd stored it).
    """
    run_dir, store, config = open_store(run_dir)
    try:
        spec = store.get_meta(ARCHIVE_META)
        if spec is None:
            raise ValueError(f"{run_dir}/run.sqlite does not describe its archive (written by an older qd); "
                             "`qd run --resume` it once with this qd to add the description")
        archive = read_archive(store, archive_from_spec(spec), solutions)
        totals = store.get_meta(TOTALS_META)
        if totals is None:
            counted = RunTotals(archive.measure_names, archive.lower_bounds, archive.upper_bounds)
            totals = counted.add_rows(store.evaluations()).as_dict()
    except BaseException:
        store.close()
        raise
    return ReadRun(run_dir, config, store, archive, totals)


def read_archive(store: RunStore, archive: Any, solutions: bool = True) -> Any:
    """Fill the empty ``archive`` with the run's archive as it stands (replayed for a version 1 store)."""
    if not load_archive(store, archive, solutions):
        replay(store, archive)
    return archive


def is_running(run_dir: str | Path) -> bool:
    """True while a live process holds the run directory's lock (a search writing to it).

    Tested with a shared, non-blocking ``flock`` on the existing lock file, released at once: the
    directory and its store are left as they are.
    """
    path = Path(run_dir) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # closing drops a lock taken here
    return False


def open_store(run_dir: str | Path, *, readonly: bool = True) -> tuple[Path, RunStore, dict]:
    """A run directory's store and the config the run stored (``config.toml`` for runs that predate it).

    The stored config wins over ``config.toml``, which a user may have edited since.

    Raises
    ------
    FileNotFoundError
        When ``run_dir`` holds no ``run.sqlite``.
    RunStartingError
        When the run is still starting: its store exists but holds no config yet, and no ``config.toml``.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "run.sqlite").exists():
        raise FileNotFoundError(f"{run_dir} is not a qd run directory (no run.sqlite)")
    store = RunStore(run_dir / "run.sqlite", readonly=readonly)
    try:
        stored = store.get_meta("config")
        if stored is not None:
            return run_dir, store, stored
        if not (run_dir / "config.toml").exists():  # a new run stores its config once everything has started
            raise RunStartingError(f"{run_dir} is a run that is still starting (its store holds no config yet); "
                                   "try again in a moment")
        return run_dir, store, load_config(run_dir / "config.toml")
    except BaseException:
        store.close()
        raise
