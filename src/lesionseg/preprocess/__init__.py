"""Preprocessing: reorient, brain mask, crop, resample, bias correction, normalisation.

Each step is recorded in a :class:`PreprocessRecord`, so that any output computed
on the preprocessed grid can be mapped back onto the subject's original grid.
"""

from lesionseg.preprocess.cache import CachedDataset, CachedSubject, open_cache, preprocess_dataset
from lesionseg.preprocess.pipeline import (
    PreprocessConfig,
    PreprocessedSubject,
    load_subject_volumes,
    preprocess_subject,
)
from lesionseg.preprocess.record import PreprocessRecord

__all__ = [
    "CachedDataset",
    "CachedSubject",
    "PreprocessConfig",
    "PreprocessRecord",
    "PreprocessedSubject",
    "load_subject_volumes",
    "open_cache",
    "preprocess_dataset",
    "preprocess_subject",
]
