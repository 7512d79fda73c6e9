"""The cases of a folder of probability maps: each one's image channels (and reference).

``lesionseg crf --prob-dir`` refines every case of a folder and ``lesionseg crf-tune``
tunes on them; both match a probability map to its images by case id: ``<case>_prob.nii.gz``
(what ``lesionseg predict --save-probabilities`` writes, beside the ``_seg`` labels, which
are skipped) or ``<case>.nii.gz``, with the images of a data set or a folder of
``<case>_XXXX.nii.gz`` files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lesionseg.errors import LesionsegError


@dataclass(frozen=True)
class ProbabilityCase:
    """One case: its probability map, its image channels and its reference (or None).

    Attributes:
        id: The case id.
        probabilities: The probability map file.
        channels: The image channel files, in the data set's (or the file index) order.
        reference: The reference label map, or None.
    """

    id: str
    probabilities: Path
    channels: list[Path]
    reference: Path | None


def case_id(path: Path) -> str:
    """Case id of a probability file: its name without the NIfTI suffix and ``_prob``."""
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name[: -len("_prob")] if name.endswith("_prob") else name


def probability_files(prob_dir: Path) -> list[Path]:
    """The probability maps of a folder (the ``_prob`` files when there are any).

    Raises:
        LesionsegError: No such folder, or no NIfTI file in it.
    """
    if not prob_dir.is_dir():
        raise LesionsegError("probability folder not found", prob_dir)
    files = sorted(p for p in prob_dir.iterdir() if p.name.endswith((".nii.gz", ".nii")))
    named = [p for p in files if p.name.endswith(("_prob.nii.gz", "_prob.nii"))]
    files = named or [p for p in files if not p.name.endswith(("_seg.nii.gz", "_seg.nii"))]
    if not files:
        raise LesionsegError("no .nii/.nii.gz probability files", prob_dir)
    return files


def find_cases(
    prob_dir: str | Path,
    dataset: str | Path | None = None,
    image_dir: str | Path | None = None,
    ref_dir: str | Path | None = None,
    need_reference: bool = False,
) -> list[ProbabilityCase]:
    """Every probability map of ``prob_dir`` with its channels and reference.

    Args:
        prob_dir: Folder of ``<case>_prob.nii.gz`` (or ``<case>.nii.gz``) maps.
        dataset: Data set giving each case's channels and label.
        image_dir: Instead of ``dataset``: folder of ``<case>_0000.nii.gz``, ... files.
        ref_dir: Folder of ``<case>.nii.gz`` references (overrides the data set's labels).
        need_reference: Every case must have a reference (tuning).

    Raises:
        LesionsegError: Missing folders, cases or files.
    """
    from lesionseg.data.dataset import load_dataset

    files = probability_files(Path(prob_dir))
    if (dataset is None) == (image_dir is None):
        raise LesionsegError("give either -d/--dataset or --image-dir")
    subjects = {s.id: s for s in load_dataset(dataset)} if dataset is not None else {}
    if need_reference and dataset is None and ref_dir is None:
        raise LesionsegError("--image-dir needs --ref-dir (the reference label maps)")
    cases = []
    for path in files:
        cid = case_id(path)
        if dataset is not None:
            if cid not in subjects:
                raise LesionsegError(f"no case {cid!r} in the data set {dataset}", path)
            channels, ref = list(subjects[cid].channels.values()), subjects[cid].label
        else:
            channels = sorted(Path(image_dir).glob(f"{cid}_[0-9][0-9][0-9][0-9].nii*"))
            ref = None
        if ref_dir is not None:
            found = [Path(ref_dir) / f"{cid}{s}" for s in (".nii.gz", ".nii")]
            ref = next((p for p in found if p.is_file()), found[0])
        if not channels:
            raise LesionsegError(f"no image channels for case {cid!r}", image_dir or dataset)
        if need_reference and ref is None:
            raise LesionsegError(f"case {cid!r} has no reference label map")
        cases.append(ProbabilityCase(cid, path, channels, ref))
    return cases
