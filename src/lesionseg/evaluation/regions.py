"""Which binary masks of a label map are evaluated: single labels and merged regions.

Multi-class label maps are evaluated per label (``label == v``) and, with a region
scheme, per merged region. ``brats`` is the BRATS 2012-2015 convention used by the
DeepMedic and Brain SegNet papers (labels 1 necrosis, 2 oedema, 3 non-enhancing,
4 enhancing tumour): whole tumour = 1-4, tumour core = 1, 3, 4, enhancing = 4.
``brats2023`` is the current BraTS convention (4 renumbered 3): WT = 1-3,
TC = 1, 3, ET = 3.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from lesionseg.errors import LesionsegError

REGION_SCHEMES: dict[str, dict[str, tuple[int, ...]]] = {
    "brats": {"whole": (1, 2, 3, 4), "core": (1, 3, 4), "enhancing": (4,)},
    "brats2023": {"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,)},
}


def region_definitions(
    labels: Iterable[int] | None = None,
    regions: str | Mapping[str, Iterable[int]] | None = None,
    label_names: Mapping[int, str] | None = None,
) -> dict[str, tuple[int, ...]]:
    """Region name → label values that make it up.

    Args:
        labels: Single labels to evaluate (each its own region), or None.
        regions: A scheme name from :data:`REGION_SCHEMES` or an explicit mapping.
        label_names: Names of label values (from a data set's ``labels``); a label
            without a name is called ``label<v>``.

    Raises:
        LesionsegError: Unknown scheme, background (0) requested, or nothing to evaluate.
    """
    out: dict[str, tuple[int, ...]] = {}
    names = dict(label_names or {})
    for value in labels or ():
        value = int(value)
        if value <= 0:
            raise LesionsegError(f"--labels: {value} is background or negative; use values > 0")
        name = names.get(value) or f"label{value}"
        if name in out or name == "background":
            name = f"label{value}"
        out[name] = (value,)
    if isinstance(regions, str):
        if regions not in REGION_SCHEMES:
            known = ", ".join(sorted(REGION_SCHEMES))
            raise LesionsegError(f"--regions: unknown scheme {regions!r} (known: {known})")
        regions = REGION_SCHEMES[regions]
    for name, values in (regions or {}).items():
        out[str(name)] = tuple(int(v) for v in values)
    if not out:
        raise LesionsegError("nothing to evaluate: give labels or a region scheme")
    return out


def present_labels(*label_maps: np.ndarray) -> list[int]:
    """Sorted non-zero values present in any of the label maps."""
    values: set[int] = set()
    for array in label_maps:
        values.update(int(v) for v in np.unique(array) if v != 0)
    return sorted(values)


def region_mask(label_map: np.ndarray, values: tuple[int, ...]) -> np.ndarray:
    """Binary mask of the voxels whose label is one of ``values``."""
    if len(values) == 1:
        return label_map == values[0]
    return np.isin(label_map, values)
