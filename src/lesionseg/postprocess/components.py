"""Connected components (``cc3d``), for the lesion-size steps and component re-scoring.

Per class for the lesion-size steps; and the small candidate lesions that component
re-scoring classifies (EDD + MUSCLE), found the same way when MUSCLE's training candidates
are listed and when its predictions are fused.
"""

from __future__ import annotations

from dataclasses import dataclass

import cc3d
import numpy as np

from lesionseg.errors import LesionsegError

#: Neighbourhoods in 3D: faces (6), faces and edges (18), faces, edges and corners (26).
CONNECTIVITIES = (6, 18, 26)


@dataclass
class Components:
    """The connected components of each foreground class of a label map.

    Attributes:
        ids: ``(X, Y, Z)`` component number of each voxel; 0 for background. Components
            never join voxels of different classes.
        sizes: Voxels per component number (``sizes[0]``: background voxels).
        classes: Class of each component number (``classes[0] == 0``).
    """

    ids: np.ndarray
    sizes: np.ndarray
    classes: np.ndarray

    def keep(self, labels: np.ndarray, kept: np.ndarray) -> np.ndarray:
        """``labels`` with the components not ``kept`` set to background.

        Args:
            labels: The label map the components were found in.
            kept: Boolean per component number.

        Returns:
            ``(X, Y, Z)`` uint8 labels.
        """
        kept = np.asarray(kept, bool).copy()
        kept[0] = True
        return np.where(kept[self.ids], labels, 0).astype(np.uint8)


def find_components(labels: np.ndarray, connectivity: int = 26, step: str = "") -> Components:
    """Connected components of every foreground class of ``labels``.

    Args:
        labels: ``(X, Y, Z)`` integer label map, 0 for background.
        connectivity: 6, 18 or 26 (see :data:`CONNECTIVITIES`).
        step: The step asking, for errors.

    Raises:
        LesionsegError: Another connectivity.
    """
    if isinstance(connectivity, bool) or connectivity not in CONNECTIVITIES:
        raise LesionsegError(
            f"{step}: connectivity must be one of {', '.join(map(str, CONNECTIVITIES))}, "
            f"got {connectivity!r}"
        )
    labels = np.ascontiguousarray(labels)
    ids = cc3d.connected_components(labels, connectivity=connectivity)
    sizes = np.bincount(ids.ravel())
    classes = np.zeros(len(sizes), labels.dtype)
    classes[ids.ravel()] = labels.ravel()
    return Components(ids, sizes, classes)


def component_ids(mask: np.ndarray, slice_axis: int | None, connectivity: int) -> np.ndarray:
    """Connected components in 3D, or per slice along ``slice_axis`` (ids unique overall).

    In a slice, connectivity 26 and 18 mean 8 and 6 means 4; 4 and 8 are taken as given.
    """
    if slice_axis is None:
        return cc3d.connected_components(mask, connectivity=connectivity)
    labels = np.zeros(mask.shape, np.int64)
    offset = 0
    planar = {26: 8, 18: 8, 6: 4}.get(connectivity, connectivity)
    for index in range(mask.shape[slice_axis]):
        cut = [slice(None)] * mask.ndim
        cut[slice_axis] = index
        plane = cc3d.connected_components(
            np.ascontiguousarray(mask[tuple(cut)]), connectivity=planar
        )
        labels[tuple(cut)] = np.where(plane > 0, plane + offset, 0)
        offset += int(plane.max())
    return labels


def small_components(
    mask: np.ndarray, max_size: int, slice_axis: int | None, connectivity: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The components of ``mask`` with fewer than ``max_size`` voxels, and their centres.

    Returns:
        ``(ids, small, centres)``: the component number of every voxel, the numbers of the
        small components, and their centroids rounded to voxels (``(n, 3)`` int64).
    """
    ids = component_ids(mask, slice_axis, connectivity)
    stats = cc3d.statistics(ids)  # one pass for every component's size and centroid
    sizes = np.asarray(stats["voxel_counts"])
    small = np.array([i for i in range(1, len(sizes)) if 0 < sizes[i] < max_size], np.int64)
    centres = np.round(np.asarray(stats["centroids"])[small]).astype(np.int64).reshape(-1, 3)
    return ids, small, centres
