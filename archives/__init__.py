"""Archives: where every evaluation lands and every parent comes from.

``GridArchive`` and ``CVTArchive`` are drop-ins for pyribs 0.12's archives (same names,
parameters and results, so pyribs's emitters, schedulers and ``ribs.visualize`` run on
them); they also store configurations (or numeric arrays) with free-form extra fields,
and add elite queries (``top``, ``diverse``, ``where``), ``save``/``load`` and plots
(:mod:`qd.archives.plot`). ``ArchiveDataFrame`` needs pandas and is imported on first use.
"""
from typing import Any

from qd.archives.base import ArchiveBase, ArchiveStats
from qd.archives.cvt import CVTArchive, cvt_centroids, k_means_centroids
from qd.archives.grid import GridArchive
from qd.archives.io import archive_state, load, restore, save
from qd.archives.query import compile_where
from qd.archives.status import AddStatus

__all__ = ["AddStatus", "ArchiveBase", "ArchiveDataFrame", "ArchiveStats", "GridArchive", "CVTArchive",
           "cvt_centroids", "k_means_centroids", "load", "save", "archive_state", "restore", "compile_where"]


def __getattr__(name: str) -> Any:
    if name == "ArchiveDataFrame":  # pandas is optional: import it only when asked for
        from qd.archives.dataframe import ArchiveDataFrame

        return ArchiveDataFrame
    raise AttributeError(f"module 'qd.archives' has no attribute {name!r}")
