"""Training examples from preprocessed subjects, looked up by name in :data:`SAMPLERS`.

Registered samplers: ``segments`` (class-balanced 3D segments, DeepMedic and every
dense 3D model) and ``slices`` (2D slices and 2.5D slice stacks, the U-Nets and
D-UNet). Samplers for candidate patches and components plug into the same
:class:`~lesionseg.sampling.base.Sampler` interface.
"""

from lesionseg.registry import Registry
from lesionseg.sampling.base import ArraySubject, Sampler, SubjectArrays
from lesionseg.sampling.crop import box_around, crop
from lesionseg.sampling.segments import SegmentSampler
from lesionseg.sampling.slices import SliceSampler

SAMPLERS: Registry = Registry("sampler")
SAMPLERS.register("segments")(SegmentSampler)
SAMPLERS.register("slices")(SliceSampler)

__all__ = [
    "SAMPLERS",
    "ArraySubject",
    "Sampler",
    "SegmentSampler",
    "SliceSampler",
    "SubjectArrays",
    "box_around",
    "crop",
]
