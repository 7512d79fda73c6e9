"""Write phantoms as a raw BIDS data set, with their lesion masks as a BIDS derivative.

Layout (``lesionseg synth TASK -o DIR --bids``)::

    DIR/dataset_description.json, README.md, participants.tsv, participants.json
    DIR/sub-001/anat/sub-001_T1w.nii.gz          ms: T1w, T2w, PDw, FLAIR
    DIR/sub-001/anat/sub-001_ce-gadolinium_T1w.nii.gz        tumor: T1w, this, T2w, FLAIR
    DIR/sub-001/dwi/sub-001_dwi.nii.gz (.bval, .bvec, .json)       stroke-acute: DWI ...
    DIR/sub-001/dwi/sub-001_acq-ADC_dwi.nii.gz (.bval, .bvec, .json)       ... and ADC
    DIR/derivatives/lesionseg-phantoms/dataset_description.json
    DIR/derivatives/lesionseg-phantoms/sub-001/anat/sub-001_space-orig_label-lesion_mask.nii.gz
    DIR/derivatives/lesionseg-phantoms/sub-001/anat/sub-001_space-orig_desc-brain_mask.nii.gz
    DIR/phantoms.json                              what was placed (listed in .bidsignore)

Subjects are ``sub-001``, ``sub-002``, ... (``participants.tsv`` gives each one's case id
in the nnU-Net layout, ``ms_000``, and its split). The files pass the BIDS validator
without errors; where BIDS has no place for a phantom's channel, the choice is this:

* ``stroke-acute``'s DWI is a single b = 1000 s/mm² trace image, a 3D ``_dwi`` with a
  one-volume ``.bval`` (1000) and ``.bvec`` (0 0 0: no one direction) and
  ``ImageType: TRACEW`` in its sidecar; the ADC map has no suffix of its own in raw BIDS,
  so it is stored as scanners export it, ``acq-ADC_dwi`` with ``ImageType: ADC`` (values
  in 10⁻⁶ mm²/s), which is where ``lesionseg bids`` looks for an ``ADC`` channel.
* Labels go to the derivative, in the folder of the first channel (``anat``, or ``dwi``
  for ``stroke-acute``): a two-class map as ``_label-lesion_mask``, ``tumor``'s classes
  (0-4) as ``_dseg`` with ``dseg.tsv`` at the derivative's top. Their space is ``orig``
  (the raw grid), so each sidecar names its ``SpatialReference``, as BIDS requires.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path

from lesionseg import __version__
from lesionseg.data.atomic import write_json_atomic, write_text_atomic
from lesionseg.data.bids import BIDS_VERSION, bids_name, sidecar_path
from lesionseg.data.nifti import save_nifti
from lesionseg.data.ownership import prepare_output_folder, remove_owned
from lesionseg.data.phantoms import check_settings, data_set_settings
from lesionseg.data.phantoms.base import PhantomTask
from lesionseg.data.phantoms.generate import Phantom, generate_subject
from lesionseg.data.phantoms.registry import get_task
from lesionseg.data.phantoms.writer import _grid, case_record, write_metadata
from lesionseg.errors import LesionsegError

#: Phantom channel → (BIDS data type, suffix, entities) of its raw file.
BIDS_FILES: dict[str, tuple[str, str, dict[str, str]]] = {
    "T1": ("anat", "T1w", {}),
    "T1c": ("anat", "T1w", {"ce": "gadolinium"}),
    "T2": ("anat", "T2w", {}),
    "PD": ("anat", "PDw", {}),
    "FLAIR": ("anat", "FLAIR", {}),
    "DWI": ("dwi", "dwi", {}),
    "ADC": ("dwi", "dwi", {"acq": "ADC"}),
}
#: ``ImageType`` (as DICOM has it) of the diffusion channels, which tells DWI from ADC.
IMAGE_TYPES = {
    "DWI": ["DERIVED", "PRIMARY", "DIFFUSION", "TRACEW"],
    "ADC": ["DERIVED", "PRIMARY", "DIFFUSION", "ADC"],
}
B_VALUE = 1000
DERIVATIVE = Path("derivatives") / "lesionseg-phantoms"
PHANTOMS_BIDS_KIND = "phantoms-bids"
_TOP_FILES = (
    "dataset_description.json",
    "README.md",
    "participants.tsv",
    "participants.json",
    ".bidsignore",
    "phantoms.json",
)


def subject_label(index: int, subjects: int) -> str:
    """The BIDS label of case ``index`` (from 0): ``001``, ``002``, ... (wider past 999)."""
    return f"{index + 1:0{max(3, len(str(subjects)))}d}"


def _raw_names(subject: str) -> list[str]:
    """Every raw file a phantom subject may have, relative to the data set."""
    names = []
    for datatype, suffix, entities in BIDS_FILES.values():
        stem = bids_name({"sub": subject, **entities}, suffix, "")
        endings = (".nii.gz", ".bval", ".bvec", ".json") if datatype == "dwi" else (".nii.gz",)
        names += [f"sub-{subject}/{datatype}/{stem}{end}" for end in endings]
    return names


def _previous_subjects(out: Path) -> list[str]:
    """Subject labels an earlier run listed in ``participants.tsv`` (letters and digits)."""
    table = out / "participants.tsv"
    if not table.is_file():
        return []
    rows = table.read_text(encoding="utf-8", errors="replace").splitlines()[1:]
    ids = [row.split("\t", 1)[0] for row in rows]
    # a hand-edited table must not make --overwrite reach other files
    return [i[4:] for i in ids if re.fullmatch(r"sub-[A-Za-z0-9]+", i)]


def prepare_bids_output(out_dir: str | Path, overwrite: bool) -> Path:
    """Check (and with ``overwrite`` clear) the output folder.

    With ``overwrite``, only what this writer produces is removed: its top-level files,
    the ``derivatives/lesionseg-phantoms`` folder and each earlier subject's phantom files
    by name (other files, such as a ``lesionseg bids`` output under ``derivatives/``, stay),
    and only in a folder lesionseg wrote as BIDS phantoms.

    Raises:
        LesionsegError: If the folder is a file, is not empty and ``overwrite`` is False,
            or was not written by lesionseg as BIDS phantoms.
    """
    out = Path(out_dir)
    previous = _previous_subjects(out)
    owned = [*_TOP_FILES, DERIVATIVE.as_posix()]
    owned += [name for subject in previous for name in _raw_names(subject)]
    out = prepare_output_folder(out, PHANTOMS_BIDS_KIND, overwrite=overwrite, owned=owned)
    _remove_empty_folders(out, previous)
    return out


def _remove_empty_folders(out: Path, subjects: Sequence[str]) -> None:
    """Remove the subject folders that clearing left empty; any holding other files stay.

    BIDS forbids a subject folder without files, so an empty one would fail validation.
    """
    for subject in subjects:
        top = out / f"sub-{subject}"
        for folder in (*(top / datatype for datatype in ("anat", "dwi")), top):
            if folder.is_dir() and not any(folder.iterdir()):
                remove_owned(folder, out)


def _channel_path(out: Path, subject: str, channel: str) -> Path:
    datatype, suffix, entities = BIDS_FILES[channel]
    return out / f"sub-{subject}" / datatype / bids_name({"sub": subject, **entities}, suffix)


def _write_diffusion_files(image: Path, channel: str) -> list[Path]:
    """The ``.bval``, ``.bvec`` and sidecar BIDS requires beside a ``_dwi`` image."""
    stem = sidecar_path(image).with_suffix("")
    bval, bvec = stem.with_suffix(".bval"), stem.with_suffix(".bvec")
    write_text_atomic(bval, f"{B_VALUE}\n")
    write_text_atomic(bvec, "0\n0\n0\n")
    write_json_atomic(sidecar_path(image), {"ImageType": IMAGE_TYPES[channel]})
    return [bval, bvec, sidecar_path(image)]


def write_raw_case(out: Path, task: PhantomTask, phantom: Phantom, subject: str) -> list[Path]:
    """Write one subject's images in the raw tree; returns the paths written."""
    grid = _grid(phantom, f"lesionseg phantom {task.name}")
    paths = []
    for channel in task.channels:
        if channel not in BIDS_FILES:
            raise LesionsegError(f"phantom channel {channel!r} has no BIDS name")
        path = save_nifti(phantom.images[channel], grid, _channel_path(out, subject, channel))
        paths.append(path)
        if BIDS_FILES[channel][0] == "dwi":
            paths += _write_diffusion_files(path, channel)
    return paths


