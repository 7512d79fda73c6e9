"""What a phantom task is: its channels and labels, where its lesions go, how they look.

A task (``ms``, ``tumor``, ``stroke-acute``, ``stroke-chronic``) subclasses
:class:`PhantomTask`. The shared pipeline (:mod:`lesionseg.data.phantoms.generate`)
deforms the anatomy, asks the task for its lesion plan (template space, independent
of the voxel grid), has it render the plan's compartments, warps everything into
the subject, and asks the task for the clean signals and the label map; bias field,
noise and storage scaling are shared.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lesionseg.data.phantoms.anatomy import Anatomy
from lesionseg.data.phantoms.deform import DeformConfig, MassEffect
from lesionseg.data.phantoms.lesions import Compartment, LesionRecord


@dataclass
class LesionPlan:
    """A task's random choices for one subject, in template space.

    Attributes:
        items: Task-specific descriptions of lesions and look-alikes.
        mass_effects: Radial pushes to add to the subject's deformation.
        params: Other per-subject parameters (e.g. cap thickness).
    """

    items: list = field(default_factory=list)
    mass_effects: list[MassEffect] = field(default_factory=list)
    params: dict = field(default_factory=dict)


@dataclass
class Rendered:
    """Compartments rendered on the working grid, with the record of what was placed."""

    compartments: dict[str, Compartment]
    records: list[LesionRecord]


class PhantomTask:
    """Base class of the phantom tasks.

    Class attributes:
        name: Task name on the command line.
        channels: Output channel names, in data set order.
        signals: Acquired signals (default: the channels); :meth:`outputs` maps the
            noisy signals to the channels (e.g. DWI and b = 0 to DWI and ADC).
        tissue_modalities: Entries of the tissue signal table the task uses
            (default: the acquired signals).
        labels: Label value → name.
        default_snr: White-matter SNR when none is given.
        default_thickness: Slice thickness (mm) when none is given (None: isotropic).
        bias_amplitude: Standard deviation of the log bias field.
        shared_bias: One bias field for all signals (one acquisition, e.g. DWI and b = 0).
        fixed_scale: Channels stored in physical units (scale instead of a random gain).
        description: One line for dataset.json.
    """

    name: str = ""
    channels: tuple[str, ...] = ()
    signals: tuple[str, ...] = ()
    tissue_modalities: tuple[str, ...] = ()
    labels: dict[int, str] = {0: "background", 1: "lesion"}
    default_snr: float = 25.0
    default_thickness: float | None = None
    bias_amplitude: float = 0.1
    shared_bias: bool = False
    fixed_scale: dict[str, float] = {}
    description: str = ""
    deform: DeformConfig = DeformConfig()

    @property
    def acquired(self) -> tuple[str, ...]:
        """The acquired signals."""
        return self.signals or self.channels

    def plan(self, rng: np.random.Generator, placement: Anatomy) -> LesionPlan:
        """Draw the subject's lesions in template space (grid-independent)."""
        raise NotImplementedError

    def render(self, plan: LesionPlan, anatomy: Anatomy) -> Rendered:
        """Render the plan's compartments on ``anatomy.grid``."""
        raise NotImplementedError

    def clean_signals(
        self, maps: dict[str, np.ndarray], tissue_signal: dict[str, dict[str, float]]
    ) -> dict[str, np.ndarray]:
        """Noise-free signals (white matter ≈ 1) from the warped maps.

        ``maps`` holds the tissue fractions ``wm``, ``gm``, ``csf``, ``brain`` and, per
        compartment ``c``, its fraction ``c`` and strength ``c_strength``.
        """
        raise NotImplementedError

    def label(self, maps: dict[str, np.ndarray]) -> np.ndarray:
        """Label map (uint8) from the warped maps."""
        raise NotImplementedError

    def region_maps(self) -> dict[str, np.ndarray]:
        """Template maps (1 mm MNI grid) to warp with the subject for :meth:`annotate`.

        None by default; a task that records facts about its lesions relative to the
        anatomy (e.g. their location class) names the maps it needs.
        """
        return {}

    def annotate(
        self, label: np.ndarray, regions: dict[str, np.ndarray], affine: np.ndarray
    ) -> dict:
        """Facts about the subject's labelled lesions for ``phantoms.json`` (default none).

        Args:
            label: The subject's label map.
            regions: :meth:`region_maps` warped onto the subject's grid (fractions).
            affine: The subject's voxel-to-world matrix.
        """
        return {}

    def outputs(self, signals: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Output channels from acquired signals (default: the same)."""
        return {name: signals[name] for name in self.channels}
