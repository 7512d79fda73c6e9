"""Connected components of a label map, per class, for the lesion-size steps (``cc3d``)."""

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