def write_derivative_case(
    out: Path, task: PhantomTask, phantom: Phantom, subject: str
) -> list[Path]:
    """Write one subject's label map and brain mask in the derivative; returns the paths."""
    grid = _grid(phantom, f"lesionseg phantom {task.name}")
    first = _channel_path(out, subject, task.channels[0])
    reference = f"bids:raw:{first.relative_to(out).as_posix()}"
    sources = [
        f"bids:raw:{_channel_path(out, subject, c).relative_to(out).as_posix()}"
        for c in task.channels
    ]
    folder = out / DERIVATIVE / f"sub-{subject}" / BIDS_FILES[task.channels[0]][0]
    base = {"sub": subject, "space": "orig"}
    if len(task.labels) == 2:
        label_path = folder / bids_name({**base, "label": "lesion"}, "mask")
        label_meta = {"Type": "Lesion", "Description": f"{task.labels[1]} (phantom truth)"}
    else:
        label_path = folder / bids_name(base, "dseg")
        label_meta = {"Description": "phantom truth; classes in dseg.tsv"}
    brain_path = folder / bids_name({**base, "desc": "brain"}, "mask")
    brain_meta = {"Type": "Brain", "Description": "brain mask of the phantom"}
    paths = []
    for array, path, meta in (
        (phantom.label, label_path, label_meta),
        (phantom.mask, brain_path, brain_meta),
    ):
        paths.append(save_nifti(array, grid, path))
        sidecar = {**meta, "Sources": sources, "SpatialReference": reference}
        write_json_atomic(sidecar_path(path), sidecar)
        paths.append(sidecar_path(path))
    return paths


