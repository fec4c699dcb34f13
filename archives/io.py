"""Archive files: one ``.npz`` holding arrays and JSON, loadable without pickle.

Format (version 1), every key an array readable with ``np.load(path, allow_pickle=False)``:

``header``
    0-d string: JSON object with ``format`` ("qd-archive"), ``version``, ``type``
    ("GridArchive" | "CVTArchive"), ``params`` (constructor arguments), ``obj_max``
    and ``fields`` (names of the extra per-elite fields, ``id`` first).
``index``, ``objective``, ``threshold``, ``measures``, ``id``
    Per-elite arrays in the archive's insertion order.
``solution``
    ``(elites, solution_dim)`` floats for numeric archives; otherwise a 0-d string
    holding the JSON list of configurations.
``field_<name>``
    0-d string: JSON list of that extra field's values.
``centroids``
    CVT archives only.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from qd.archives.base import ArchiveBase

__all__ = ["save", "load", "FORMAT_VERSION"]

FORMAT_VERSION = 1


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON-serializable")


def _dumps(values: list, what: str) -> np.ndarray:
    try:
        return np.array(json.dumps(values, default=_json_default, allow_nan=True))
    except TypeError as exc:
        raise ValueError(f"cannot save {what}: {exc}") from None


def save(archive: ArchiveBase, path: str | Path) -> None:
    """Write ``archive`` to ``path`` (see the module docstring for the format)."""
    from qd.archives.cvt import CVTArchive

    data = archive.data()
    extra = [name for name in archive._fields if name != "id"]
    header = {"format": "qd-archive", "version": FORMAT_VERSION, "type": type(archive).__name__,
              "params": archive._params(), "fields": ["id", *extra],
              "obj_max": None if archive._obj_max == -math.inf else archive._obj_max}
    arrays: dict[str, np.ndarray] = {
        "header": np.array(json.dumps(header)),
        "index": data["index"], "objective": data["objective"], "threshold": data["threshold"],
        "measures": data["measures"], "id": data["id"],
        "solution": data["solution"] if archive.solution_dim else _dumps(data["solution"].tolist(), "solutions"),
    }
    for name in extra:
        arrays[f"field_{name}"] = _dumps(data[name].tolist(), f"field {name!r}")
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
        if header.get("format") != "qd-archive" or header.get("version") != FORMAT_VERSION:
            raise ValueError(f"{path}: unsupported archive format {header.get('format')!r} "
                             f"version {header.get('version')!r} (this qd reads version {FORMAT_VERSION})")
        kinds = {"GridArchive": GridArchive, "CVTArchive": CVTArchive}
        if header["type"] not in kinds:
            raise ValueError(f"{path}: unknown archive type {header['type']!r}")
        params = dict(header["params"])
        if header["type"] == "CVTArchive":
            params["centroids"] = npz["centroids"]
        archive = kinds[header["type"]](**params)
        cells = npz["index"].astype(np.int64)
        n = len(cells)
        archive._occupied[cells] = True
        archive._order[:n] = cells
        archive._num_elites = n
        archive._objective[cells] = npz["objective"]
        archive._threshold[cells] = npz["threshold"]
        archive._measures[cells] = npz["measures"]
        archive._fields["id"][cells] = npz["id"]
        if archive.solution_dim:
            archive._solution[cells] = npz["solution"]
        else:
            for cell, solution in zip(cells.tolist(), json.loads(str(npz["solution"]))):
                archive._solution[cell] = solution
        for name in header["fields"][1:]:
            arr = archive._field(name)
            for cell, value in zip(cells.tolist(), json.loads(str(npz[f"field_{name}"]))):
                arr[cell] = value
        archive._obj_max = -math.inf if header["obj_max"] is None else float(header["obj_max"])
    return archive
