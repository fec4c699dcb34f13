"""AddStatus: what an insertion did (pyribs's meaning and values)."""
from __future__ import annotations

from enum import IntEnum

__all__ = ["AddStatus"]


class AddStatus(IntEnum):
    """Status of one item offered to :meth:`~qd.archives.ArchiveBase.add`.

    An ``IntEnum``: statuses compare equal to the integers pyribs returns, act as a
    bool (added or not) and order as ``NEW > IMPROVE_EXISTING > NOT_ADDED``. Batch
    :meth:`~qd.archives.ArchiveBase.add` returns an int32 array of these values;
    ``AddStatus(s)`` names one.
    """

    NOT_ADDED = 0
    IMPROVE_EXISTING = 1
    NEW = 2