def _participants(rows: Sequence[tuple[str, str, str]]) -> str:
    """``participants.tsv`` from (label, case id, split) rows."""
    lines = ["participant_id\tphantom_id\tsplit"]
    lines += [f"sub-{label}\t{case}\t{split}" for label, case, split in rows]
    return "\n".join(lines) + "\n"


PARTICIPANTS_JSON = {
    "phantom_id": {"Description": "case id of the same phantom in the nnU-Net layout"},
    "split": {
        "Description": "lesionseg's split of the phantom data set",
        "Levels": {"train": "training case", "test": "held-out test case"},
    },
}


def raw_description(task: PhantomTask, settings: dict) -> dict:
    """``dataset_description.json`` of the raw data set."""
    options = " ".join(f"{k}={v}" for k, v in settings.items())
    return {
        "Name": f"lesionseg phantoms: {task.name}",
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "raw",
        "License": "CC0 (synthetic); ICBM152 2009a templates: see nilearn",
        "GeneratedBy": [
            {
                "Name": "lesionseg",
                "Version": __version__,
                "Description": f"lesionseg synth --bids ({options})",
            }
        ],
    }


def derivative_description(task: PhantomTask) -> dict:
    """``dataset_description.json`` of the phantoms' truth (a derivative of the raw set)."""
    return {
        "Name": f"lesionseg phantoms: {task.name}: lesion labels and brain masks",
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "lesionseg", "Version": __version__}],
        "SourceDatasets": [{"URL": "bids:raw:"}],
        "DatasetLinks": {"raw": "../.."},
    }


