"""Summaries of images, label maps and data sets (what ``lesionseg info`` prints)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cc3d
import numpy as np

from lesionseg.data.dataset import Dataset
from lesionseg.data.nifti import Volume, load_nifti
from lesionseg.errors import LesionsegError

#: Integer images with at most this many distinct values are summarised as label maps.
MAX_LABEL_VALUES = 32


@dataclass
class LabelSummary:
    """Voxel counts per label and lesion statistics of a label map.

    Attributes:
        counts: Label value → number of voxels.
        lesion_volume_ml: Volume of all non-zero voxels in ml.
        lesions: Number of connected lesions (non-zero voxels, 26-connectivity).
    """

    counts: dict[int, int]
    lesion_volume_ml: float
    lesions: int


def looks_like_labels(data: np.ndarray) -> bool:
    """True for integer-valued arrays with few distinct non-negative values."""
    if np.issubdtype(data.dtype, np.floating) and not np.all(np.mod(data, 1) == 0):
        return False
    values = np.unique(data)
    return len(values) <= MAX_LABEL_VALUES and values.min() >= 0


def summarize_labels(volume: Volume, connectivity: int = 26) -> LabelSummary:
    """Counts per label, lesion volume (ml) and number of connected lesions."""
    data = np.rint(volume.data).astype(np.int64)
    values, counts = np.unique(data, return_counts=True)
    foreground = data > 0
    lesions = int(cc3d.connected_components(foreground, connectivity=connectivity).max())
    volume_ml = float(foreground.sum()) * volume.grid.voxel_volume_ml()
    return LabelSummary(dict(zip(values.tolist(), counts.tolist())), volume_ml, lesions)


def describe_volumes(path: str | Path, count: int) -> list[str]:
    """Lines describing a 4D file (lesionseg's ``_prob.nii.gz``, a Decathlon v1 image).

    The geometry, then one line per volume; maps that sum to 1 in every voxel are called
    class probabilities, with the voxels where each class is the most probable.
    """
    import nibabel as nib

    first = load_nifti(path, dtype=np.float32, volume=0)  # validates the file and its grid
    lines = describe_volume(path, first)[:5]
    lines[1] = f"shape:        {' × '.join(map(str, first.grid.shape))} × {count} volumes"
    # one read of the whole file (a volume at a time would decompress it once per volume)
    stack = np.moveaxis(np.asarray(nib.load(str(path)).dataobj, dtype=np.float32), -1, 0)
    probabilities = stack.min() >= 0 and np.allclose(stack.sum(0), 1, atol=1e-3)
    winner = np.argmax(stack, axis=0) if probabilities else None
    if probabilities:
        lines.append(f"contents:     {count} class probability maps (they sum to 1)")
    for k, data in enumerate(stack):
        line = f"volume {k}:     min {data.min():.4g}, max {data.max():.4g}, mean {data.mean():.4g}"
        if winner is not None:
            line += f"; most probable in {int((winner == k).sum())} voxels"
        lines.append(line)
    return lines


def describe_volume(path: str | Path, volume: Volume | None = None) -> list[str]:
    """Lines describing one NIfTI file: geometry, intensities or labels (4D: per volume)."""
    import nibabel as nib

    if volume is None:
        shape = nib.load(str(path)).shape if Path(path).is_file() else ()
        if len(shape) == 4 and shape[3] > 1:
            return describe_volumes(path, int(shape[3]))
    volume = volume or load_nifti(path, dtype=None, allow_nonfinite=True)
    grid = volume.grid
    spacing = " × ".join(f"{s:.3g}" for s in grid.spacing)
    lines = [
        f"file:         {volume.path}",
        f"shape:        {' × '.join(map(str, grid.shape))}",
        f"spacing:      {spacing} mm",
        f"orientation:  {grid.orientation} (qform code {int(grid.header['qform_code'])}, "
        f"sform code {int(grid.header['sform_code'])})",
        f"data type:    {volume.data.dtype}",
    ]
    data = volume.data
    finite = np.isfinite(data)
    if not finite.all():
        lines.append(f"non-finite:   {int((~finite).sum())} voxels (NaN/Inf)")
    if not finite.any():
        lines.append("intensities:  none finite (every voxel is NaN or Inf)")
    elif looks_like_labels(data[finite]):
        summary = summarize_labels(Volume(np.where(finite, data, 0), grid))
        counts = ", ".join(f"{k}: {v}" for k, v in summary.counts.items())
        lines += [
            f"labels:       {counts}",
            f"lesion volume: {summary.lesion_volume_ml:.3f} ml",
            f"lesions:      {summary.lesions} connected (26-connectivity)",
        ]
    else:
        values = data[finite]
        nonzero = 100 * np.count_nonzero(values) / values.size
        lines.append(
            f"intensities:  min {values.min():.4g}, max {values.max():.4g}, "
            f"mean {values.mean():.4g}, non-zero {nonzero:.1f}%"
        )
    return lines


def describe_folder(folder: str | Path) -> list[str]:
    """One line per NIfTI file of a plain folder (no dataset.json): shape and spacing."""
    import nibabel as nib

    from lesionseg.data.nifti import is_nifti_path

    files = sorted(p for p in Path(folder).iterdir() if is_nifti_path(p))
    if not files:
        raise LesionsegError("no dataset.json and no NIfTI files in this folder", folder)
    lines = [f"folder:       {folder} ({len(files)} NIfTI file(s), no dataset.json)"]
    for path in files:
        image = nib.load(str(path))
        zooms = " × ".join(f"{z:.3g}" for z in image.header.get_zooms()[:3])
        lines.append(f"  {path.name}: {' × '.join(map(str, image.shape))}, {zooms} mm")
    return lines


def describe_dataset(dataset: Dataset) -> list[str]:
    """Lines describing a data set: channels, labels, splits and one row per subject."""
    lines = [
        f"data set:     {dataset.name} ({dataset.root})",
        f"channels:     {', '.join(dataset.channel_names)}",
        f"labels:       {', '.join(f'{k}={v}' for k, v in dataset.labels.items())}",
        f"subjects:     {len(dataset.split('train'))} train, {len(dataset.split('test'))} test",
        "",
        f"{'subject':<20} {'split':<6} {'shape':<16} {'spacing (mm)':<18} {'orient':<6} "
        f"{'lesion ml':>10} {'lesions':>8}",
    ]
    for subject in dataset.subjects:
        first = next(iter(subject.channels))
        image = load_nifti(subject.channels[first], dtype=None, volume=subject.volumes.get(first))
        grid = image.grid
        volume_ml, lesions = "-", "-"
        if subject.label is not None:
            summary = summarize_labels(load_nifti(subject.label, dtype=None))
            volume_ml, lesions = f"{summary.lesion_volume_ml:.2f}", str(summary.lesions)
        shape = "×".join(map(str, grid.shape))
        spacing = "×".join(f"{s:.3g}" for s in grid.spacing)
        lines.append(
            f"{subject.id:<20} {subject.split:<6} {shape:<16} {spacing:<18} "
            f"{grid.orientation:<6} {volume_ml:>10} {lesions:>8}"
        )
    return lines
