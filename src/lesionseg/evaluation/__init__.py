"""Evaluation: voxel, surface and lesion-wise metrics, statistics, tables and plots.

Typical use from Python::

    from lesionseg.evaluation import evaluate_case, evaluate_masks
    rows = evaluate_case(pred_labels, ref_labels, spacing=(1.0, 1.0, 3.0))
    metrics = evaluate_masks(pred_mask, ref_mask, spacing, presets=("isles22", "msseg"))

and for folders or data sets :func:`evaluate` (see ``lesionseg evaluate --help``).
"""

from lesionseg.evaluation.api import (
    DEFAULT_PRESETS,
    EvaluationResult,
    evaluate,
    evaluate_case,
    evaluate_masks,
    find_cases,
)
from lesionseg.evaluation.lesionwise import PRESETS, LesionPreset, get_preset, lesion_metrics
from lesionseg.evaluation.surface import HD95_VARIANTS, surface_metrics
from lesionseg.evaluation.voxel import GlobalDice, voxel_metrics

__all__ = [
    "DEFAULT_PRESETS",
    "HD95_VARIANTS",
    "PRESETS",
    "EvaluationResult",
    "GlobalDice",
    "LesionPreset",
    "evaluate",
    "evaluate_case",
    "evaluate_masks",
    "find_cases",
    "get_preset",
    "lesion_metrics",
    "surface_metrics",
    "voxel_metrics",
]
