"""Dense prediction: tiling, whole-volume and slice-wise prediction, ensembles, TTA, outputs."""

from lesionseg.inference.ensemble import predict_ensemble
from lesionseg.inference.predictor import labels_from_probabilities, predict_volume, stack_slices
from lesionseg.inference.tiling import choose_tile_size, plan_same, plan_valid

__all__ = [
    "choose_tile_size",
    "labels_from_probabilities",
    "plan_same",
    "plan_valid",
    "predict_ensemble",
    "predict_volume",
    "stack_slices",
]
