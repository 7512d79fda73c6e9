"""The ``keep-largest`` post-processing step: keep the largest lesion of each class."""

from __future__ import annotations

import numpy as np

from lesionseg.postprocess import POSTPROCESS
from lesionseg.postprocess.chain import current_labels
from lesionseg.postprocess.components import find_components

NAME = "keep-largest"


@POSTPROCESS.register(NAME)
def keep_largest_lesion(
    probabilities: np.ndarray, *, connectivity: int = 26, labels: np.ndarray | None = None
) -> np.ndarray:
    """Keep the largest connected component of each foreground class; the rest is background.

    Of components of equal size, the one ``cc3d`` numbers first is kept. A label step (see
    :mod:`lesionseg.postprocess.chain`): it works on the current label map, or on the
    argmax of the probabilities when no step made one.

    Args:
        probabilities: ``(K, X, Y, Z)`` class probabilities.
        connectivity: 26 (faces, edges and corners touch), 18 or 6 (faces only).
        labels: The label map a previous step made, or None.

    Returns:
        ``(X, Y, Z)`` uint8 labels.

    Raises:
        LesionsegError: An unknown connectivity.
    """
    labels = current_labels(probabilities, labels)
    components = find_components(labels, connectivity, NAME)
    kept = np.zeros(len(components.sizes), bool)
    for cls in np.unique(components.classes[1:]):
        members = np.flatnonzero(components.classes == cls)
        kept[members[np.argmax(components.sizes[members])]] = True
    return components.keep(labels, kept)