def _readme(task: PhantomTask) -> str:
    return (
        f"# lesionseg phantoms: {task.name}\n\n{task.description}.\n\n"
        "Synthetic brain MRI written by `lesionseg synth --bids`, on the ICBM152 2009a "
        "anatomy that nilearn ships. The true lesion labels "
        "and brain masks are in `derivatives/lesionseg-phantoms/`; `phantoms.json` records "
        "the lesions placed in each subject.\n"
    )


def write_raw_metadata(
    out: Path, task: PhantomTask, rows: Sequence[tuple[str, str, str]], settings: dict
) -> None:
    """Top-level files of both data sets; ``dataset_description.json`` last."""
    write_text_atomic(out / "README.md", _readme(task))
    write_text_atomic(out / "participants.tsv", _participants(rows))
    write_json_atomic(out / "participants.json", PARTICIPANTS_JSON)
    write_text_atomic(out / ".bidsignore", "phantoms.json\n")
    if len(task.labels) > 2:
        table = ["index\tname", *(f"{i}\t{name}" for i, name in sorted(task.labels.items()))]
        write_text_atomic(out / DERIVATIVE / "dseg.tsv", "\n".join(table) + "\n")
    write_json_atomic(out / DERIVATIVE / "dataset_description.json", derivative_description(task))
    write_json_atomic(out / "dataset_description.json", raw_description(task, settings))


def synthesize_bids(
    task: str,
    out_dir: str | Path,
    subjects: int = 20,
    seed: int = 0,
    spacing: float = 1.0,
    slice_thickness: float | None = None,
    test_fraction: float = 0.2,
    snr: float | None = None,
    overwrite: bool = False,
    progress: Callable[[Phantom], None] | None = None,
) -> Path:
    """Generate a phantom data set as raw BIDS (the same phantoms as :func:`synthesize`).

    Args:
        task: ``ms``, ``tumor``, ``stroke-acute`` or ``stroke-chronic``.
        out_dir: Output folder (created; must be empty unless ``overwrite``).
        subjects: Number of subjects.
        seed: Data set seed; subject ``k`` depends only on task, seed and ``k``.
        spacing: In-plane voxel size in mm.
        slice_thickness: Slice thickness in mm (default: the task's).
        test_fraction: Share of subjects (the last ones) marked ``test`` in
            ``participants.tsv``.
        snr: White-matter signal-to-noise ratio (default: the task's).
        overwrite: Replace the phantom files of an earlier BIDS phantom data set.
        progress: Called with each subject once it is written.

    Returns:
        The output folder.

    Raises:
        LesionsegError: Unknown task, bad sizes, or a non-empty output without ``overwrite``.
    """
    phantom_task = get_task(task)
    check_settings(subjects, test_fraction, spacing, slice_thickness, snr)
    out = prepare_bids_output(out_dir, overwrite)
    n_test = min(int(round(subjects * test_fraction)), subjects - 1)
    rows, records = [], []
    for index in range(subjects):
        split = "train" if index < subjects - n_test else "test"
        phantom = generate_subject(
            phantom_task, index, seed, spacing, slice_thickness, -1.0 if snr is None else snr
        )
        label = subject_label(index, subjects)
        write_raw_case(out, phantom_task, phantom, label)
        write_derivative_case(out, phantom_task, phantom, label)
        rows.append((label, phantom.id, split))
        records.append({"participant_id": f"sub-{label}", **case_record(phantom, split)})
        if progress is not None:
            progress(phantom)
        del phantom
    write_metadata(out, phantom_task, records)
    settings = data_set_settings(phantom_task, seed, subjects, spacing, slice_thickness, snr)
    write_raw_metadata(out, phantom_task, rows, settings)
    return out
