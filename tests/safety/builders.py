"""Small files the safety cases start from (made in the test, never shipped)."""

from __future__ import annotations

import builtins
import gzip
import io
import json
from pathlib import Path
from types import ModuleType

import nibabel as nib
import numpy as np

from tests.conftest import phantom_arrays, write_nifti

AFFINE = np.diag([1.0, 1.2, 2.0, 1.0])


def msd(root: Path, n_train: int = 2, n_test: int = 1, channels=("T1", "FLAIR"), **spec) -> Path:
    """A tiny MSD data set at ``root`` (cases ``case_000`` ...); ``spec`` overrides dataset.json."""
    root.mkdir(parents=True, exist_ok=True)
    base = {
        "name": "tiny",
        "channel_names": {str(i): c for i, c in enumerate(channels)},
        "labels": {"background": 0, "lesion": 1},
        "file_ending": ".nii.gz",
        "numTraining": n_train,
    }
    base.update(spec)
    (root / "dataset.json").write_text(json.dumps(base))
    for i in range(n_train + n_test):
        split = "Tr" if i < n_train else "Ts"
        images, label, _ = phantom_arrays(seed=i, channels=len(channels))
        for c, img in enumerate(images):
            write_nifti(root / f"images{split}" / f"case_{i:03d}_{c:04d}.nii.gz", img, AFFINE)
        if split == "Tr":
            write_nifti(root / f"labels{split}" / f"case_{i:03d}.nii.gz", label, AFFINE)
    return root


def manifest(root: Path, text: str, name: str = "manifest.csv", encoding="utf-8") -> Path:
    """Image files for two subjects under ``root`` and a manifest with the given text."""
    msd(root)
    path = root / name
    path.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return path


MANIFEST_HEADER = "subject,T1,FLAIR,label,split"


def manifest_row(sid: str, case: int = 0) -> str:
    """One manifest row pointing at case ``case`` of :func:`msd`'s files."""
    return (
        f"{sid},imagesTr/case_{case:03d}_0000.nii.gz,imagesTr/case_{case:03d}_0001.nii.gz,"
        f"labelsTr/case_{case:03d}.nii.gz,train"
    )


def model_folder(folder: Path, channels=("T1", "FLAIR"), config_edit=None, weights_edit=None):
    """An untrained tiny DeepMedic saved as a model folder, optionally edited afterwards.

    Args:
        folder: The model folder to write.
        channels: Its channel names.
        config_edit: ``f(config) -> config`` applied to config.json after saving.
        weights_edit: ``f(state) -> state`` applied to the weights after saving.
    """
    from safetensors.torch import load_file, save_file

    from lesionseg.models.io import save_model
    from lesionseg.training.recipe import load_recipe
    from lesionseg.training.trainer import build_network, model_config

    recipe = load_recipe("deepmedic-tiny")
    stage = recipe.stages()[0]
    network = build_network(stage["model"], len(channels), 2, seed=0)
    config = model_config(recipe, list(channels), {0: "background", 1: "lesion"}, "main")
    save_model(network, config, folder)
    if config_edit is not None:
        path = folder / "config.json"
        path.write_text(json.dumps(config_edit(json.loads(path.read_text()))))
    if weights_edit is not None:
        path = folder / "model.safetensors"
        save_file(weights_edit(load_file(str(path))), str(path))
    return folder


def run_folder(folder: Path, dataset: Path, recipe_text: str | None = None, checkpoint=None):
    """A model folder as ``train`` leaves it before its first epoch (recipe.yaml, run.json)."""
    from dataclasses import asdict

    from lesionseg.training.recipe import load_recipe
    from lesionseg.training.trainer import RunSettings

    folder.mkdir(parents=True, exist_ok=True)
    text = recipe_text if recipe_text is not None else load_recipe("deepmedic-tiny").to_yaml()
    (folder / "recipe.yaml").write_text(text)
    settings = RunSettings(str(dataset), str(folder), device="cpu", progress=False)
    (folder / "run.json").write_text(json.dumps(asdict(settings)))
    if checkpoint is not None:
        (folder / "checkpoint.pt").write_bytes(checkpoint)
    return folder


def patch_header(path: Path, **fields) -> Path:
    """Set raw NIfTI-1/2 header fields of ``path`` (.nii or .nii.gz), bypassing nibabel's fixes."""
    packed = path.name.endswith(".gz")
    data = gzip.decompress(path.read_bytes()) if packed else path.read_bytes()
    nifti2 = int.from_bytes(data[:4], "little") == nib.Nifti2Header.sizeof_hdr
    klass = nib.Nifti2Header if nifti2 else nib.Nifti1Header
    header = klass.from_fileobj(io.BytesIO(data), check=False)
    for key, value in fields.items():
        header[key] = value
    data = header.binaryblock + data[len(header.binaryblock) :]
    path.write_bytes(gzip.compress(data) if packed else data)
    return path


def first_image(root: Path) -> Path:
    """The first channel file of the first training case of :func:`msd`'s data set."""
    return root / "imagesTr" / "case_000_0000.nii.gz"


def replace_image(root: Path, data: np.ndarray) -> Path:
    """Replace :func:`first_image` by ``data`` on the same grid."""
    return write_nifti(first_image(root), data, AFFINE)


def rename_case(root: Path, old: str, new: str) -> None:
    """Rename every file of training case ``old`` of an MSD data set to case ``new``."""
    for folder in ("imagesTr", "labelsTr"):
        for path in (root / folder).glob(f"{old}*"):
            path.rename(path.with_name(new + path.name[len(old) :]))


def deny_reading(monkeypatch, module: ModuleType, locked: Path) -> None:
    """Make ``open()`` in ``module`` fail on ``locked`` as for a file the user may not read.

    Faked, because tests often run as root, who reads anything, and because the safety
    harness must still read the file to see that it is unchanged.
    """

    def guarded_open(file, *args, **kwargs):
        if Path(file) == locked:
            raise PermissionError(13, "Permission denied", str(file))
        return builtins.open(file, *args, **kwargs)

    monkeypatch.setattr(module, "open", guarded_open, raising=False)
