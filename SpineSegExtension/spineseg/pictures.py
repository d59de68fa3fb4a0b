"""The PNG pictures of a run: vertebrae over sagittal and coronal CT views, discs on their slab.

Drawn with matplotlib's object interface (``Figure`` and the Agg canvas), which
touches no global backend state. matplotlib is imported inside the functions:
a stock Slicer does not ship it, and the Slicer module never asks for a picture.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from .geometry import Grid, resample_to, working_grid
from .labels import vertebra_colour, vertebra_name
from .results import DiscsResult, VertebraeResult
from .volume import Volume

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["write_vertebrae_picture", "write_discs_picture"]

CT_WINDOW_HU = (-250, 1250)  # shows bone and soft tissue together


def _new_figure(width: float, height: float, dpi: int = 100, **options) -> "Figure":
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=dpi, **options)
    FigureCanvasAgg(figure)
    return figure


def _orientation_letters(axis, left: str, right: str, top: str, bottom: str, colour: str) -> None:
    """Patient directions at the edges of a view (R/L, A/P, S/I), as a radiology viewer shows them."""
    for text, x, y in ((left, 0.02, 0.5), (right, 0.98, 0.5), (top, 0.5, 0.98), (bottom, 0.5, 0.02)):
        axis.text(x, y, text, transform=axis.transAxes, color=colour, fontsize=10, fontweight="bold",
                  ha={0.02: "left", 0.98: "right"}.get(x, "center"), va={0.98: "top", 0.02: "bottom"}.get(y, "center"))


def _anatomical_views(image: Volume, labels: Volume) -> tuple[list[np.ndarray], list[np.ndarray], Grid]:
    """Mid-sagittal and coronal slices (head up) of image and labels, through the spine, and the grid they were
    cut from. The grid's axes point to R, A and S: the sagittal view has posterior on the left, the coronal view
    the patient's left."""
    grid = working_grid(image, max(1.0, float(image.spacing.min())))
    shown = resample_to(image, grid, fill_value=-1000.0).array
    shown_labels = resample_to(labels, grid).array
    bone = np.argwhere(shown_labels > 0)
    centre = bone.mean(axis=0).round().astype(int) if len(bone) else (np.array(grid.shape) // 2)
    sagittal = (shown[centre[0], :, :].T[::-1], shown_labels[centre[0], :, :].T[::-1])
    coronal = (shown[:, centre[1], :].T[::-1], shown_labels[:, centre[1], :].T[::-1])
    return [sagittal[0], coronal[0]], [sagittal[1], coronal[1]], grid


def _canal_in_views(line_ras: np.ndarray, grid: Grid) -> list[tuple[np.ndarray, np.ndarray]]:
    """The canal's centre line as (columns, rows) of the sagittal and coronal views of ``_anatomical_views``."""
    ijk = (line_ras - grid.affine[:3, 3]) @ np.linalg.inv(grid.affine[:3, :3]).T
    rows = grid.shape[2] - 1 - ijk[:, 2]
    return [(ijk[:, 1], rows), (ijk[:, 0], rows)]


def write_vertebrae_picture(image: Volume, result: VertebraeResult, path: str | os.PathLike, title: str = "") -> None:
    """Sagittal and coronal views with coloured, named vertebrae and the spinal canal's centre line (cyan)."""
    images, label_slices, grid = _anatomical_views(image, result.label_map)
    spacing = grid.spacing
    canal = [None, None] if result.canal_line_ras is None else _canal_in_views(result.canal_line_ras, grid)
    figure = _new_figure(10, 7, facecolor="black")
    axes = figure.subplots(1, 2)
    letters = [("P", "A"), ("L", "R")]  # left and right edges of the sagittal and coronal views
    for axis, view, labels, name, (left, right), line in zip(axes, images, label_slices, ["sagittal", "coronal"],
                                                             letters, canal):
        axis.imshow(view, cmap="gray", vmin=CT_WINDOW_HU[0], vmax=CT_WINDOW_HU[1], aspect=spacing[2] / spacing[1])
        overlay = np.zeros(labels.shape + (4,))
        for record in result.vertebrae:
            where = labels == record.level
            if not where.any():
                continue
            overlay[where] = (*vertebra_colour(record.level), 0.45)
            row, column = np.argwhere(where).mean(axis=0)
            axis.text(column, row, vertebra_name(record.level), color="white", fontsize=8,
                      ha="center", va="center", fontweight="bold")
        axis.imshow(overlay, aspect=spacing[2] / spacing[1])
        if line is not None:
            axis.plot(*line, color="cyan", linewidth=1.0, alpha=0.8)
            axis.set_xlim(-0.5, view.shape[1] - 0.5)
            axis.set_ylim(view.shape[0] - 0.5, -0.5)
        axis.set_title(name, color="white")
        _orientation_letters(axis, left, right, "S", "I", "yellow")
        axis.axis("off")
    if title:
        figure.suptitle(title, color="white")
    figure.tight_layout()
    figure.savefig(str(path), facecolor="black", format="png")


def write_discs_picture(result: DiscsResult, path: str | os.PathLike, title: str = "") -> None:
    """The slab (head up, front left) with one labelled dot per disc."""
    figure = _new_figure(6, 6.4, dpi=110)
    axes = figure.add_subplot(1, 1, 1)
    slab = np.zeros((8, 8)) if result.slab is None else result.slab
    axes.imshow(slab, cmap="gray", vmin=float(np.percentile(slab, 1)), vmax=float(np.percentile(slab, 99.5)))
    if result.slab_to_ras is not None and result.discs:
        matrix = np.asarray(result.slab_to_ras)
        for disc in result.discs:
            ras = np.asarray(disc.position_ras)
            row = (ras[2] - matrix[2, 2]) / matrix[2, 0]
            col = (ras[1] - matrix[1, 2]) / matrix[1, 1]
            axes.plot(col, row, "o", color="#ff4040", markersize=4)
            axes.annotate(f"{disc.name} ({disc.confidence:.2f})", (col, row), xytext=(8, 0),
                          textcoords="offset points", color="#ffff60", fontsize=7, va="center")
    if result.slab_to_ras is not None:  # column -> A (row 1, column 1), row -> S (row 2, column 0)
        matrix = np.asarray(result.slab_to_ras)
        left, right = ("A", "P") if matrix[1, 1] < 0 else ("P", "A")
        top, bottom = ("S", "I") if matrix[2, 0] < 0 else ("I", "S")
        _orientation_letters(axes, left, right, top, bottom, "#60ff60")
    axes.set_title(title or f"{len(result.discs)} discs (mid-sagittal slab)", fontsize=9)
    axes.set_axis_off()
    figure.tight_layout()
    figure.savefig(str(path), format="png")
