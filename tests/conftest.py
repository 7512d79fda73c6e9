"""Shared fixtures: tiny NIfTI subjects and data sets written on the fly."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None, codes=(1, 1)):
    """Write ``data`` as NIfTI with the given affine and qform/sform codes."""
    affine = np.eye(4) if affine is None else affine
    image = nib.Nifti1Image(data, affine)
    image.set_qform(affine, code=codes[0])
    image.set_sform(affine, code=codes[1])
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, str(path))
    return path


def phantom_arrays(shape=(20, 24, 16), seed=0, channels=2):
    """A blob-shaped "brain" with a bright lesion: (images, label, mask)."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape).astype(np.float32)
    centre = (np.array(shape) - 1) / 2
    radius = np.sqrt((((grid.T - centre) / (np.array(shape) * 0.42)) ** 2).sum(-1)).T
    mask = radius < 1.0
    lesion_centre = centre + rng.integers(-2, 3, size=3)
    lesion = np.sqrt(((grid.T - lesion_centre) ** 2).sum(-1)).T < 2.5
    images = []
    for c in range(channels):
        img = np.where(mask, 100.0 + 10 * c, 0.0) + np.where(lesion, 60.0, 0.0)
        img = img + mask * rng.normal(0, 5, shape)
        images.append(img.astype(np.float32))
    return images, (lesion & mask).astype(np.uint8), mask.astype(np.uint8)


@pytest.fixture
def msd_dataset(tmp_path) -> Path:
    """A 3-subject MSD/nnU-Net data set (2 train, 1 test), channels T1 and FLAIR."""
    root = tmp_path / "ds"
    spec = {
        "name": "tiny",
        "channel_names": {"0": "T1", "1": "FLAIR"},
        "labels": {"background": 0, "lesion": 1},
        "file_ending": ".nii.gz",
        "numTraining": 2,
    }
    root.mkdir()
    (root / "dataset.json").write_text(json.dumps(spec))
    affine = np.diag([1.0, 1.2, 2.0, 1.0])
    for i, split in enumerate(["Tr", "Tr", "Ts"]):
        images, label, _ = phantom_arrays(seed=i)
        for c, img in enumerate(images):
            write_nifti(root / f"images{split}" / f"case_{i:03d}_{c:04d}.nii.gz", img, affine)
        if split == "Tr":
            write_nifti(root / f"labels{split}" / f"case_{i:03d}.nii.gz", label, affine)
    return root


@pytest.fixture
def csv_manifest(msd_dataset) -> Path:
    """The same data set described by a CSV manifest with relative paths."""
    lines = ["subject,T1,FLAIR,label,split"]
    for i, split in enumerate(["Tr", "Tr", "Ts"]):
        label = f"labelsTr/case_{i:03d}.nii.gz" if split == "Tr" else ""
        lines.append(
            f"case_{i:03d},images{split}/case_{i:03d}_0000.nii.gz,"
            f"images{split}/case_{i:03d}_0001.nii.gz,{label},{'train' if split == 'Tr' else 'test'}"
        )
    path = msd_dataset / "manifest.csv"
    path.write_text("\n".join(lines) + "\n")
    return path
