"""The 3D fully connected CRF of DeepMedic: parameters, lattice filtering, inference, tuning."""

from lesionseg.postprocess.crf.meanfield import crf_labels, dense_crf, map_intensities
from lesionseg.postprocess.crf.params import CRFParams, resolve_params

__all__ = ["CRFParams", "crf_labels", "dense_crf", "map_intensities", "resolve_params"]
