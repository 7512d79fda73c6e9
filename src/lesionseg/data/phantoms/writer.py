"""Write phantoms in the nnU-Net v2 / MSD layout (read by ``lesionseg.data.dataset.load_msd``).

Layout::

    DIR/dataset.json                      channel_names, labels, file_ending, numTraining, ...
    DIR/imagesTr/<case>_<XXXX>.nii.gz     one file per channel
    DIR/labelsTr/<case>.nii.gz
    DIR/masksTr/<case>.nii.gz             brain masks
    DIR/imagesTs/, labelsTs/, masksTs/    the same for test cases
    DIR/phantoms.json                     what was placed in each case (for people and checks)

Every file is written atomically; ``dataset.json`` is written last, so a folder
without it is an interrupted run.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from lesionseg.data.atomic import write_json_atomic
from lesionseg.data.nifti import Grid, save_nifti
from lesionseg.data.ownership import prepare_output_folder
from lesionseg.data.phantoms.base import PhantomTask
from lesionseg.data.phantoms.generate import Phantom

FILE_ENDING = ".nii.gz"
SPLIT_FOLDERS = {
    "train": ("imagesTr", "labelsTr", "masksTr"),
    "test": ("imagesTs", "labelsTs", "masksTs"),
}


PHANTOMS_KIND = "phantoms"


def prepare_output(out_dir: str | Path, overwrite: bool) -> Path:
    """Check (and with ``overwrite`` clear) the output folder.

    With ``overwrite``, only what this writer produces is removed (``dataset.json``,
    ``phantoms.json`` and the NIfTI files of the six split folders), and only in a
    folder that lesionseg wrote; other files stay.

    Raises:
        LesionsegError: If the folder is a file, is not empty and ``overwrite`` is False,
            or was not written by lesionseg.
    """
    owned = ["dataset.json", "phantoms.json"] + [
        f"{folder}/*{FILE_ENDING}" for folders in SPLIT_FOLDERS.values() for folder in folders
    ]
    return prepare_output_folder(out_dir, PHANTOMS_KIND, overwrite=overwrite, owned=owned)


def _grid(phantom: Phantom, description: str) -> Grid:
    header = nib.Nifti1Header()
    header.set_xyzt_units("mm")
    header["qform_code"] = 1
    header["sform_code"] = 1
    header["descrip"] = description[:79].encode()
    return Grid(tuple(phantom.mask.shape), phantom.affine, header)


def write_case(out: Path, task: PhantomTask, phantom: Phantom, split: str) -> list[Path]:
    """Write one case's channels, label and mask; returns the paths written."""
    images_dir, labels_dir, masks_dir = SPLIT_FOLDERS[split]
    grid = _grid(phantom, f"lesionseg phantom {task.name}")
    paths = []
    for i, name in enumerate(task.channels):
        path = out / images_dir / f"{phantom.id}_{i:04d}{FILE_ENDING}"
        paths.append(save_nifti(phantom.images[name], grid, path))
    paths.append(save_nifti(phantom.label, grid, out / labels_dir / f"{phantom.id}{FILE_ENDING}"))
    paths.append(save_nifti(phantom.mask, grid, out / masks_dir / f"{phantom.id}{FILE_ENDING}"))
    return paths


def decathlon_lists(channels: list[str], records: list[dict]) -> dict:
    """The Decathlon (MSD v1) keys MONAI's ``load_decathlon_datalist`` reads.

    ``modality`` and the ``training`` / ``test`` lists of files (one path per channel,
    relative to the data set), beside nnU-Net v2's keys, which nnU-Net reads and MONAI
    ignores (and the other way round).

    Args:
        channels: Channel names in file order.
        records: :func:`case_record` records (``case`` and ``split`` are read).
    """

    def images(case: str, split: str) -> list[str]:
        folder = SPLIT_FOLDERS[split][0]
        return [f"./{folder}/{case}_{i:04d}{FILE_ENDING}" for i in range(len(channels))]

    training = [
        {"image": images(r["case"], "train"), "label": f"./labelsTr/{r['case']}{FILE_ENDING}"}
        for r in records
        if r["split"] == "train"
    ]
    test = [{"image": images(r["case"], "test")} for r in records if r["split"] == "test"]
    return {
        "modality": {str(i): name for i, name in enumerate(channels)},
        "training": training,
        "test": test,
    }


def dataset_json(
    task: PhantomTask, n_train: int, n_test: int, settings: dict, records: list[dict]
) -> dict:
    """The ``dataset.json`` of a phantom data set: nnU-Net v2's keys and MSD v1's lists."""
    return {
        "name": f"phantom-{task.name}",
        "description": task.description,
        "reference": "lesionseg synthetic phantoms (ICBM152 2009a anatomy from nilearn)",
        "licence": "CC0 (synthetic); ICBM152 templates: see nilearn",
        "tensorImageSize": "3D",
        "channel_names": {str(i): name for i, name in enumerate(task.channels)},
        "labels": {name: value for value, name in sorted(task.labels.items())},
        "numTraining": n_train,
        "numTest": n_test,
        "file_ending": FILE_ENDING,
        "lesionseg_phantom": settings,
        **decathlon_lists(list(task.channels), records),
    }


def case_record(phantom: Phantom, split: str) -> dict:
    """JSON record of one case: split, lesions placed, per-subject parameters."""
    info = dict(phantom.info)
    info["params"] = _jsonable(info.get("params", {}))
    return {
        "case": phantom.id,
        "split": split,
        "labelled_lesions": sum(1 for r in phantom.records if r.labelled),
        **info,
        "lesions": [r.to_json() for r in phantom.records],
    }


def write_metadata(out: Path, task: PhantomTask, records: list[dict]) -> None:
    """Write ``phantoms.json`` from :func:`case_record` records."""
    write_json_atomic(out / "phantoms.json", {"task": task.name, "cases": records})


def _jsonable(value):
    """Plain-JSON copy of per-subject parameters (objects and ``_`` keys dropped)."""
    if isinstance(value, dict):
        return {
            k: _jsonable(v)
            for k, v in value.items()
            if not str(k).startswith("_") and _jsonable(v) is not None
        }
    if isinstance(value, list | tuple):
        items = [_jsonable(v) for v in value]
        return [v for v in items if v is not None] or None
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float | np.floating):
        return round(float(value), 4)
    return None
