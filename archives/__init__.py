"""Archives: where every evaluation lands and every parent comes from.

``GridArchive`` and ``CVTArchive`` follow pyribs's names and semantics (``add``,
``add_single``, ``sample_elites``, ``retrieve``, ``data``, ``stats``), store
configurations (or numeric vectors) with their extra fields, and add elite queries
(``top``, ``diverse``, ``where``), ``save``/``load`` and plots (:mod:`qd.archives.plot`).
"""
from qd.archives.base import ArchiveBase, ArchiveStats
from qd.archives.cvt import CVTArchive, cvt_centroids
from qd.archives.grid import GridArchive
from qd.archives.io import load, save
from qd.archives.query import compile_where

__all__ = ["ArchiveBase", "ArchiveStats", "GridArchive", "CVTArchive", "cvt_centroids", "load", "save",
           "compile_where"]
