"""Archives: where every evaluation lands and every parent comes from.

``GridArchive`` and ``CVTArchive`` follow pyribs's names and semantics (``add``,
``add_single``, ``sample_elites``, ``retrieve``, ``data``, ``stats``), store
configurations (or numeric vectors) with their extra fields, and add elite queries
(``top``, ``diverse``, ``where``), ``save``/``load`` and plots (:mod:`archives.plot`).
"""
from archives.base import ArchiveBase, ArchiveStats
from archives.cvt import CVTArchive, cvt_centroids
from archives.grid import GridArchive
from archives.io import load, save
from archives.query import compile_where

__all__ = ["ArchiveBase", "ArchiveStats", "GridArchive", "CVTArchive", "cvt_centroids", "load", "save",
           "compile_where"]
