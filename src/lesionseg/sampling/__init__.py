"""Training examples from preprocessed subjects, looked up by name in :data:`SAMPLERS`.

Registered samplers: ``segments`` (class-balanced 3D segments, DeepMedic and every
dense 3D model) and ``slices`` (2D slices and 2.5D slice stacks, the U-Nets and
D-UNet), ``candidates`` (patches or segments centred on voxels chosen by rules on
channels and stored outputs: the MSSEG cascade's candidates and hard negatives) and
``slabs`` (non-overlapping slabs of slices with lesion-keeping in-plane crops: Brain SegNet)
and ``components`` (small components of a stored map, labelled by the reference: MUSCLE Net).
"""

from lesionseg.registry import Registry
from lesionseg.sampling.base import ArraySubject, Sampler, SubjectArrays
from lesionseg.sampling.candidates import CandidateSampler
from lesionseg.sampling.components import ComponentSampler
from lesionseg.sampling.crop import box_around, crop
from lesionseg.sampling.segments import SegmentSampler
from lesionseg.sampling.slabs import SlabSampler
from lesionseg.sampling.slices import SliceSampler

SAMPLERS: Registry = Registry("sampler")
SAMPLERS.register("segments")(SegmentSampler)
SAMPLERS.register("slices")(SliceSampler)
SAMPLERS.register("candidates")(CandidateSampler)
SAMPLERS.register("slabs")(SlabSampler)
SAMPLERS.register("components")(ComponentSampler)

__all__ = [
    "SAMPLERS",
    "ArraySubject",
    "CandidateSampler",
    "ComponentSampler",
    "Sampler",
    "SegmentSampler",
    "SlabSampler",
    "SliceSampler",
    "SubjectArrays",
    "box_around",
    "crop",
]
