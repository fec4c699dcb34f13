"""Illumination plots (matplotlib, headless-safe).

- :func:`heatmap`: one axes; a grid archive over 1 or 2 measures, or a CVT archive
  (Voronoi cells coloured by objective, or for more than 2,000 cells an image of them) over
  its first two measures.
- :func:`grid_heatmaps`: a grid archive over 3 or 4 measures as a grid of 2-D heatmaps.
- :func:`plot_archive`: a whole figure for any archive (picks one of the above).
- :func:`qd_curve`: QD score (or any metric) against evaluations.

Axes carry the measure names; the colour bar carries the objective name.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from qd.archives.base import ArchiveBase

__all__ = ["heatmap", "grid_heatmaps", "plot_archive", "qd_curve"]

_MAX_PANELS = 5  # per outer measure in grid_heatmaps; more bins are merged (max objective)


def _pyplot():
    import matplotlib.pyplot as plt  # matplotlib falls back to Agg by itself when there is no display

    return plt


def _grid_values(archive: ArchiveBase) -> np.ndarray:
    """Objective per cell shaped like the grid (NaN where empty)."""
    values = np.full(archive.cells, np.nan)
    values[archive.data("index")] = archive.data("objective")
    return values.reshape(archive.dims)


def _limits(archive: ArchiveBase, vmin: float | None, vmax: float | None) -> tuple[float, float]:
    obj = archive.data("objective")
    low = float(obj.min()) if vmin is None and len(obj) else (vmin if vmin is not None else 0.0)
    high = float(obj.max()) if vmax is None and len(obj) else (vmax if vmax is not None else 1.0)
    return (low, high) if high > low else (low - 0.5, low + 0.5)


def heatmap(archive: ArchiveBase, ax: Any = None, *, cmap: str = "viridis", vmin: float | None = None,
            vmax: float | None = None, colorbar: bool = True) -> Any:
    """Draw ``archive`` on ``ax`` (a new figure when None); returns the mappable drawn.

    Grid archives over 1 or 2 measures become a pcolormesh over the cell boundaries;
    CVT archives over 2 or more measures become Voronoi cells (first two measures).
    Empty cells are left blank.
    """
    from qd.archives.cvt import CVTArchive
    from qd.archives.grid import GridArchive

    plt = _pyplot()
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 6))
    lo, hi = _limits(archive, vmin, vmax)
    if isinstance(archive, GridArchive) and archive.measure_dim <= 2:
        values = _grid_values(archive)
        bounds = archive.boundaries
        if archive.measure_dim == 1:
            mesh = ax.pcolormesh(bounds[0], [0, 1], values[None, :], cmap=cmap, vmin=lo, vmax=hi)
            ax.set_yticks([])
        else:
            mesh = ax.pcolormesh(bounds[0], bounds[1], values.T, cmap=cmap, vmin=lo, vmax=hi)
            ax.set_ylabel(archive.measure_names[1])
    elif isinstance(archive, CVTArchive) and archive.measure_dim >= 2:
        mesh = _voronoi(archive, ax, cmap, lo, hi)
        ax.set_ylabel(archive.measure_names[1])
    else:
        raise ValueError(f"heatmap draws grid archives over 1-2 measures and CVT archives over 2+; this is a "
                         f"{type(archive).__name__} over {archive.measure_dim} (use grid_heatmaps or plot_archive)")
    ax.set_xlabel(archive.measure_names[0])
    if colorbar:
        ax.figure.colorbar(mesh, ax=ax, label=archive.objective_name)
    return mesh


_RASTER_CELLS = 2000  # CVT archives with more cells are drawn as an image of their cells
_RASTER_PIXELS = 400  # ... this many pixels a side


def _voronoi(archive: Any, ax: Any, cmap: str, lo: float, hi: float) -> Any:
    if archive.cells > _RASTER_CELLS:
        return _cells_image(archive, ax, cmap, lo, hi)
    from matplotlib.collections import PolyCollection
    from scipy.spatial import Voronoi

    low, high = archive.lower_bounds[:2], archive.upper_bounds[:2]
    span = high - low
    points = (archive.centroids[:, :2] - low) / span  # unit box: Voronoi is scale-sensitive
    far = np.array([[-10, -10], [-10, 11], [11, -10], [11, 11]], dtype=float)  # closes the outer regions
    vor = Voronoi(np.vstack([points, far]))
    values = np.full(archive.cells, np.nan)
    values[archive.data("index")] = archive.data("objective")
    polygons, colours = [], []
    for cell in range(archive.cells):
        region = vor.regions[vor.point_region[cell]]
        if -1 in region or not region:
            continue
        polygons.append(vor.vertices[region] * span + low)
        colours.append(values[cell])
    collection = PolyCollection(polygons, array=np.ma.masked_invalid(colours), cmap=cmap, edgecolors="0.85",
                                linewidths=0.2 if archive.cells > 500 else 0.5)
    collection.set_clim(lo, hi)
    ax.add_collection(collection)
    ax.set_xlim(low[0], high[0])
    ax.set_ylim(low[1], high[1])
    return collection


def _cells_image(archive: Any, ax: Any, cmap: str, lo: float, hi: float) -> Any:
    """A CVT archive of many cells as an image: each pixel coloured by the cell of its nearest centroid.

    Thousands of Voronoi polygons take seconds to draw and their borders are thinner than a
    pixel; the image shows the same cells (in the first two measures) at once.
    """
    from scipy.spatial import cKDTree

    low, high = archive.lower_bounds[:2], archive.upper_bounds[:2]
    xs = np.linspace(low[0], high[0], _RASTER_PIXELS)
    ys = np.linspace(low[1], high[1], _RASTER_PIXELS)
    pixels = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)
    values = np.full(archive.cells, np.nan)
    values[archive.data("index")] = archive.data("objective")
    _, nearest = cKDTree(archive.centroids[:, :2]).query(pixels)
    image = values[nearest].reshape(_RASTER_PIXELS, _RASTER_PIXELS)
    return ax.imshow(np.ma.masked_invalid(image), origin="lower", extent=(low[0], high[0], low[1], high[1]),
                     aspect="auto", interpolation="nearest", cmap=cmap, vmin=lo, vmax=hi)


def grid_heatmaps(archive: ArchiveBase, fig: Any = None, *, cmap: str = "viridis") -> Any:
    """A grid archive over 3 or 4 measures as panels of 2-D heatmaps; returns the figure.

    The first two measures are each panel's axes; the third (and fourth) measure index
    the panel columns (and rows). Outer measures with more than five bins are merged
    into five slices, each showing the best elite of its merged cells.
    """
    plt = _pyplot()
    d = archive.measure_dim
    if d not in (3, 4) or not hasattr(archive, "dims"):
        raise ValueError(f"grid_heatmaps draws grid archives over 3 or 4 measures, not {d}")
    values = _grid_values(archive)
    if d == 3:
        values = values[..., None]
    outer = [values.shape[2], values.shape[3]]
    slices = [np.array_split(np.arange(n), min(n, _MAX_PANELS)) for n in outer]
    cols, rows = len(slices[0]), len(slices[1])
    fig = fig or plt.figure(figsize=(2.6 * cols + 1.2, 2.4 * rows + 0.6))
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True, sharey=True)
    lo, hi = _limits(archive, None, None)
    bounds = archive.boundaries
    mesh = None
    for r, row_bins in enumerate(reversed(slices[1])):
        for c, col_bins in enumerate(slices[0]):
            block = values[:, :, col_bins][:, :, :, row_bins]
            panel = np.fmax.reduce(block.reshape(*block.shape[:2], -1), axis=2)  # NaN only where all empty
            ax = axes[r, c]
            mesh = ax.pcolormesh(bounds[0], bounds[1], panel.T, cmap=cmap, vmin=lo, vmax=hi)
            label = _slice_label(archive, 2, bounds[2], col_bins)
            if d == 4:
                label += "\n" + _slice_label(archive, 3, bounds[3], row_bins)
            ax.set_title(label, fontsize=7)
    for ax in axes[-1]:
        ax.set_xlabel(archive.measure_names[0])
    for ax in axes[:, 0]:
        ax.set_ylabel(archive.measure_names[1])
    fig.colorbar(mesh, ax=axes, label=archive.objective_name)
    return fig


def _slice_label(archive: Any, dim: int, bounds: np.ndarray, bins: np.ndarray) -> str:
    return f"{archive.measure_names[dim]} ∈ [{bounds[bins[0]]:.3g}, {bounds[bins[-1] + 1]:.3g})"


def plot_archive(archive: ArchiveBase, path: Any = None, *, title: str = "", cmap: str = "viridis") -> Any:
    """A complete figure of ``archive`` (heatmap, CVT map or panels); saved to ``path`` when given."""
    plt = _pyplot()
    if hasattr(archive, "dims") and archive.measure_dim in (3, 4):
        fig = grid_heatmaps(archive, cmap=cmap)
        if title:
            fig.suptitle(title)
    elif hasattr(archive, "dims") and archive.measure_dim > 4:
        raise ValueError(f"cannot draw a grid archive over {archive.measure_dim} measures (at most 4)")
    else:
        fig, ax = plt.subplots(figsize=(7, 6) if archive.measure_dim > 1 else (8, 2.4))
        heatmap(archive, ax=ax, cmap=cmap)
        if title:
            ax.set_title(title)
        fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
        plt.close(fig)
    return fig


def qd_curve(evaluations: Sequence[float], values: Sequence[float], ax: Any = None, *, label: str | None = None,
             ylabel: str = "QD score") -> Any:
    """Line plot of ``values`` (QD score by default) against evaluations; returns the axes."""
    plt = _pyplot()
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    ax.plot(evaluations, values, label=label)
    ax.set_xlabel("evaluations")
    ax.set_ylabel(ylabel)
    if label:
        ax.legend()
    ax.grid(alpha=0.3)
    return ax
