"""The per-lesion table of one case: what a person reads after ``lesionseg predict``.

A lesion is a connected component of the predicted lesion mask (the label values counted
as lesion, all foreground labels by default) with the connectivity stated in the table,
after removing components smaller than the stated minimum size: counts depend on both,
so both are written with every table. Per lesion: its size, world-space centroid (the
file's own affine: the subject's scanner millimetres, never a template's), bounding box,
the mean and maximum lesion probability, the mean voxel uncertainty and the ensemble's
detection disagreement when those maps exist, and its location class
(:mod:`lesionseg.report.locations`).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import cc3d
import numpy as np

from lesionseg.errors import LesionsegError

CONNECTIVITIES = (6, 18, 26)
#: Columns of the CSV table, in order (the JSON has the same keys per lesion).
COLUMNS = (
    "id",
    "label",
    "voxels",
    "volume_mm3",
    "centroid_x_mm",
    "centroid_y_mm",
    "centroid_z_mm",
    "bbox_min_voxel",
    "bbox_max_voxel",
    "mean_probability",
    "max_probability",
    "mean_uncertainty",
    "mean_mutual_information",
    "disagreement",
    "location",
)


@dataclass
class Lesion:
    """One lesion (connected component) of a case.

    Attributes:
        id: Lesion number, 1… in decreasing size (ties: in voxel order).
        label: The label value most of its voxels carry.
        voxels: Voxel count.
        volume_mm3: Volume in mm³.
        centroid_mm: Centroid in world millimetres (the segmentation file's affine).
        centroid_voxel: Centroid in voxel indices of that file.
        bbox_min_voxel: First voxel of the bounding box (inclusive).
        bbox_max_voxel: Last voxel of the bounding box (inclusive).
        mean_probability: Mean lesion probability over its voxels (None: no map).
        max_probability: Maximum lesion probability (None: no map).
        mean_uncertainty: Mean normalised entropy of the mean prediction (None: no map).
        mean_mutual_information: Mean mutual information between members (None: no map).
        disagreement: 1 − mean over ensemble members of the best IoU with this lesion
            (None: no member masks).
        location: Location class (None: not classified).
    """

    id: int
    label: int
    voxels: int
    volume_mm3: float
    centroid_mm: tuple[float, float, float]
    centroid_voxel: tuple[float, float, float]
    bbox_min_voxel: tuple[int, int, int]
    bbox_max_voxel: tuple[int, int, int]
    mean_probability: float | None = None
    max_probability: float | None = None
    mean_uncertainty: float | None = None
    mean_mutual_information: float | None = None
    disagreement: float | None = None
    location: str | None = None

    def row(self) -> dict:
        """The lesion as one CSV row (:data:`COLUMNS`)."""
        x, y, z = self.centroid_mm
        return {
            "id": self.id,
            "label": self.label,
            "voxels": self.voxels,
            "volume_mm3": _round(self.volume_mm3),
            "centroid_x_mm": _round(x),
            "centroid_y_mm": _round(y),
            "centroid_z_mm": _round(z),
            "bbox_min_voxel": " ".join(map(str, self.bbox_min_voxel)),
            "bbox_max_voxel": " ".join(map(str, self.bbox_max_voxel)),
            "mean_probability": _round(self.mean_probability),
            "max_probability": _round(self.max_probability),
            "mean_uncertainty": _round(self.mean_uncertainty),
            "mean_mutual_information": _round(self.mean_mutual_information),
            "disagreement": _round(self.disagreement),
            "location": self.location or "",
        }


@dataclass
class CaseTable:
    """The lesion table of one case with the rules that made it.

    Attributes:
        case: Case id.
        connectivity: Voxel connectivity of lesions (6, 18 or 26).
        min_size_voxels: Components smaller than this were left out.
        voxel_volume_mm3: Volume of one voxel.
        lesion_labels: Label values counted as lesion.
        lesions: The lesions, largest first.
        files: Role → file the table was made from (segmentation, probabilities, ...).
        locations: How the location classes were found (None: not classified).
    """

    case: str
    connectivity: int
    min_size_voxels: int
    voxel_volume_mm3: float
    lesion_labels: tuple[int, ...]
    lesions: list[Lesion]
    files: dict[str, str] = field(default_factory=dict)
    locations: dict | None = None

    def totals(self) -> dict:
        """Count, total volume (ml) and, when classified, count and volume per location."""
        out = {
            "count": len(self.lesions),
            "volume_ml": _round(sum(les.volume_mm3 for les in self.lesions) / 1000.0, 6),
        }
        if self.locations is not None:
            from lesionseg.report.locations import LOCATION_CLASSES

            out["by_location"] = {
                name: {
                    "count": sum(1 for les in self.lesions if les.location == name),
                    "volume_ml": _round(
                        sum(les.volume_mm3 for les in self.lesions if les.location == name)
                        / 1000.0,
                        6,
                    ),
                }
                for name in LOCATION_CLASSES
            }
        return out

    def rules(self) -> str:
        """One line stating what a lesion is here (written beside every table)."""
        labels = ", ".join(map(str, self.lesion_labels)) or "any value > 0"
        return (
            f"lesions: {self.connectivity}-connected components of label(s) {labels}, "
            f"at least {self.min_size_voxels} voxel(s) ({self.voxel_volume_mm3:g} mm3 each)"
        )

    def to_json(self) -> dict:
        """The table as JSON: rules, totals, files, location method and lesions."""
        lesions = []
        for les in self.lesions:
            item = asdict(les)
            for key in ("volume_mm3", "mean_probability", "max_probability"):
                item[key] = _round(item[key])
            for key in ("mean_uncertainty", "mean_mutual_information", "disagreement"):
                item[key] = _round(item[key])
            item["centroid_mm"] = [_round(v) for v in les.centroid_mm]
            item["centroid_voxel"] = [_round(v) for v in les.centroid_voxel]
            lesions.append(item)
        return {
            "case": self.case,
            "rules": self.rules(),
            "connectivity": self.connectivity,
            "min_size_voxels": self.min_size_voxels,
            "voxel_volume_mm3": _round(self.voxel_volume_mm3),
            "lesion_labels": list(self.lesion_labels),
            "totals": self.totals(),
            "files": dict(self.files),
            "locations": self.locations,
            "lesions": lesions,
        }

    def to_csv(self) -> str:
        """The table as CSV, with the rules in a leading ``#`` comment line."""
        buffer = io.StringIO()
        buffer.write(f"# {self.case}: {self.rules()}\n")
        writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        for les in self.lesions:
            writer.writerow(les.row())
        return buffer.getvalue()


def _round(value: float | None, digits: int = 4) -> float | None:
    if value is None:
        return None
    return round(float(value), digits)


def label_lesions(
    labels: np.ndarray,
    lesion_labels: Sequence[int] | None = None,
    connectivity: int = 26,
    min_size_voxels: int = 1,
) -> tuple[np.ndarray, int]:
    """Number the lesions of a label map: 1… by decreasing size, 0 elsewhere.

    Args:
        labels: 3D label map.
        lesion_labels: Label values that count as lesion (None: every value > 0).
        connectivity: 6, 18 or 26.
        min_size_voxels: Components smaller than this are dropped (set to 0).

    Returns:
        The numbered lesions (uint32) and their count.

    Raises:
        LesionsegError: A connectivity other than 6, 18 or 26, or a non-3D map.
    """
    if connectivity not in CONNECTIVITIES:
        raise LesionsegError(f"--connectivity must be 6, 18 or 26, got {connectivity}")
    if labels.ndim != 3:
        raise LesionsegError(f"expected a 3D label map, got shape {labels.shape}")
    mask = labels > 0 if lesion_labels is None else np.isin(labels, list(lesion_labels))
    components = cc3d.connected_components(mask, connectivity=connectivity)
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    # Largest first, so that lesion 1 is the one a reader looks at first.
    order = [k for k in np.argsort(-sizes, kind="stable") if sizes[k] >= max(min_size_voxels, 1)]
    relabel = np.zeros(len(sizes), np.uint32)
    relabel[order] = np.arange(1, len(order) + 1, dtype=np.uint32)
    return relabel[components], len(order)


def lesion_table(
    case: str,
    labels: np.ndarray,
    affine: np.ndarray,
    *,
    probabilities: np.ndarray | None = None,
    uncertainty: Mapping[str, np.ndarray] | None = None,
    member_masks: np.ndarray | None = None,
    lesion_labels: Sequence[int] | None = None,
    connectivity: int = 26,
    min_size_voxels: int = 1,
    locations: Mapping[int, str] | None = None,
) -> tuple[CaseTable, np.ndarray]:
    """The lesion table of one case.

    Args:
        case: Case id.
        labels: 3D label map (the segmentation).
        affine: Its voxel-to-world matrix.
        probabilities: 3D lesion probability (the summed foreground probability), or None.
        uncertainty: ``{"entropy": map, "mutual_information": map}`` (either optional).
        member_masks: ``(S, X, Y, Z)`` bool lesion masks of ensemble members, or None.
        lesion_labels: Label values counted as lesion (None: every value > 0).
        connectivity: Lesion connectivity.
        min_size_voxels: Smallest lesion kept.
        locations: Lesion id → location class, for ids of the numbering this function
            makes (:func:`label_lesions` with the same settings), or None.

    Returns:
        The table and the numbered lesion map it describes.
    """
    numbered, count = label_lesions(labels, lesion_labels, connectivity, min_size_voxels)
    voxel_mm3 = float(abs(np.linalg.det(np.asarray(affine, float)[:3, :3])))
    stats = cc3d.statistics(numbered)
    disagreement = {}
    if member_masks is not None and count:
        from lesionseg.inference.uncertainty import detection_disagreement

        disagreement = detection_disagreement(numbered, member_masks, connectivity)
    lesions = []
    for k in range(1, count + 1):
        box = stats["bounding_boxes"][k]
        where = tuple(slice(s.start, s.stop) for s in box)
        inside = numbered[where] == k
        centroid = np.asarray(stats["centroids"][k], float)
        world = np.asarray(affine, float) @ np.append(centroid, 1.0)
        values = labels[where][inside]
        lesion = Lesion(
            id=k,
            label=int(np.bincount(values.astype(np.int64)).argmax()),
            voxels=int(stats["voxel_counts"][k]),
            volume_mm3=float(stats["voxel_counts"][k]) * voxel_mm3,
            centroid_mm=tuple(float(v) for v in world[:3]),
            centroid_voxel=tuple(float(v) for v in centroid),
            bbox_min_voxel=tuple(int(s.start) for s in box),
            bbox_max_voxel=tuple(int(s.stop) - 1 for s in box),
            disagreement=disagreement.get(k),
            location=None if locations is None else locations.get(k),
        )
        if probabilities is not None:
            p = probabilities[where][inside]
            lesion.mean_probability, lesion.max_probability = float(p.mean()), float(p.max())
        if uncertainty is not None:
            if "entropy" in uncertainty:
                lesion.mean_uncertainty = float(uncertainty["entropy"][where][inside].mean())
            if "mutual_information" in uncertainty:
                mi = uncertainty["mutual_information"][where][inside]
                lesion.mean_mutual_information = float(mi.mean())
        lesions.append(lesion)
    table = CaseTable(
        case=case,
        connectivity=connectivity,
        min_size_voxels=int(max(min_size_voxels, 1)),
        voxel_volume_mm3=voxel_mm3,
        lesion_labels=tuple(int(v) for v in (lesion_labels or present_foreground(labels))),
        lesions=lesions,
    )
    return table, numbered


def present_foreground(labels: np.ndarray) -> list[int]:
    """The label values > 0 a map holds (what "every foreground label" means for it)."""
    return [int(v) for v in np.unique(labels) if v > 0]
