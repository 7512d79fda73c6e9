"""Irregular blob lesions with partial-volume borders, rendered resolution-independently.

A blob is an ellipsoid whose surface is perturbed by a few smooth waves (a cheap,
analytic stand-in for smooth-noise-shaped lesions). It is defined in world
millimetres, so the same blob renders at any voxel size; the fraction of each voxel
inside it comes from the signed distance to its surface over a one-voxel ramp,
which is what a real acquisition's partial-volume effect looks like at the border.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.spatial.transform import Rotation

from lesionseg.data.phantoms.anatomy import WorkGrid


@dataclass(frozen=True)
class Blob:
    """An irregular ellipsoid in world millimetres.

    Attributes:
        centre: Centre (mm).
        radii: Semi-axes (mm).
        rotation: 3×3 matrix whose columns are the semi-axis directions.
        wave_freq: ``(k, 3)`` wave vectors in the blob's unit-sphere coordinates.
        wave_phase: ``(k,)`` phases.
        wave_amp: ``(k,)`` amplitudes (relative to the radius).
    """

    centre: np.ndarray
    radii: np.ndarray
    rotation: np.ndarray
    wave_freq: np.ndarray
    wave_phase: np.ndarray
    wave_amp: np.ndarray

    @property
    def extent(self) -> float:
        """Radius (mm) of a ball around the centre that contains the blob."""
        return float(self.radii.max() * (1.0 + np.abs(self.wave_amp).sum()))

    @property
    def nominal_volume_mm3(self) -> float:
        """Volume of the unperturbed ellipsoid (mm³)."""
        return float(4.0 / 3.0 * np.pi * np.prod(self.radii))

    def signed_distance(self, offsets: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
        """Approximate signed distance (mm, negative inside) at offsets from the centre.

        Uses ``(ρ - 1 - n) / |∇ρ|`` with ``ρ`` the ellipsoidal radius and ``n`` the
        surface perturbation: exact on the unperturbed surface, good to a fraction of
        a voxel within the one-voxel partial-volume ramp.
        """
        q = []
        for k in range(3):
            axis = self.rotation[:, k] / self.radii[k]
            q.append(axis[0] * offsets[0] + axis[1] * offsets[1] + axis[2] * offsets[2])
        rho = np.sqrt(q[0] ** 2 + q[1] ** 2 + q[2] ** 2)
        grad = np.sqrt(
            (q[0] / self.radii[0]) ** 2 + (q[1] / self.radii[1]) ** 2 + (q[2] / self.radii[2]) ** 2
        ) / np.maximum(rho, 1e-6)
        wave = np.zeros_like(rho)
        for f, phase, amp in zip(self.wave_freq, self.wave_phase, self.wave_amp):
            wave += amp * np.sin(f[0] * q[0] + f[1] * q[1] + f[2] * q[2] + phase)
        # Near the centre ρ → 0 and the gradient formula degenerates; fall back to 1/r_min.
        grad = np.where(rho > 0.2, grad, 1.0 / self.radii.min())
        return (rho - 1.0 - wave) / grad


def random_blob(
    rng: np.random.Generator,
    centre: np.ndarray,
    radius: float,
    aspect: tuple[float, float] = (0.55, 0.9),
    roughness: float = 0.12,
    direction: np.ndarray | None = None,
    waves: int = 4,
) -> Blob:
    """Draw an ovoid blob.

    Args:
        rng: Random generator (a fixed number of draws per call).
        centre: Centre (mm).
        radius: Longest semi-axis (mm).
        aspect: Range of the ratio of the two other semi-axes to the longest.
        roughness: Total amplitude of the surface waves (relative to the radius).
        direction: Direction of the longest axis; random if None.
        waves: Number of surface waves.
    """
    ratios = np.sort(rng.uniform(*aspect, size=2))[::-1]
    radii = np.array([radius, radius * ratios[0], radius * ratios[1]])
    random_rotation = Rotation.from_rotvec(rng.normal(size=3) * np.pi).as_matrix()
    if direction is not None:
        # Keep the random spin about the requested long axis.
        u = np.asarray(direction, dtype=np.float64)
        u = u / max(np.linalg.norm(u), 1e-9)
        helper = random_rotation[:, 1] - u * (random_rotation[:, 1] @ u)
        if np.linalg.norm(helper) < 1e-6:
            helper = np.cross(u, [1.0, 0.0, 0.0])
        v = helper / np.linalg.norm(helper)
        rotation = np.stack([u, v, np.cross(u, v)], axis=1)
    else:
        rotation = random_rotation
    freq = rng.normal(size=(waves, 3))
    freq *= (rng.uniform(1.5, 4.0, size=waves) / np.linalg.norm(freq, axis=1))[:, None]
    phase = rng.uniform(0, 2 * np.pi, size=waves)
    amp = rng.dirichlet(np.ones(waves)) * roughness
    return Blob(np.asarray(centre, dtype=np.float64), radii, rotation, freq, phase, amp)


@dataclass
class Compartment:
    """A lesion compartment on a working grid: a fraction map and a per-lesion strength.

    Overlapping blobs combine by the maximum fraction; where a blob's fraction wins,
    the strength (0-1, how marked its intensity change is) is the blob's.

    Attributes:
        fraction: Fraction of each voxel occupied, float32.
        strength: Strength of the occupying lesion, float32.
    """

    fraction: np.ndarray
    strength: np.ndarray

    @classmethod
    def empty(cls, shape: tuple[int, int, int]) -> Compartment:
        """An empty compartment."""
        return cls(np.zeros(shape, np.float32), np.zeros(shape, np.float32))

    def add(self, local: np.ndarray, where: tuple[slice, ...], strength: float) -> None:
        """Merge a local fraction map placed at ``where``."""
        current = self.fraction[where]
        wins = local > current
        self.fraction[where] = np.maximum(current, local)
        self.strength[where] = np.where(wins, np.float32(strength), self.strength[where])


def blob_box(blob: Blob, grid: WorkGrid, margin_mm: float = 0.0) -> tuple[slice, ...] | None:
    """Slices of ``grid`` covering ``blob`` (grown by ``margin_mm``), or None if outside."""
    step = np.asarray(grid.step)
    extent = blob.extent + max(margin_mm, 0.0) + step.max()
    lo = np.floor((blob.centre - extent - np.asarray(grid.origin)) / step).astype(int)
    hi = np.ceil((blob.centre + extent - np.asarray(grid.origin)) / step).astype(int) + 1
    lo = np.maximum(lo, 0)
    hi = np.minimum(hi, grid.shape)
    if np.any(hi <= lo):
        return None
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def fraction_on_box(
    blob: Blob, grid: WorkGrid, box: tuple[slice, ...], margin_mm: float = 0.0
) -> np.ndarray:
    """Fraction of each voxel of ``grid[box]`` inside ``blob`` grown by ``margin_mm``.

    A negative margin shrinks the blob (e.g. the necrotic core inside a tumour).
    """
    step = np.asarray(grid.step)
    offsets = []
    for axis in range(3):
        coords = grid.origin[axis] + step[axis] * np.arange(box[axis].start, box[axis].stop)
        shape = [1, 1, 1]
        shape[axis] = -1
        offsets.append((coords - blob.centre[axis]).reshape(shape))
    distance = blob.signed_distance(tuple(offsets)) - margin_mm
    # One-voxel linear ramp across the surface: the partial-volume fraction of a voxel
    # cut by a locally flat boundary.
    ramp = float(np.mean(step))
    return np.clip(0.5 - distance / ramp, 0.0, 1.0).astype(np.float32)


def blob_fraction(
    blob: Blob, grid: WorkGrid, margin_mm: float = 0.0
) -> tuple[np.ndarray, tuple[slice, ...]] | None:
    """Fraction of each voxel of ``grid`` inside ``blob``, on the blob's bounding box.

    Args:
        blob: The blob.
        grid: The working grid.
        margin_mm: Outward shift of the surface (mm), e.g. for a rim around a core.

    Returns:
        ``(fraction, slices)`` with ``fraction`` on ``grid[slices]``, or None if the
        blob lies outside the grid.
    """
    box = blob_box(blob, grid, margin_mm)
    if box is None:
        return None
    return fraction_on_box(blob, grid, box, margin_mm), box


@dataclass
class LesionRecord:
    """What was placed: for the data set's documentation and the tests.

    Attributes:
        kind: Lesion type (e.g. ``"periventricular"``, ``"confluent"``, ``"territorial"``).
        centre: Centre in template world mm.
        volume_ml: Rendered volume in template space (ml), after confinement to tissue.
        strength: Intensity strength (0-1).
        labelled: False for healthy look-alikes (caps, artefacts) that are not lesions.
    """

    kind: str
    centre: list[float]
    volume_ml: float
    strength: float
    labelled: bool = True
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        """JSON-ready dict."""
        out = {
            "kind": self.kind,
            "centre_mm": [round(float(c), 1) for c in self.centre],
            "volume_ml": round(float(self.volume_ml), 4),
            "strength": round(float(self.strength), 3),
            "labelled": self.labelled,
        }
        out.update(self.extra)
        return out


def render_blobs(
    blobs: list[Blob],
    grid: WorkGrid,
    compartment: Compartment,
    strength: float,
    confine: np.ndarray | None = None,
    margin_mm: float = 0.0,
) -> float:
    """Render the union of ``blobs`` (one lesion) into ``compartment``.

    Args:
        blobs: Blobs forming one lesion (a confluent lesion has several).
        grid: Working grid.
        compartment: Where to render.
        strength: The lesion's strength.
        confine: Optional map (0-1) on ``grid`` multiplying the fraction, e.g. the
            parenchyma so that a lesion never fills a ventricle.
        margin_mm: Outward shift of every blob's surface.

    Returns:
        Rendered volume (ml).
    """
    parts = [blob_fraction(b, grid, margin_mm) for b in blobs]
    parts = [p for p in parts if p is not None]
    if not parts:
        return 0.0
    lo = np.min([[s.start for s in sl] for _, sl in parts], axis=0)
    hi = np.max([[s.stop for s in sl] for _, sl in parts], axis=0)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    local = np.zeros(tuple(int(b - a) for a, b in zip(lo, hi)), np.float32)
    for fraction, sl in parts:
        inner = tuple(slice(s.start - a, s.stop - a) for s, a in zip(sl, lo))
        np.maximum(local[inner], fraction, out=local[inner])
    if confine is not None:
        local *= confine[box]
    compartment.add(local, box, strength)
    return float(local.sum()) * grid.voxel_volume_mm3 / 1000.0
