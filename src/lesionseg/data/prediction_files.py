"""How ``lesionseg predict`` names its files: one place for every reader of a predictions folder.

A case's label map is ``<case>_seg.nii.gz`` (nnU-Net naming: ``<case>.nii.gz``); the maps
written beside it end in the suffixes of :data:`BESIDE` (``<case>_prob.nii.gz``, ...).
``evaluate``, ``report`` and ``predict`` itself read these names from here, so a new map
is a new entry, not a new suffix list in each of them.
"""

from __future__ import annotations

from pathlib import Path

SEGMENTATION_SUFFIX = "_seg"
FILE_ENDING = ".nii.gz"
#: Role → suffix of the maps written beside a label map.
BESIDE = {
    "probabilities": "_prob",  # --save-probabilities: one map per class
    "uncertainty": "_uncertainty",  # --save-uncertainty: entropy, mutual information
    "members": "_members",  # --save-uncertainty: each prediction's label map
}


def beside(folder: str | Path, case: str, role: str) -> Path:
    """The file of map ``role`` (a key of :data:`BESIDE`) of ``case`` in ``folder``."""
    return Path(folder) / f"{case}{BESIDE[role]}{FILE_ENDING}"


def is_beside_map(stem: str) -> bool:
    """Whether a file name without its ending names a map beside a label map."""
    return stem.endswith(tuple(BESIDE.values()))


def segmentation_case(stem: str) -> str:
    """The case of a label map's file name without its ending (``_seg`` dropped)."""
    return stem[: -len(SEGMENTATION_SUFFIX)] if stem.endswith(SEGMENTATION_SUFFIX) else stem
