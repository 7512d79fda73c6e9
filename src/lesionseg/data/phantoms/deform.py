"""Per-subject anatomy: a random affine and smooth non-linear deformation, and mass effect.

A phantom's image at subject-space point ``x`` shows the template at ``T(x)``:

``T(x) = M(c + A (x - c) + t + u(x))``

with ``A`` a random rotation and anisotropic scaling (head size and pose), ``t`` a
small translation, ``u`` a smooth random displacement drawn on a coarse lattice
(fixed in mm, so the same seed gives the same brain at every spacing), and ``M`` an
optional radial mass effect (a tumour pushing the surrounding anatomy away).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from lesionseg.data.phantoms.anatomy import WorkGrid, field_of_view
from lesionseg.data.phantoms.fields import LatticeField, random_lattice_field


@dataclass(frozen=True)
class DeformConfig:
    """Ranges of the random subject deformation.

    Attributes:
        scale: Range of the global scale factor (brain size).
        anisotropy: Standard deviation of the extra per-axis scale.
        rotation_deg: Standard deviation of the rotation angle about each axis.
        translation_mm: Standard deviation of the translation per axis.
        warp_mm: Standard deviation of the non-linear displacement per axis.
        control_mm: Spacing of the displacement lattice.
    """

    scale: tuple[float, float] = (0.92, 1.06)
    anisotropy: float = 0.025
    rotation_deg: float = 3.0
    translation_mm: float = 2.0
    warp_mm: float = 2.5
    control_mm: float = 20.0


@dataclass(frozen=True)
class MassEffect:
    """Radial push of the anatomy away from a centre (template world mm).

    A template ball of radius ``r0`` fills a ball of radius ``r1 > r0`` in the
    subject; outside it the displacement ``r1 - r0`` decays over ``decay`` mm, so the
    surrounding tissue is compressed and shifted (e.g. across the midline).

    Attributes:
        centre: Centre in template world mm.
        r0: Radius of the template region that expands.
        r1: Radius it expands to.
        decay: Decay length (mm) of the displacement outside ``r1``.
    """

    centre: tuple[float, float, float]
    r0: float
    r1: float
    decay: float = 15.0

    def template_radius(self, r: np.ndarray) -> np.ndarray:
        """Template radius that appears at subject radius ``r`` (monotonic in ``r``)."""
        inside = r * (self.r0 / self.r1)
        outside = r - (self.r1 - self.r0) * np.exp(-(r - self.r1) / self.decay)
        return np.where(r < self.r1, inside, outside)


@dataclass(frozen=True)
class Deformation:
    """A subject's deformation (subject space → template space).

    Attributes:
        matrix: Linear part ``A`` (3×3).
        translation: ``t`` (mm).
        centre: ``c``, the centre of rotation and scaling (mm).
        warp: Lattice of the non-linear displacement ``u`` (3 components, mm).
        mass_effects: Radial pushes applied after the rest.
    """

    matrix: np.ndarray
    translation: np.ndarray
    centre: np.ndarray
    warp: LatticeField
    mass_effects: tuple[MassEffect, ...] = field(default_factory=tuple)

    def with_mass_effect(self, effect: MassEffect) -> Deformation:
        """A copy with one more mass effect."""
        return Deformation(
            self.matrix,
            self.translation,
            self.centre,
            self.warp,
            (*self.mass_effects, effect),
        )

    def template_points(self, grid: WorkGrid) -> np.ndarray:
        """Template world coordinates ``(3, X, Y, Z)`` (float32) of every voxel of ``grid``."""
        axes = grid.axes()
        rel = [a - np.float32(c) for a, c in zip(axes, self.centre)]
        displacement = self.warp.sample(axes)
        out = np.empty((3, *grid.shape), dtype=np.float32)
        for i in range(3):
            out[i] = displacement[i]
            out[i] += np.float32(self.centre[i] + self.translation[i])
            out[i] += np.float32(self.matrix[i, 0]) * rel[0][:, None, None]
            out[i] += np.float32(self.matrix[i, 1]) * rel[1][None, :, None]
            out[i] += np.float32(self.matrix[i, 2]) * rel[2][None, None, :]
        for effect in self.mass_effects:
            _apply_mass_effect(out, effect)
        return out


def _apply_mass_effect(points: np.ndarray, effect: MassEffect) -> None:
    """Apply a radial mass effect in place to template points ``(3, X, Y, Z)``."""
    centre = np.asarray(effect.centre, dtype=np.float32).reshape(3, 1, 1, 1)
    rel = points - centre
    r = np.sqrt((rel**2).sum(axis=0))
    ratio = effect.template_radius(r) / np.maximum(r, 1e-3)
    points[...] = centre + rel * ratio.astype(np.float32)


def random_deformation(rng: np.random.Generator, config: DeformConfig) -> Deformation:
    """Draw a subject deformation.

    The number of random draws does not depend on the output grid, so a seed gives
    the same subject at every spacing.
    """
    lo, hi = field_of_view()
    scale = rng.uniform(*config.scale) * (1 + config.anisotropy * rng.standard_normal(3))
    angles = config.rotation_deg * rng.standard_normal(3)
    rotation = Rotation.from_euler("xyz", angles, degrees=True).as_matrix()
    # Subject → template: the inverse of "scale then rotate" the template.
    matrix = np.diag(1.0 / scale) @ rotation.T
    translation = config.translation_mm * rng.standard_normal(3)
    warp = random_lattice_field(rng, lo, hi, config.control_mm, components=3)
    warp = LatticeField(warp.origin, warp.step, warp.values * np.float32(config.warp_mm))
    centre = (lo + hi) / 2
    return Deformation(matrix, translation, centre, warp)


def warp_maps(
    maps: dict[str, np.ndarray], source: WorkGrid, points: np.ndarray
) -> dict[str, np.ndarray]:
    """Sample maps on ``source`` at template points ``(3, X, Y, Z)`` (trilinear, 0 outside)."""
    coords = source.to_index(points)
    return {
        name: ndimage.map_coordinates(
            volume, coords, order=1, mode="constant", cval=0.0, output=np.float32, prefilter=False
        )
        for name, volume in maps.items()
    }


def slab_average(volume: np.ndarray, factor: int) -> np.ndarray:
    """Average groups of ``factor`` consecutive slices along axis 2 (thick-slice profile)."""
    if factor == 1:
        return volume
    nz = volume.shape[2] // factor
    trimmed = volume[:, :, : nz * factor]
    return trimmed.reshape(volume.shape[0], volume.shape[1], nz, factor).mean(axis=3)
