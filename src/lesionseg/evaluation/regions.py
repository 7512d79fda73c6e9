"""Which binary masks of a label map are evaluated: single labels and merged regions.

Multi-class label maps are evaluated per label (``label == v``) and, with a region
scheme, per merged region. ``brats`` is the BRATS 2012-2015 convention used by the
DeepMedic and Brain SegNet papers (labels 1 necrosis, 2 oedema, 3 non-enhancing,
4 enhancing tumour): whole tumour = 1-4, tumour core = 1, 3, 4, enhancing = 4.
``brats2023`` is the current BraTS convention (4 renumbered 3): WT = 1-3,
TC = 1, 3, ET = 3.

Both numberings use the values 1-3, so a wrong scheme gives plausible-looking numbers
(``brats`` on 2023 labels: an empty ``enhancing`` region, Dice 1.0 in every case).
:class:`LabelCensus` records the values found in each file and warns about that.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lesionseg.errors import LesionsegError
from lesionseg.evaluation.messages import short_list

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


Regions = str | Mapping[str, Iterable[int]]


@dataclass
class LabelCensus:
    """The non-zero label values of each file, per set of files, to check a region scheme.

    Attributes:
        found: Set name (``"reference"``, ``"prediction set 'A'"``) → file → its values.
    """

    found: dict[str, dict[str, frozenset[int]]] = field(default_factory=dict)

    def add(self, group: str, path: str | Path, label_map: np.ndarray) -> None:
        """Record the values of one file of the set ``group``."""
        self.found.setdefault(group, {})[str(path)] = frozenset(present_labels(label_map))

    def scheme_warnings(self, regions: Regions | None) -> list[str]:
        """One line per way the recorded values do not fit the region scheme.

        Args:
            regions: The scheme name or mapping the cases were evaluated with
                (None: single labels, nothing to check).

        Returns:
            Warnings for BraTS 2023 labels under ``brats`` (label 3, no 4), and for
            values that belong to no region (counted as background).
        """
        if regions is None:
            return []
        out = []
        if regions == "brats":
            out += self._brats2023_numbering()
        out += self._outside_regions(regions)
        return out

    def _brats2023_numbering(self) -> list[str]:
        # per set: BRATS 2015 cases without enhancing tumour exist (many LGGs), so one
        # file without 4 proves nothing; a whole set with 3s and never a 4 does
        files = [
            path
            for per_file in self.found.values()
            if not any(4 in values for values in per_file.values())
            for path, values in per_file.items()
            if 3 in values
        ]
        if not files:
            return []
        return [
            f"--regions brats: {len(files)} file(s) have label 3 but no file of their set has "
            f"label 4 ({short_list(files, 3)}); with BraTS 2023 labels (enhancing tumour = 3) "
            "'enhancing' (label 4) is empty in every case and scores Dice 1.0 (both masks "
            "empty): use --regions brats2023 (WT = 1-3, TC = 1, 3, ET = 3)"
        ]

    def _outside_regions(self, regions: Regions) -> list[str]:
        covered = {v for values in region_definitions(None, regions).values() for v in values}
        files = {
            path: values - covered
            for per_file in self.found.values()
            for path, values in per_file.items()
            if values - covered
        }
        if not files:
            return []
        extra = sorted(set().union(*files.values()))
        scheme = f"--regions {regions}" if isinstance(regions, str) else "the regions"
        line = (
            f"{scheme}: label(s) {', '.join(map(str, extra))} belong to no region and count "
            f"as background in {len(files)} file(s) ({short_list(list(files), 3)})"
        )
        if regions == "brats2023" and 4 in extra:
            line += "; BRATS 2012-2021 labels (enhancing tumour = 4)? use --regions brats"
        return [line]
