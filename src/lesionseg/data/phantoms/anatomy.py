"""Real anatomy for the phantoms: the ICBM152 2009a templates shipped inside nilearn.

nilearn's wheel carries the 1 mm symmetric ICBM152 2009a T1, grey-matter and
white-matter templates and its brain mask; the loaders used here read them from
the package, offline. There is no CSF map: CSF is the brain mask minus grey and
white matter, refined with the T1 intensities (dark voxels inside the mask are CSF).

Everything is in template (MNI) world millimetres, RAS. Maps derived once per
process (:func:`load_template`) are resampled onto working grids
(:func:`anatomy_on_grid`), cached per grid.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import cc3d
import numpy as np
from scipy import ndimage

#: Field of view: the template brain's bounding box plus this margin (mm), so that
#: scaled and deformed brains stay inside.
FOV_MARGIN_MM = 8.0
#: Placement of lesions uses maps at this fixed spacing, so that a seed puts lesions
#: at the same places whatever the output spacing.
PLACEMENT_SPACING_MM = 2.0
#: Territory codes (per hemisphere the same code; the side comes from x).
TERRITORIES = {"none": 0, "aca": 1, "mca": 2, "pca": 3, "deep": 4, "posterior_fossa": 5}


@dataclass(frozen=True)
class Template:
    """1 mm template maps in MNI space (float32, shape 197×233×189).

    Attributes:
        gm: Grey-matter fraction.
        wm: White-matter fraction.
        csf: CSF fraction (derived); ``gm + wm + csf = brain``.
        brain: Brain mask (0/1).
        ventricle_distance: Distance (mm) to the lateral ventricles (0 inside).
        depth: Distance (mm) from the brain surface (0 outside).
        ventricle_y: Anterior and posterior ends of the lateral ventricles (world y, mm).
        affine: Voxel-to-world matrix.
    """

    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    brain: np.ndarray
    ventricle_distance: np.ndarray
    depth: np.ndarray
    ventricle_y: tuple[float, float]
    affine: np.ndarray

    def brain_box(self) -> tuple[np.ndarray, np.ndarray]:
        """World bounding box (lower, upper corner, mm) of the brain mask."""
        idx = np.argwhere(self.brain > 0.5)
        lo = self.affine[:3, :3] @ idx.min(0) + self.affine[:3, 3]
        hi = self.affine[:3, :3] @ idx.max(0) + self.affine[:3, 3]
        return lo, hi


def _load_nilearn() -> tuple[np.ndarray, ...]:
    """The four nilearn templates as float32 arrays, plus the affine (offline loaders)."""
    from nilearn.datasets import (
        load_mni152_brain_mask,
        load_mni152_gm_template,
        load_mni152_template,
        load_mni152_wm_template,
    )

    t1_img = load_mni152_template(resolution=1)
    arrays = [
        np.asarray(img.get_fdata(dtype=np.float32))
        for img in (
            t1_img,
            load_mni152_gm_template(resolution=1),
            load_mni152_wm_template(resolution=1),
            load_mni152_brain_mask(resolution=1),
        )
    ]
    return (*arrays, np.asarray(t1_img.affine, dtype=np.float64))


def template_t1() -> np.ndarray:
    """The 1 mm ICBM152 2009a T1 template (float32, on :class:`Template`'s grid)."""
    return _load_nilearn()[0]


@functools.lru_cache(maxsize=1)
def load_template() -> Template:
    """Load the ICBM152 templates and derive CSF, ventricles and depth (cached per process).

    Takes about 5 s once (two Euclidean distance transforms at 1 mm).
    """
    t1, gm, wm, brain, affine = _load_nilearn()
    brain = (brain > 0.5).astype(np.float32)
    gm = np.clip(gm, 0, 1) * brain
    wm = np.clip(wm, 0, 1) * brain
    # In the template CSF is ~0.3 of white matter on T1 and grey matter ~0.65: voxels
    # darker than grey matter are partly CSF. Averaging with the residual of the tissue
    # maps keeps sulci that the probability maps blur away.
    residual = np.clip(1.0 - gm - wm, 0, 1)
    dark = np.clip((0.6 - t1) / 0.3, 0, 1)
    csf = np.clip(0.5 * residual + 0.5 * dark, 0, 1) * brain
    tissue = gm + wm
    scale = np.where(tissue > 1e-3, (brain - csf) / np.maximum(tissue, 1e-3), 0.0)
    gm = (gm * scale).astype(np.float32)
    wm = (wm * scale).astype(np.float32)
    csf = np.where(brain > 0, 1.0 - gm - wm, 0.0).astype(np.float32)

    depth = ndimage.distance_transform_edt(brain > 0).astype(np.float32)
    ventricles = _lateral_ventricles(csf, depth, affine)
    ventricle_distance = ndimage.distance_transform_edt(~ventricles).astype(np.float32)
    ys = np.nonzero(ventricles.any(axis=(0, 2)))[0] + affine[1, 3]
    return Template(
        gm, wm, csf, brain, ventricle_distance, depth, (float(ys.max()), float(ys.min())), affine
    )


def _lateral_ventricles(csf: np.ndarray, depth: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Mask of the lateral ventricles: large deep CSF components away from the midline.

    The interhemispheric fissure is also deep CSF; it is told apart by its centroid
    lying on the midline (the lateral ventricles sit at |x| ≈ 15 mm).
    """
    x = np.arange(csf.shape[0]) + affine[0, 3]
    z = np.arange(csf.shape[2]) + affine[2, 3]
    candidate = (csf > 0.5) & (depth > 12) & (np.abs(x)[:, None, None] < 35)
    candidate &= (z > -15)[None, None, :]
    labels = cc3d.connected_components(candidate, connectivity=6)
    stats = cc3d.statistics(labels)
    keep = [
        k
        for k in range(1, len(stats["voxel_counts"]))
        if stats["voxel_counts"][k] >= 1000 and abs(stats["centroids"][k][0] + affine[0, 3]) > 5
    ]
    return np.isin(labels, keep)


@dataclass(frozen=True)
class WorkGrid:
    """A regular voxel grid in template world space (RAS, axis-aligned).

    Attributes:
        origin: World position (mm) of voxel (0, 0, 0).
        step: Voxel size (mm) along each axis.
        shape: Number of voxels along each axis.
    """

    origin: tuple[float, float, float]
    step: tuple[float, float, float]
    shape: tuple[int, int, int]

    def axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World coordinates (mm) of the voxel centres along each axis."""
        return tuple(
            (o + s * np.arange(n)).astype(np.float32)
            for o, s, n in zip(self.origin, self.step, self.shape)
        )

    @property
    def affine(self) -> np.ndarray:
        """Voxel-to-world matrix."""
        affine = np.diag([*self.step, 1.0])
        affine[:3, 3] = self.origin
        return affine

    @property
    def voxel_volume_mm3(self) -> float:
        """Volume of one voxel in mm³."""
        return float(np.prod(self.step))

    def to_index(self, world: np.ndarray) -> np.ndarray:
        """World coordinates ``(3, ...)`` → fractional voxel indices ``(3, ...)``."""
        o = np.asarray(self.origin, dtype=np.float32).reshape((3,) + (1,) * (world.ndim - 1))
        s = np.asarray(self.step, dtype=np.float32).reshape((3,) + (1,) * (world.ndim - 1))
        return (world - o) / s


@functools.lru_cache(maxsize=1)
def field_of_view() -> tuple[np.ndarray, np.ndarray]:
    """World box (lower, upper corner, mm) that every phantom grid covers."""
    lo, hi = load_template().brain_box()
    template_lo = load_template().affine[:3, 3]
    lo = np.maximum(lo - FOV_MARGIN_MM, template_lo)
    return lo, hi + FOV_MARGIN_MM


def make_grid(step: tuple[float, float, float]) -> WorkGrid:
    """The grid with voxel size ``step`` covering :func:`field_of_view`, centred on it."""
    lo, hi = field_of_view()
    centre = (lo + hi) / 2
    shape = tuple(int(np.ceil((h - low) / s)) for low, h, s in zip(lo, hi, step))
    origin = tuple(float(c - (n - 1) / 2 * s) for c, n, s in zip(centre, shape, step))
    return WorkGrid(origin, tuple(float(s) for s in step), shape)


@dataclass(frozen=True)
class Anatomy:
    """Template maps resampled onto one working grid (all float32).

    Attributes:
        grid: The working grid.
        gm: Grey-matter fraction.
        wm: White-matter fraction.
        csf: CSF fraction.
        brain: Brain fraction (mask, partial at its border).
        ventricle_distance: Distance (mm) to the lateral ventricles.
        depth: Depth (mm) below the brain surface.
        territory: Vascular territory code (see :data:`TERRITORIES`), int8.
    """

    grid: WorkGrid
    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    brain: np.ndarray
    ventricle_distance: np.ndarray
    depth: np.ndarray
    territory: np.ndarray
    _cdf_cache: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def parenchyma(self) -> np.ndarray:
        """Grey plus white matter fraction."""
        return self.gm + self.wm


def resample_template(
    volume: np.ndarray, template_affine: np.ndarray, grid: WorkGrid, antialias: bool
) -> np.ndarray:
    """Resample a 1 mm template map onto ``grid`` (linear, Gaussian anti-aliasing)."""
    if antialias:
        # Gaussian whose FWHM covers the new voxel: partial-volume fractions rather than aliasing.
        sigma = [np.sqrt(max(s * s - 1.0, 0.0)) / 2.355 for s in grid.step]
        if max(sigma) > 0:
            volume = ndimage.gaussian_filter(volume, sigma, mode="constant")
    index_axes = [(a - template_affine[i, 3]) for i, a in enumerate(grid.axes())]
    coords = np.stack(np.meshgrid(*index_axes, indexing="ij", copy=False))
    return ndimage.map_coordinates(
        volume, coords, order=1, mode="nearest", output=np.float32, prefilter=False
    )


def territory_map(grid: WorkGrid, depth: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """Approximate arterial territories from MNI coordinates (int8 codes).

    Coarse rules, enough to place infarcts where they occur: anterior cerebral artery
    medially in front of the parieto-occipital region, posterior cerebral artery in the
    occipital lobe and the inferomedial temporal lobe, deep perforators in the basal
    ganglia and internal capsule, the vertebrobasilar system below the tentorium, and
    the middle cerebral artery everywhere else above it.
    """
    x, y, z = np.meshgrid(*grid.axes(), indexing="ij", sparse=True)
    ax = np.abs(x)
    fossa = ((z < -10) & (y < -38)) | ((z < -22) & (ax < 16) & (y < -8))
    deep = (ax > 8) & (ax < 30) & (y > -30) & (y < 22) & (z > -6) & (z < 22) & (depth > 22)
    aca = (ax < 20) & (y > -50) & (z > 6)
    pca = (y < -68) | ((y < -25) & (z < 2) & (ax < 42))
    code = np.full(grid.shape, TERRITORIES["mca"], dtype=np.int8)
    code[np.broadcast_to(pca, grid.shape)] = TERRITORIES["pca"]
    code[np.broadcast_to(aca, grid.shape)] = TERRITORIES["aca"]
    code[np.broadcast_to(deep, grid.shape)] = TERRITORIES["deep"]
    code[np.broadcast_to(fossa, grid.shape)] = TERRITORIES["posterior_fossa"]
    code[brain < 0.5] = TERRITORIES["none"]
    return code


@functools.lru_cache(maxsize=4)
def anatomy_on_grid(grid: WorkGrid) -> Anatomy:
    """The template maps on ``grid`` (cached: a few grids per process)."""
    tpl = load_template()
    fractions = {
        name: resample_template(getattr(tpl, name), tpl.affine, grid, antialias=True)
        for name in ("gm", "wm", "csf", "brain")
    }
    distances = {
        name: resample_template(getattr(tpl, name), tpl.affine, grid, antialias=False)
        for name in ("ventricle_distance", "depth")
    }
    territory = territory_map(grid, distances["depth"], fractions["brain"])
    return Anatomy(grid, **fractions, **distances, territory=territory)


def placement_anatomy() -> Anatomy:
    """Anatomy on the fixed placement grid used to choose lesion positions."""
    return anatomy_on_grid(make_grid((PLACEMENT_SPACING_MM,) * 3))


def sample_positions(
    rng: np.random.Generator, anatomy: Anatomy, weights: np.ndarray, n: int, key: str | None = None
) -> np.ndarray:
    """Draw ``n`` world positions (mm) with probability proportional to ``weights``.

    Each draw picks a voxel of ``anatomy.grid`` and a uniform position inside it.

    Args:
        rng: Random generator.
        anatomy: Anatomy whose grid ``weights`` lives on.
        weights: Non-negative weights, shape ``anatomy.grid.shape``.
        n: Number of positions.
        key: If given, the cumulative weights are cached under this name.

    Returns:
        Array ``(n, 3)`` of world coordinates.
    """
    cdf = anatomy._cdf_cache.get(key) if key else None
    if cdf is None:
        cdf = np.cumsum(weights.ravel(), dtype=np.float64)
        if cdf[-1] <= 0:
            raise ValueError("no voxel has a positive placement weight")
        if key:
            anatomy._cdf_cache[key] = cdf
    flat = np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right")
    flat = np.minimum(flat, cdf.size - 1)
    index = np.stack(np.unravel_index(flat, anatomy.grid.shape), axis=1).astype(np.float64)
    index += rng.random((n, 3)) - 0.5
    return np.asarray(anatomy.grid.origin) + index * np.asarray(anatomy.grid.step)


def value_at(anatomy: Anatomy, volume: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Values of ``volume`` (on ``anatomy.grid``) at world points ``(n, 3)``, trilinear."""
    idx = (np.asarray(points) - np.asarray(anatomy.grid.origin)) / np.asarray(anatomy.grid.step)
    return ndimage.map_coordinates(volume, idx.T, order=1, mode="nearest")


def gradient_at(anatomy: Anatomy, volume: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Unit gradient directions of ``volume`` at world points ``(n, 3)`` (central differences)."""
    step = np.asarray(anatomy.grid.step)
    grads = []
    for axis in range(3):
        delta = np.zeros(3)
        delta[axis] = step[axis]
        grads.append(
            (value_at(anatomy, volume, points + delta) - value_at(anatomy, volume, points - delta))
            / (2 * step[axis])
        )
    g = np.stack(grads, axis=1)
    norm = np.linalg.norm(g, axis=1, keepdims=True)
    return np.where(norm > 1e-6, g / np.maximum(norm, 1e-6), np.array([0.0, 0.0, 1.0]))
