"""Preprocess one subject: validate, reorient, mask, crop, bias-correct, resample, normalise.

The result is a :class:`PreprocessedSubject` with channel-first float32 arrays on
the preprocessed grid and the :class:`~lesionseg.preprocess.record.PreprocessRecord`
that maps outputs back onto the input grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields

import numpy as np
from scipy import ndimage

from lesionseg.data.dataset import Subject
from lesionseg.data.nifti import Volume, load_nifti, to_canonical
from lesionseg.data.validate import (
    check_label_values,
    check_mask_not_empty,
    check_not_empty,
    check_same_grid,
)
from lesionseg.errors import LesionsegError
from lesionseg.preprocess.bias import n4_correct
from lesionseg.preprocess.crop import bounding_box
from lesionseg.preprocess.normalize import zscore
from lesionseg.preprocess.record import PreprocessRecord
from lesionseg.preprocess.resample import resample_to_shape, resampled_affine, resampled_shape


@dataclass(frozen=True)
class PreprocessConfig:
    """Preprocessing settings, stored in recipes and with every trained model.

    Attributes:
        target_spacing: Voxel size (mm) to resample to, per axis of the canonical
            (RAS) array; None entries keep that axis (in-plane resampling for thick
            slices: ``(1.0, 1.0, None)``); None keeps the input spacing.
        crop_margin: Voxels kept around the brain's bounding box.
        target_shape: Size to resize the cropped volume to, per axis (None entries keep
            that axis), e.g. ``(192, 192, None)`` for 2D networks of a fixed in-plane size
            (D-UNet): the brain box is stretched to the network size, and outputs are
            resized back. Applied after ``target_spacing``.
        n4: Apply N4 bias-field correction.
        normalize: ``"zscore"`` (per channel over the brain mask) or ``"none"``.
        mask_from: ``"nonzero"`` (union of non-zero voxels of all channels) when no mask file.
    """

    target_spacing: tuple[float | None, float | None, float | None] | None = None
    crop_margin: int = 4
    target_shape: tuple[int | None, int | None, int | None] | None = None
    n4: bool = False
    normalize: str = "zscore"
    mask_from: str = "nonzero"

    @classmethod
    def from_dict(cls, data: dict | None) -> PreprocessConfig:
        """Build from a recipe section, rejecting unknown keys with a clear error."""
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise LesionsegError(
                f"preprocess: unknown option(s) {unknown} (known: {sorted(known)})"
            )
        spacing = data.get("target_spacing")
        if spacing is not None:
            if np.isscalar(spacing):
                spacing = (spacing,) * 3
            if len(spacing) != 3:
                raise LesionsegError("preprocess.target_spacing needs 3 values (or one)")
            data["target_spacing"] = tuple(None if s is None else float(s) for s in spacing)
        shape = data.get("target_shape")
        if shape is not None:
            if len(shape) != 3 or any(s is not None and int(s) < 1 for s in shape):
                raise LesionsegError("preprocess.target_shape needs 3 positive sizes (or null)")
            data["target_shape"] = tuple(None if s is None else int(s) for s in shape)
        if data.get("normalize", "zscore") not in ("zscore", "none"):
            raise LesionsegError("preprocess.normalize must be 'zscore' or 'none'")
        return cls(**data)

    def to_dict(self) -> dict:
        """Plain dict for JSON/YAML."""
        data = asdict(self)
        for key in ("target_spacing", "target_shape"):
            if data[key] is not None:
                data[key] = list(data[key])
        return data


@dataclass
class PreprocessedSubject:
    """A subject on the preprocessed grid.

    Attributes:
        id: Case identifier.
        image: ``(C, X, Y, Z)`` float32, channels in the requested order.
        label: ``(X, Y, Z)`` uint8 label map, or None.
        mask: ``(X, Y, Z)`` uint8 brain mask.
        spacing: Voxel size in mm.
        record: What was done, with the inverse.
        channel_names: Channel order of ``image``.
        split: ``"train"`` or ``"test"``.
    """

    id: str
    image: np.ndarray
    label: np.ndarray | None
    mask: np.ndarray
    spacing: tuple[float, float, float]
    record: PreprocessRecord
    channel_names: list[str]
    split: str = "train"


def load_subject_volumes(
    subject: Subject,
    channel_names: Sequence[str],
    labels: Sequence[int] | None = None,
) -> tuple[list[Volume], Volume | None, Volume | None]:
    """Load and validate a subject's channels (in ``channel_names`` order), label and mask.

    Raises:
        LesionsegError: A missing channel, a file that cannot be read, grids that
            differ, an all-zero image, an empty mask, or labels outside ``labels``.
    """
    missing = [c for c in channel_names if c not in subject.channels]
    if missing:
        have = ", ".join(subject.channels) or "none"
        raise LesionsegError(
            f"subject {subject.id!r} lacks channel(s) {', '.join(missing)} (it has: {have})"
        )
    volumes = [
        load_nifti(subject.channels[name], volume=subject.volumes.get(name))
        for name in channel_names
    ]
    first, first_name = volumes[0], channel_names[0]
    for name, volume in zip(channel_names, volumes):
        check_not_empty(volume, f"{name} image")
        if volume is not first:
            check_same_grid(volume, first.grid, f"{name} image", first_name)
    label = None
    if subject.label is not None:
        label = load_nifti(subject.label, dtype=None)
        check_same_grid(label, first.grid, "label map", first_name)
        if labels is not None:
            check_label_values(label, labels)
    mask = None
    if subject.mask is not None:
        mask = load_nifti(subject.mask, dtype=None)
        check_same_grid(mask, first.grid, "brain mask", first_name)
        check_mask_not_empty(mask.data, mask.path)
    return volumes, label, mask


def preprocess_subject(
    subject: Subject,
    channel_names: Sequence[str],
    config: PreprocessConfig | None = None,
    labels: Sequence[int] | None = None,
) -> PreprocessedSubject:
    """Load, validate and preprocess one subject.

    Args:
        subject: The subject's files.
        channel_names: Channels to use, in this order.
        config: Preprocessing settings (defaults: crop, z-score, no resampling).
        labels: Allowed label values (checked when the subject has a label map).
    """
    config = config or PreprocessConfig()
    volumes, label_volume, mask_volume = load_subject_volumes(subject, channel_names, labels)
    canonical = [to_canonical(v)[0] for v in volumes]
    reo_grid = canonical[0].grid
    image = np.stack([v.data for v in canonical]).astype(np.float32)
    steps = ["reorient"]

    if mask_volume is not None:
        mask = to_canonical(mask_volume)[0].data > 0
        steps.append("mask:given")
    else:
        mask = ndimage.binary_fill_holes(np.any(image != 0, axis=0))
        check_mask_not_empty(mask, subject.channels[channel_names[0]])
        steps.append("mask:nonzero")
    label = None
    if label_volume is not None:
        label = np.rint(to_canonical(label_volume)[0].data).astype(np.uint8)

    box = bounding_box(mask, config.crop_margin)
    image, mask = image[(slice(None), *box)], mask[box]
    label = None if label is None else label[box]
    cropped_shape = mask.shape
    crop_affine = reo_grid.affine.copy()
    crop_affine[:3, 3] = reo_grid.affine[:3, :3] @ [b.start for b in box] + reo_grid.affine[:3, 3]
    steps.append("crop")

    spacing = reo_grid.spacing
    if config.n4:
        image = np.stack([n4_correct(c, mask, spacing) for c in image])
        steps.append("n4")

    out_shape = cropped_shape
    affine = crop_affine
    if config.target_spacing is not None or config.target_shape is not None:
        if config.target_spacing is not None:
            out_shape = resampled_shape(cropped_shape, spacing, config.target_spacing)
        if config.target_shape is not None:
            out_shape = tuple(o if t is None else t for o, t in zip(out_shape, config.target_shape))
        image = resample_to_shape(image, out_shape, order=1)
        mask = resample_to_shape(mask.astype(np.uint8), out_shape, order=0).astype(bool)
        label = None if label is None else resample_to_shape(label, out_shape, order=0)
        affine = resampled_affine(crop_affine, cropped_shape, out_shape)
        spacing = tuple(float(s) for s in np.sqrt((affine[:3, :3] ** 2).sum(axis=0)))
        steps.append("resample")

    stats: list[tuple[float, float]] = []
    if config.normalize == "zscore":
        image, stats = zscore(image, mask)
        steps.append("zscore")

    grid = volumes[0].grid
    record = PreprocessRecord(
        original_shape=list(grid.shape),
        original_affine=np.asarray(grid.affine).tolist(),
        qform_code=int(grid.header["qform_code"]),
        sform_code=int(grid.header["sform_code"]),
        canonical_shape=list(reo_grid.shape),
        crop_box=[[b.start, b.stop] for b in box],
        cropped_shape=list(cropped_shape),
        resampled_shape=list(out_shape),
        spacing=[float(s) for s in spacing],
        affine=np.asarray(affine).tolist(),
        channel_stats=[list(s) for s in stats],
        steps=steps,
        _grid=grid,
    )
    return PreprocessedSubject(
        id=subject.id,
        image=np.ascontiguousarray(image, dtype=np.float32),
        label=label,
        mask=mask.astype(np.uint8),
        spacing=tuple(float(s) for s in spacing),
        record=record,
        channel_names=list(channel_names),
        split=subject.split,
    )
