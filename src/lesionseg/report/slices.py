"""Orthogonal slices of volumes with label outlines, as PNG (matplotlib, Agg, no pyplot).

Arrays are canonical RAS (axis 0 left→right, 1 posterior→anterior, 2 inferior→superior)
and shown in neurological convention: the subject's left on the left of the axial and
coronal views, anterior up in axial views, superior up in coronal and sagittal views.
Pixel aspect follows the voxel spacing, so thick-slice data look thick.

:func:`slices_figure` draws whole subjects (channels × views); :func:`lesion_views` and
:func:`overview` draw the small per-lesion and per-case pictures of the report pages
(:mod:`lesionseg.report.html`) and return PNG bytes, ready to inline.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cc3d
import numpy as np
from matplotlib import patheffects
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


#: Outline of every lesion in the report pictures.
LESION_OUTLINE = "#ff3030"
#: Outline of the lesion a picture is about (distinct from :data:`LESION_OUTLINE`).
CHOSEN_OUTLINE = "#ffff00"
#: The report pictures' grey window: percentiles of the non-zero image voxels.
REPORT_WINDOW = (1.0, 99.0)


def report_window(image: np.ndarray) -> tuple[float, float]:
    """The grey window of the report pictures (1–99th percentile of non-zero voxels).

    Args:
        image: 3D image.

    Returns:
        ``(low, high)`` display range.
    """
    # A strided sample gives the same percentiles to display precision and keeps a
    # 1 mm whole-head volume (16 M voxels) from costing more than the pictures.
    step = max(1, int(round((image.size / 2e6) ** (1 / 3))))
    return intensity_window(image[::step, ::step, ::step], *REPORT_WINDOW)


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    # No "Software" text chunk: the pages must not mention any URL, not even in metadata.
    fig.savefig(buffer, format="png", facecolor=fig.get_facecolor(), metadata={"Software": None})
    return buffer.getvalue()


def _outline(ax, mask: np.ndarray, extent: Sequence[float], colour: str, width: float) -> None:
    """Outline a 2D mask (already transposed for ``origin="lower"``) on ``ax``."""
    if mask.any() and not mask.all():
        ax.contour(
            mask.astype(np.float32),
            levels=[0.5],
            colors=[colour],
            linewidths=width,
            origin="lower",
            extent=extent,
        )


#: Array axes shown horizontally and vertically in each view (see :func:`view_slice`).
VIEW_AXES = {"axial": (0, 1), "coronal": (0, 2), "sagittal": (1, 2)}


def _mm_extent(box: Sequence[slice], view: str, spacing: Sequence[float]) -> tuple[float, ...]:
    """``imshow`` extent (mm) of a cropped slice: pixel edges, so aspect follows spacing."""
    horizontal, vertical = VIEW_AXES[view]
    h, v = box[horizontal], box[vertical]
    sh, sv = float(spacing[horizontal]), float(spacing[vertical])
    return ((h.start - 0.5) * sh, (h.stop - 0.5) * sh, (v.start - 0.5) * sv, (v.stop - 0.5) * sv)


def _draw_report_view(
    ax,
    image: np.ndarray,
    numbered: np.ndarray,
    view: str,
    centre: Sequence[int],
    box: Sequence[slice],
    spacing: Sequence[float],
    window: tuple[float, float],
    chosen: int | None,
    limits: tuple[float, float, float, float] | None = None,
) -> None:
    """One cropped slice with every lesion outlined, ``chosen`` in the bright colour.

    ``limits`` (mm, ``x0, x1, y0, y1``) fixes the shown area: a window that runs past the
    array stays centred on its lesion, the outside in black.
    """
    local = tuple(int(c) - s.start for c, s in zip(centre, box))
    crop = tuple(box)
    grey = view_slice(image[crop], view, local)
    section = view_slice(numbered[crop], view, local)
    extent = _mm_extent(box, view, spacing)
    ax.set_facecolor("black")
    ax.imshow(
        grey,
        cmap="gray",
        origin="lower",
        vmin=window[0],
        vmax=window[1],
        extent=extent,
        interpolation="nearest",
    )
    others = (section > 0) if chosen is None else (section > 0) & (section != chosen)
    _outline(ax, others, extent, LESION_OUTLINE, 0.8)
    if chosen is not None:
        _outline(ax, section == chosen, extent, CHOSEN_OUTLINE, 1.2)
    if limits is not None:
        ax.set_xlim(limits[0], limits[1])
        ax.set_ylim(limits[2], limits[3])
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def _window_box(
    centre: Sequence[int], half_mm: Sequence[float], spacing: Sequence[float], shape
) -> tuple[slice, ...]:
    """Voxel box of ``±half_mm`` around ``centre``, clipped to the array."""
    box = []
    for c, h, s, n in zip(centre, half_mm, spacing, shape):
        r = int(np.ceil(h / float(s)))
        box.append(slice(max(int(c) - r, 0), min(int(c) + r + 1, int(n))))
    return tuple(box)


def lesion_point(
    numbered: np.ndarray, lesion_id: int, voxels: np.ndarray | None = None
) -> np.ndarray:
    """The voxel where views of a lesion cross: its centroid, or the nearest lesion voxel.

    The centroid of a C-shaped or ring lesion lies outside it; views through it would
    miss the lesion, so the nearest voxel of the lesion is taken instead.

    Args:
        numbered: Numbered lesion map.
        lesion_id: The lesion.
        voxels: Its voxel indices (``np.argwhere(numbered == lesion_id)``), if known.

    Returns:
        Voxel index (int array of 3).

    Raises:
        ValueError: There is no lesion ``lesion_id``.
    """
    if voxels is None:
        voxels = np.argwhere(numbered == lesion_id)
    if voxels.size == 0:
        raise ValueError(f"no lesion {lesion_id} in the numbered map")
    centre = np.rint(voxels.mean(axis=0)).astype(int)
    if numbered[tuple(centre)] != lesion_id:
        centre = voxels[np.argmin(((voxels - centre) ** 2).sum(axis=1))]
    return centre


def lesion_views(
    image: np.ndarray,
    numbered: np.ndarray,
    lesion_id: int,
    spacing: tuple[float, float, float],
    size_mm: float = 60.0,
    *,
    window: tuple[float, float] | None = None,
) -> bytes:
    """Axial, coronal and sagittal slices through one lesion, as a small PNG (~600×220 px).

    The views cross at the lesion's centroid (moved to its nearest voxel when the
    centroid falls outside it, as in a C-shaped lesion, so the lesion is always on
    screen) and are cropped to about ``size_mm`` around it, widened to hold the whole
    lesion plus a margin. Every lesion is outlined in :data:`LESION_OUTLINE`, this one
    in :data:`CHOSEN_OUTLINE`.

    Args:
        image: 3D image (canonical RAS), shown in grey.
        numbered: Numbered lesion map of the same shape (0 background, 1… lesions).
        lesion_id: The lesion to show.
        spacing: Voxel size (mm) along each axis.
        size_mm: Side of the window (mm).
        window: Grey display range (default: :func:`report_window` of ``image``; pass
            it to give every picture of a case the same contrast and compute it once).

    Returns:
        PNG bytes.

    Raises:
        ValueError: Shapes differ, or there is no lesion ``lesion_id``.
    """
    if image.shape != numbered.shape or image.ndim != 3:
        raise ValueError(f"image {image.shape} and lesions {numbered.shape} must be 3D alike")
    voxels = np.argwhere(numbered == lesion_id)
    centre = lesion_point(numbered, lesion_id, voxels)
    spacing = tuple(float(s) for s in spacing)
    # Half-window per axis in mm: the asked size, or more for a lesion that is larger.
    reach = np.maximum(np.abs(voxels - centre).max(axis=0) * spacing + 10.0, size_mm / 2)
    box = _window_box(centre, reach, spacing, image.shape)
    window = window or report_window(image)
    fig = Figure(figsize=(6.0, 2.2), dpi=100)
    fig.patch.set_facecolor("black")
    axes = fig.subplots(1, 3)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.02, top=0.88, wspace=0.04)
    x, y, z = (int(c) for c in centre)
    titles = {"axial": f"axial z={z}", "coronal": f"coronal y={y}", "sagittal": f"sagittal x={x}"}
    # Orientation letter in the top right corner (off the lesion, which is centred).
    right_letter = {"axial": "R", "coronal": "R", "sagittal": "A"}
    centre_mm = centre * np.asarray(spacing)
    for ax, view in zip(axes, VIEWS):
        h, v = VIEW_AXES[view]
        limits = (
            centre_mm[h] - reach[h],
            centre_mm[h] + reach[h],
            centre_mm[v] - reach[v],
            centre_mm[v] + reach[v],
        )
        _draw_report_view(
            ax, image, numbered, view, centre, box, spacing, window, lesion_id, limits
        )
        ax.set_title(titles[view], fontsize=7, color="white", pad=2)
        ax.text(
            0.97,
            0.97,
            right_letter[view],
            transform=ax.transAxes,
            color="white",
            fontsize=7,
            ha="right",
            va="top",
            # A black edge keeps the letter readable over bright tissue.
            path_effects=[patheffects.withStroke(linewidth=1.5, foreground="black")],
        )
    return _png(fig)


def overview(
    image: np.ndarray,
    numbered: np.ndarray,
    spacing: tuple[float, float, float],
    slices: int = 6,
    *,
    window: tuple[float, float] | None = None,
) -> bytes:
    """A row of axial slices across the brain with every lesion outlined, as PNG.

    Args:
        image: 3D image (canonical RAS).
        numbered: Numbered (or any non-zero = lesion) map of the same shape.
        spacing: Voxel size (mm) along each axis.
        slices: Number of axial slices, evenly spaced over the non-zero extent of the
            image (its middle 80 %, where a brain has most of its area).
        window: Grey display range (default: :func:`report_window` of ``image``).

    Returns:
        PNG bytes.

    Raises:
        ValueError: Shapes differ.
    """
    if image.shape != numbered.shape or image.ndim != 3:
        raise ValueError(f"image {image.shape} and lesions {numbered.shape} must be 3D alike")
    box = _crop_box(image)
    z0, z1 = box[2].start, box[2].stop - 1
    margin = 0.1 * (z1 - z0)
    levels = np.unique(np.rint(np.linspace(z0 + margin, z1 - margin, max(int(slices), 1))))
    window = window or report_window(image)
    spacing = tuple(float(s) for s in spacing)
    fig = Figure(figsize=(1.5 * len(levels), 1.8), dpi=100)
    fig.patch.set_facecolor("black")
    axes = np.atleast_1d(fig.subplots(1, len(levels)))
    fig.subplots_adjust(left=0.005, right=0.995, bottom=0.01, top=0.88, wspace=0.02)
    for ax, z in zip(axes, levels.astype(int)):
        centre = (box[0].start, box[1].start, int(z))
        _draw_report_view(ax, image, numbered, "axial", centre, box, spacing, window, None)
        ax.set_title(f"z={z}", fontsize=7, color="white", pad=2)
    return _png(fig)
