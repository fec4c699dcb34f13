"""The map's cells as shapes: a grid's bins, a 2-D CVT archive's Voronoi polygons.

A CVT archive puts a point in the cell of its nearest centroid (Euclidean distance in measure
space), so its cells are the Voronoi regions of the centroids, cut to the archive's ranges.
"""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["layout", "voronoi_polygons"]


def voronoi_polygons(centroids: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> list[list[list[float]]]:
    """Each centroid's Voronoi region inside the box ``[lower, upper]``, as a list of ``[x, y]`` vertices.

    The centroids are mirrored across the box's four sides, which makes every region of the
    originals finite and bounded exactly by the box (the mirror images' bisectors are its sides).
    Vertices run counter-clockwise around their centroid.
    """
    from scipy.spatial import Voronoi

    points = np.asarray(centroids, dtype=float)
    low, high = np.asarray(lower, dtype=float), np.asarray(upper, dtype=float)
    if len(points) == 1:
        return [[[low[0], low[1]], [high[0], low[1]], [high[0], high[1]], [low[0], high[1]]]]
    inside = np.clip(points, low, high)  # a centroid outside the box would mirror onto the wrong side
    mirrored = [inside]
    for axis in (0, 1):
        for edge in (low[axis], high[axis]):
            image = inside.copy()
            image[:, axis] = 2 * edge - image[:, axis]
            mirrored.append(image)
    vor = Voronoi(np.concatenate(mirrored), qhull_options="Qbb Qc Qz")
    out = []
    for i, centre in enumerate(inside):
        region = vor.regions[vor.point_region[i]]
        vertices = np.clip(vor.vertices[[v for v in region if v >= 0]], low, high)
        angles = np.arctan2(vertices[:, 1] - centre[1], vertices[:, 0] - centre[0])
        out.append(vertices[np.argsort(angles)].tolist())
    return out


def layout(archive: Any) -> dict[str, Any]:
    """The archive's geometry for the report: type, measure names, ranges, and grid dims or CVT cells."""
    names = list(archive.measure_names)
    low, high = archive.lower_bounds, archive.upper_bounds
    out: dict[str, Any] = {"names": names, "lower": low.tolist(), "upper": high.tolist(), "cells": int(archive.cells)}
    if type(archive).__name__ == "CVTArchive":
        centroids = archive.centroids
        out.update(type="cvt", centroids=centroids.tolist())
        if len(names) == 2:
            out["polygons"] = [[[float(f"{x:.7g}"), float(f"{y:.7g}")] for x, y in poly]  # 7 digits: sub-pixel
                               for poly in voronoi_polygons(centroids, low, high)]
    else:
        out.update(type="grid", dims=[int(d) for d in archive.dims])
    return out
