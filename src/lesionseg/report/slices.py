"""Orthogonal slices of volumes with label outlines, as PNG (matplotlib, Agg, no pyplot).

Arrays are canonical RAS (axis 0 left→right, 1 posterior→anterior, 2 inferior→superior)
and shown in neurological convention: the subject's left on the left of the axial and
coronal views, anterior up in axial views, superior up in coronal and sagittal views.
Pixel aspect follows the voxel spacing, so thick-slice data look thick.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cc3d
import numpy as np
from matplotlib.figure import Figure

from lesionseg.data.atomic import atomic_path

#: Outline colour per label value (cycled for more labels).
LABEL_COLOURS = ("#ff3030", "#30d030", "#ffd000", "#30a0ff", "#ff40ff", "#ff9000")
VIEWS = ("axial", "coronal", "sagittal")


@dataclass
class SliceRow:
    """One row of a slice figure: a subject's channels and its label map.

    Attributes:
        title: Row title (e.g. the task or case id).
        images: Channel name → 3D array (canonical RAS), all the same shape.
        spacing: Voxel size (mm) along each axis.
        label: Optional label map whose non-zero values are outlined.
        main: Channel shown in three orthogonal views (default: the first); the
            others are shown in the axial view only.
        centre: Voxel where the views cross (default: centre of the largest lesion).
        label_names: Optional label value → name for the legend.
    """

    title: str
    images: dict[str, np.ndarray]
    spacing: Sequence[float]
    label: np.ndarray | None = None
    main: str | None = None
    centre: tuple[int, int, int] | None = None
    label_names: dict[int, str] = field(default_factory=dict)


def lesion_centre(label: np.ndarray | None, fallback: np.ndarray | None = None) -> tuple[int, ...]:
    """Voxel at the centre of mass of the largest connected lesion.

    Falls back to the centre of mass of ``fallback`` (e.g. a brain mask), then to
    the middle of the array, when there is no lesion.
    """
    if label is not None and np.any(label):
        components = cc3d.connected_components(label > 0, connectivity=26)
        stats = cc3d.statistics(components)
        counts = np.asarray(stats["voxel_counts"])
        counts[0] = 0
        centroid = stats["centroids"][int(np.argmax(counts))]
        return tuple(int(round(c)) for c in centroid)
    if fallback is not None and np.any(fallback):
        return tuple(int(round(c)) for c in np.argwhere(fallback).mean(axis=0))
    shape = label.shape if label is not None else fallback.shape
    return tuple(n // 2 for n in shape)


def view_slice(volume: np.ndarray, view: str, centre: Sequence[int]) -> np.ndarray:
    """The 2D slice of ``view`` through ``centre``, transposed for ``imshow(origin="lower")``."""
    x, y, z = (int(c) for c in centre)
    if view == "axial":
        return volume[:, :, z].T
    if view == "coronal":
        return volume[:, y, :].T
    if view == "sagittal":
        return volume[x, :, :].T
    raise ValueError(f"unknown view {view!r}")


def view_aspect(view: str, spacing: Sequence[float]) -> float:
    """Pixel height/width ratio of ``view`` for ``imshow(aspect=...)``."""
    sx, sy, sz = (float(s) for s in spacing)
    return {"axial": sy / sx, "coronal": sz / sx, "sagittal": sz / sy}[view]


def intensity_window(
    volume: np.ndarray, low: float = 0.5, high: float = 99.5
) -> tuple[float, float]:
    """Display range: percentiles of the non-zero voxels (whole range if all zero)."""
    values = volume[volume != 0]
    if values.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(values, [low, high])
    return float(lo), float(hi if hi > lo else lo + 1)


def draw_view(
    ax,
    volume: np.ndarray,
    view: str,
    centre: Sequence[int],
    spacing: Sequence[float],
    label: np.ndarray | None = None,
    window: tuple[float, float] | None = None,
    title: str | None = None,
) -> None:
    """Draw one slice of ``volume`` with the outline of every label value on ``ax``."""
    window = window or intensity_window(volume)
    aspect = view_aspect(view, spacing)
    ax.imshow(
        view_slice(volume, view, centre),
        cmap="gray",
        origin="lower",
        vmin=window[0],
        vmax=window[1],
        aspect=aspect,
        interpolation="nearest",
    )
    if label is not None:
        section = view_slice(label, view, centre)
        for value in np.unique(section[section > 0]):
            colour = LABEL_COLOURS[(int(value) - 1) % len(LABEL_COLOURS)]
            ax.contour(
                (section == value).astype(np.float32),
                levels=[0.5],
                colors=[colour],
                linewidths=0.8,
                origin="lower",
            )
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        ax.set_title(title, fontsize=8)


def _crop_box(volume: np.ndarray, margin: int = 2) -> tuple[slice, ...]:
    """Bounding box of the non-zero voxels plus a margin (the whole array if empty)."""
    nonzero = np.argwhere(volume != 0)
    if nonzero.size == 0:
        return tuple(slice(0, n) for n in volume.shape)
    lo = np.maximum(nonzero.min(axis=0) - margin, 0)
    hi = np.minimum(nonzero.max(axis=0) + margin + 1, volume.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def slices_figure(rows: Sequence[SliceRow], panel_inches: float = 2.0) -> Figure:
    """A figure with one row per :class:`SliceRow`.

    Each row shows its main channel in axial, coronal and sagittal views, then every
    other channel in the axial view, all with the label outlines. Views are cropped
    to the non-zero part of the main channel.
    """
    if not rows:
        raise ValueError("no rows to draw")
    ncols = max(3 + len(row.images) - 1 for row in rows)
    fig = Figure(figsize=(panel_inches * ncols + 0.3, panel_inches * len(rows)), dpi=100)
    fig.patch.set_facecolor("black")
    axes = fig.subplots(len(rows), ncols, squeeze=False)
    fig.subplots_adjust(left=0.04, right=0.995, bottom=0.01, top=0.97, wspace=0.02, hspace=0.12)
    for r, row in enumerate(rows):
        main = row.main or next(iter(row.images))
        box = _crop_box(row.images[main])
        images = {name: image[box] for name, image in row.images.items()}
        label = None if row.label is None else row.label[box]
        if row.centre is not None:
            centre = tuple(int(c) - s.start for c, s in zip(row.centre, box))
        else:
            centre = lesion_centre(label, images[main] != 0)
        panels = [(main, view) for view in VIEWS]
        panels += [(name, "axial") for name in images if name != main]
        for c, ax in enumerate(axes[r]):
            ax.set_facecolor("black")
            if c >= len(panels):
                ax.axis("off")
                continue
            name, view = panels[c]
            window = intensity_window(row.images[name])
            draw_view(ax, images[name], view, centre, row.spacing, label, window, f"{name} {view}")
            ax.title.set_color("white")
        legend = row.title
        if row.label_names:
            names = ", ".join(f"{v} {n}" for v, n in sorted(row.label_names.items()) if v > 0)
            legend = f"{legend}\n{names}"
        axes[r][0].text(
            -0.08,
            0.5,
            legend,
            transform=axes[r][0].transAxes,
            color="white",
            fontsize=6,
            rotation=90,
            va="center",
            ha="center",
        )
    return fig


def save_slices(rows: Sequence[SliceRow], path: str | Path, overwrite: bool = True) -> Path:
    """Draw :func:`slices_figure` and write it (PNG, atomically) to ``path``."""
    path = Path(path)
    fig = slices_figure(rows)
    with atomic_path(path, overwrite=overwrite) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", facecolor="black")
    return path
