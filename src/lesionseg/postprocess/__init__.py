"""Post-processing steps applied to a prediction on the preprocessed grid, looked up by name.

Recipes name steps in ``predict.postprocess``, run in the order given, e.g.::

    predict:
      postprocess:
        - {crf: {params: crf.json}}                     # refine the probabilities
        - {name: threshold, threshold: {1: 0.6, 2: 0.4}}  # probabilities -> labels
        - {name: min-lesion-size, size: 10, unit: mm3}  # drop small lesions
        - keep-largest                                  # one lesion per class

Steps (one module each, registered in :data:`POSTPROCESS` with a decorator):

* ``crf`` (:mod:`~lesionseg.postprocess.crf_refine`): DeepMedic's 3D fully connected CRF;
  new probabilities.
* ``threshold`` (:mod:`~lesionseg.postprocess.threshold`): a label map from
  per-class probability thresholds.
* ``min-lesion-size`` (:mod:`~lesionseg.postprocess.min_lesion_size`): removes
  connected components smaller than a size in voxels or mm³.
* ``keep-largest`` (:mod:`~lesionseg.postprocess.keep_largest`): keeps each class's
  largest connected component.

How steps chain (the probabilities and the label map each passes on, which context a
step receives, what it may return) is defined in :mod:`lesionseg.postprocess.chain`.
Steps run on the grid the model predicts on, after preprocessing (reoriented, cropped,
resampled), with that grid's voxel size; the labels are mapped back to the input grid
afterwards (nearest neighbour).
"""

from __future__ import annotations

from lesionseg.registry import Registry

POSTPROCESS: Registry = Registry("post-processing step")

# Register the steps (import after POSTPROCESS exists; each module registers itself).
from lesionseg.postprocess import crf_refine, keep_largest, min_lesion_size, threshold  # noqa: E402, F401, I001
from lesionseg.postprocess.crf_refine import crf_step  # noqa: E402

__all__ = ["POSTPROCESS", "crf_step"]
