"""ArchiveDataFrame: a pandas DataFrame of elites with pyribs's helpers (needs pandas).

``archive.data(return_type="pandas")`` returns one. Scalar fields are one column each
(``objective``); vector fields one column per component (``measures_0``,
``measures_1``, ...), as in pyribs, so ``ribs.visualize`` functions that take a
dataframe accept it.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["ArchiveDataFrame"]


class ArchiveDataFrame(pd.DataFrame):
    """A :class:`pandas.DataFrame` of elites with :meth:`get_field` and :meth:`iterelites`."""

    @property
    def _constructor(self) -> type:
        return ArchiveDataFrame

    def get_field(self, field: str) -> np.ndarray:
        """A copy of one field: 1-D for scalar fields, ``(elites, k)`` for vector fields.

        Raises
        ------
        KeyError
            When neither a column ``field`` nor columns ``field_0``, ``field_1``, ... exist.
        """
        if field in self:
            return self[field].to_numpy(copy=True)
        pattern = re.compile(rf"{re.escape(field)}_\d+")
        cols = [c for c in self if isinstance(c, str) and pattern.fullmatch(c)]
        if cols:
            return self[cols].to_numpy(copy=True)
        raise KeyError(f"Field '{field}' was not found.")

    def iterelites(self) -> Iterator[dict[str, Any]]:
        """Every row as a dict of fields (vector fields gathered back into arrays)."""
        names: dict[str, None] = {}
        for col in self:
            head, _, tail = str(col).rpartition("_")
            names[head if head and tail.isdigit() else str(col)] = None
        fields = {name: self.get_field(name) for name in names}
        return ({name: arr[i] for name, arr in fields.items()} for i in range(len(self)))
