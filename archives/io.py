"""Archive files: one ``.npz`` holding arrays and JSON, loadable without pickle.

Format (version 2), every key an array readable with ``np.load(path, allow_pickle=False)``:

``header``
    0-d string: JSON object with ``format`` ("qd-archive"), ``version``, ``type``
    ("GridArchive" | "CVTArchive"), ``params`` (constructor arguments), ``fields``
    (names of the extra per-elite fields), ``objective_sum``, ``best_elite`` and
    ``occupations`` (:func:`archive_state`: the statistics state, so a loaded archive reports
    the same ``stats`` bit for bit).
``index``, ``objective``, ``threshold``, ``measures``
    Per-elite arrays in the archive's ``data()`` order.
``solution``
    The numeric solutions; for configuration archives a 0-d string holding the JSON list
    of configurations.
``field_<name>``
    Numeric extra fields as arrays; object fields (``feedback``, ...) as a 0-d JSON string.
``centroids``
    CVT archives only.

Version 1 files (written before the pyribs alignment) still load.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from qd.archives.base import ArchiveBase

__all__ = ["save", "load", "archive_state", "restore", "FORMAT_VERSION"]

FORMAT_VERSION = 2


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON-serializable")


def _dumps(values: Any, what: str) -> np.ndarray:
    try:
        return np.array(json.dumps(values, default=_json_default, allow_nan=True))
    except TypeError as exc:
        raise ValueError(f"cannot save {what}: {exc}") from None


def archive_state(archive: ArchiveBase) -> dict[str, Any]:
    """What the elites alone do not tell of an archive, as JSON-able values.

    ``objective_sum`` (the running sum behind ``qd_score``, bit for bit), ``best_elite`` (the best
    elite ever inserted, which may have left the archive) and ``occupations`` (cell occupations so
    far: the next elite's rank). With the elites and their ranks, :func:`restore` rebuilds the
    archive exactly.
    """
    best = archive.best_elite
    return {"objective_sum": float(archive._osum), "occupations": int(archive._occupations),
            "best_elite": None if best is None else {k: _json_default(v) if isinstance(v, (np.generic, np.ndarray))
                                                     else v for k, v in best.items()}}


def restore(archive: ArchiveBase, cells: Any, objective: Any, threshold: Any, measures: Any, solutions: Any,
            fields: dict[str, Any], state: dict[str, Any], ranks: Any = None) -> ArchiveBase:
    """Fill an empty ``archive`` with elites and :func:`archive_state`; returns it.

    Parameters
    ----------
    archive : ArchiveBase
        An empty archive laid out as the one the elites come from.
    cells, objective, threshold, measures : array-like
        Per elite: its cell, objective, threshold and measures.
    solutions : sequence
        Per elite: its solution (configuration or numeric array).
    fields : dict of str to sequence
        Per elite values of each extra field, in the order the fields were created.
    state : dict
        :func:`archive_state` of the archive the elites come from.
    ranks : array-like, optional
        When each elite's cell was occupied (``take_changes``'s ``rank``): elites are listed in
        that order. Without ranks they are listed as given.
    """
    if not archive.empty:
        raise ValueError("restore() needs an empty archive")
    cells = np.asarray(cells, dtype=np.int64)
    n = len(cells)
    order = np.argsort(np.asarray(ranks, dtype=np.int64), kind="stable") if ranks is not None else np.arange(n)
    cells = cells[order]
    archive._occupied[cells] = True
    archive._order[:n] = cells
    archive._num_elites = n
    archive._rank[cells] = np.asarray(ranks, dtype=np.int64)[order] if ranks is not None else np.arange(n)
    archive._occupations = int(state.get("occupations", n))
    archive._objective[cells] = np.asarray(objective)[order]
    archive._threshold[cells] = np.asarray(threshold)[order]
    archive._measures[cells] = np.asarray(measures, dtype=archive._meas_dt).reshape(n, archive.measure_dim)[order]
    order_list = order.tolist()
    if archive.solution_dim is not None:
        archive._solution[cells] = np.asarray(solutions)[order]
    else:
        for cell, i in zip(cells.tolist(), order_list):
            archive._solution[cell] = solutions[i]
    for name, values in fields.items():
        arr = archive._field(name)
        if arr.dtype == object:
            for cell, i in zip(cells.tolist(), order_list):
                arr[cell] = values[i]
        else:
            arr[cells] = np.asarray(values)[order]
    archive._osum = archive._ocast(state["objective_sum"])
    best = state.get("best_elite")
    if best is not None:
        dtypes = archive.dtypes
        archive._best_copy = {k: (v if dtypes.get(k, np.dtype(object)).kind == "O"
                                  else np.asarray(v, dtype=dtypes[k])[()]) for k, v in best.items()}
        archive._obj_max = archive._best_copy["objective"]
    archive._updates += 1
    archive._stats_cache = None
    return archive


def save(archive: ArchiveBase, path: str | Path) -> None:
    """Write ``archive`` to ``path`` (see the module docstring for the format)."""
    from qd.archives.cvt import CVTArchive

    data = archive.data()
    extra = list(archive._fields)
    header = {"format": "qd-archive", "version": FORMAT_VERSION, "type": type(archive).__name__,
              "params": archive._params(), "fields": extra, **archive_state(archive)}
    arrays: dict[str, np.ndarray] = {
        "index": data["index"], "objective": data["objective"], "threshold": data["threshold"],
        "measures": data["measures"],
        "solution": data["solution"] if archive.solution_dim is not None else _dumps(data["solution"].tolist(),
                                                                                     "solutions"),
    }
    for name in extra:
        arr = data[name]
        arrays[f"field_{name}"] = arr if arr.dtype != object else _dumps(arr.tolist(), f"field {name!r}")
    arrays["header"] = _dumps(header, "the best elite")
    if isinstance(archive, CVTArchive):
        arrays["centroids"] = archive.centroids
    with open(path, "wb") as fh:  # a file handle keeps numpy from appending ".npz" to the name
        np.savez(fh, **arrays)


def load(path: str | Path) -> ArchiveBase:
    """Read an archive written by :func:`save`; the result equals the saved archive."""
    from qd.archives.cvt import CVTArchive
    from qd.archives.grid import GridArchive

    with np.load(path, allow_pickle=False) as npz:
        if "header" not in npz.files:
            raise ValueError(f"{path} is not a qd archive file (no header)")
        header = json.loads(str(npz["header"]))
        version = header.get("version")
        if header.get("format") != "qd-archive" or version not in (1, FORMAT_VERSION):
            raise ValueError(f"{path}: unsupported archive format {header.get('format')!r} "
                             f"version {version!r} (this qd reads versions 1 and {FORMAT_VERSION})")
        kinds = {"GridArchive": GridArchive, "CVTArchive": CVTArchive}
        if header["type"] not in kinds:
            raise ValueError(f"{path}: unknown archive type {header['type']!r}")
        params = dict(header["params"])
        if version == 1 and not params.get("solution_dim"):
            params["solution_dim"] = None  # version 1 wrote 0 for configuration archives
        if isinstance(params.get("solution_dim"), list):
            params["solution_dim"] = tuple(params["solution_dim"])
        if params.get("extra_fields"):
            params["extra_fields"] = {n: (tuple(s), d) for n, (s, d) in params["extra_fields"].items()}
        if header["type"] == "CVTArchive":
            params["centroids"] = npz["centroids"]
        archive = kinds[header["type"]](**params)
        cells = npz["index"].astype(np.int64)
        n = len(cells)
        if archive.solution_dim is not None:
            solutions: Any = npz["solution"]
        else:
            solutions = json.loads(str(npz["solution"]))
        fields: dict[str, Any] = {}
        if version == 1:
            fields["id"] = npz["id"]
        for name in header["fields"][1 if version == 1 else 0:]:
            stored = npz[f"field_{name}"]
            fields[name] = json.loads(str(stored)) if stored.ndim == 0 and stored.dtype.kind == "U" else stored
        objective = npz["objective"]
        if version == 1:
            state = {"objective_sum": float(np.sum(objective)), "best_elite": None}
        else:
            state = header
        restore(archive, cells, objective, npz["threshold"], npz["measures"], solutions, fields, state)
        if version == 1:
            archive._obj_max = None if header["obj_max"] is None else archive._obj_dt.type(header["obj_max"])
            if n:
                archive._best_cell = int(cells[np.argmax(objective)])
    return archive
