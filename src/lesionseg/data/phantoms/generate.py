"""The shared per-subject pipeline: anatomy → lesions → warp → contrast → bias → noise.

Every random choice of subject ``k`` flows from its own child seed
``SeedSequence(seed, spawn_key=(task, k))``, split into independent streams for
the deformation, the lesions, the contrasts, the bias fields and the noise. Subject
``k`` is therefore the same whatever the number of subjects, and switching the noise
off (``snr=None``) leaves everything else unchanged. The deformation, lesions,
contrasts and bias fields are drawn independently of the voxel grid, so one seed
gives the same subject at every spacing.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from lesionseg.data.phantoms.anatomy import (
    WorkGrid,
    anatomy_on_grid,
    field_of_view,
    placement_anatomy,
)
from lesionseg.data.phantoms.base import PhantomTask
from lesionseg.data.phantoms.contrast import jitter_tissues
from lesionseg.data.phantoms.deform import random_deformation, slab_average, warp_maps
from lesionseg.data.phantoms.lesions import LesionRecord
from lesionseg.data.phantoms.noise import bias_field, rician

#: Stored white-matter intensity before the random per-subject gain.
WM_LEVEL = 1000.0
#: Range of the per-subject, per-channel scanner gain (intensities are arbitrary units).
GAIN_RANGE = (0.6, 1.6)
INT16_MAX = 32767


@dataclass
class Phantom:
    """One synthetic subject on its output grid.

    Attributes:
        id: Case id.
        images: Channel name → stored image (int16, 0 outside the brain).
        label: Label map (uint8).
        mask: Brain mask (uint8).
        affine: Voxel-to-world matrix of the output grid.
        clean: Channel name → noise-free image in stored units (float32), for checks.
        tissues: Tissue fractions ``wm``, ``gm``, ``csf`` on the output grid.
        noise_sigma: Channel → Gaussian noise standard deviation in stored units
            (acquired channels only).
        records: Lesions and look-alikes placed.
        info: Per-subject parameters (seed, gains, SNR, ...).
    """

    id: str
    images: dict[str, np.ndarray]
    label: np.ndarray
    mask: np.ndarray
    affine: np.ndarray
    clean: dict[str, np.ndarray] = field(repr=False)
    tissues: dict[str, np.ndarray] = field(repr=False)
    noise_sigma: dict[str, float]
    records: list[LesionRecord]
    info: dict

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size (mm)."""
        return tuple(float(s) for s in np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0)))


def working_grid(spacing: float, thickness: float | None) -> tuple[WorkGrid, int, np.ndarray]:
    """The grid phantoms are rendered on, the slab factor, and the output affine.

    With thick slices (``thickness > spacing``) rendering happens on slices of
    ``thickness / k`` mm, ``k = round(thickness / spacing)``, and every ``k`` are
    averaged into one output slice: the slice profile of a 2D acquisition.
    """
    if spacing <= 0 or (thickness is not None and thickness <= 0):
        raise ValueError("spacing and slice thickness must be positive")
    thickness = spacing if thickness is None else thickness
    factor = max(1, int(round(thickness / spacing)))
    zstep = thickness / factor
    lo, hi = field_of_view()
    centre = (lo + hi) / 2
    step = (spacing, spacing, zstep)
    shape = [int(np.ceil((h - low) / s)) for low, h, s in zip(lo[:2], hi[:2], step[:2])]
    shape.append(factor * int(np.ceil((hi[2] - lo[2]) / thickness)))
    origin = tuple(float(c - (n - 1) / 2 * s) for c, n, s in zip(centre, shape, step))
    grid = WorkGrid(origin, tuple(float(s) for s in step), tuple(shape))
    affine = np.diag([spacing, spacing, thickness, 1.0])
    affine[:3, 3] = origin
    affine[2, 3] = origin[2] + (factor - 1) / 2 * zstep
    return grid, factor, affine


def subject_streams(task: str, index: int, seed: int) -> dict[str, np.random.Generator]:
    """Independent random generators of subject ``index``."""
    task_key = int.from_bytes(task.encode(), "little") % (2**32)
    children = np.random.SeedSequence(seed, spawn_key=(task_key, index)).spawn(5)
    names = ("deform", "lesions", "contrast", "bias", "noise")
    return {name: np.random.default_rng(child) for name, child in zip(names, children)}


def generate_subject(
    task: PhantomTask,
    index: int,
    seed: int,
    spacing: float = 1.0,
    slice_thickness: float | None = None,
    snr: float | None = -1.0,
    case_id: str | None = None,
) -> Phantom:
    """Generate subject ``index`` of ``task``.

    Args:
        task: The task.
        index: Subject number (its random streams depend only on seed, task and index).
        seed: Data set seed.
        spacing: In-plane voxel size (mm); isotropic unless ``slice_thickness`` is set.
        slice_thickness: Slice thickness (mm); default: the task's (or ``spacing``).
        snr: White-matter SNR; -1 for the task's default, None for no noise.
        case_id: Case id (default ``<task>_<index>``).
    """
    streams = subject_streams(task.name, index, seed)
    if snr is not None and snr < 0:
        snr = task.default_snr
    thickness = task.default_thickness if slice_thickness is None else slice_thickness
    if thickness is not None and thickness < spacing:
        thickness = spacing
    grid, factor, affine = working_grid(spacing, thickness)

    deformation = random_deformation(streams["deform"], task.deform)
    plan = task.plan(streams["lesions"], placement_anatomy())
    for effect in plan.mass_effects:
        deformation = deformation.with_mass_effect(effect)
    anatomy = anatomy_on_grid(grid)
    rendered = task.render(plan, anatomy)

    sources = {"wm": anatomy.wm, "gm": anatomy.gm, "csf": anatomy.csf, "brain": anatomy.brain}
    regions = region_maps_on_grid(task, grid)
    sources.update({f"region_{name}": volume for name, volume in regions.items()})
    for name, comp in rendered.compartments.items():
        sources[name] = comp.fraction
        sources[f"{name}_strength"] = comp.fraction * comp.strength
    points = deformation.template_points(grid)
    maps = warp_maps(sources, grid, points)
    del points
    maps = {name: slab_average(volume, factor) for name, volume in maps.items()}
    for name in rendered.compartments:
        maps[f"{name}_strength"] = maps[f"{name}_strength"] / np.maximum(maps[name], 1e-6)

    maps["spacing"] = tuple(float(s) for s in np.sqrt((affine[:3, :3] ** 2).sum(axis=0)))
    tissue_signal = jitter_tissues(
        streams["contrast"], list(task.tissue_modalities or task.acquired)
    )
    clean = task.clean_signals(maps, tissue_signal)
    mask = maps["brain"] > 0.5
    label = (task.label(maps) * mask).astype(np.uint8)

    axes = _output_axes(affine, mask.shape)
    if task.shared_bias:
        shared = bias_field(streams["bias"], axes, task.bias_amplitude)
        biases = dict.fromkeys(task.acquired, shared)
    else:
        biases = {s: bias_field(streams["bias"], axes, task.bias_amplitude) for s in task.acquired}
    biased = {s: clean[s] * biases[s] for s in task.acquired}
    sigma = None if snr is None else 1.0 / snr
    noisy = {
        s: biased[s] if sigma is None else rician(streams["noise"], biased[s], sigma)
        for s in task.acquired
    }
    outputs = task.outputs(noisy)
    clean_outputs = task.outputs(biased)

    gains = {}
    images, clean_images, noise_sigma = {}, {}, {}
    gain_rng = np.random.default_rng(streams["contrast"].integers(2**63))
    for name in task.channels:
        gain = task.fixed_scale.get(name)
        if gain is None:
            gain = WM_LEVEL * gain_rng.uniform(*GAIN_RANGE)
        gains[name] = float(gain)
        scaled = np.where(mask, outputs[name] * np.float32(gain), 0.0)
        images[name] = np.clip(np.rint(scaled), 0, INT16_MAX).astype(np.int16)
        clean_images[name] = np.where(mask, clean_outputs[name] * np.float32(gain), 0.0).astype(
            np.float32
        )
        if name in task.acquired and sigma is not None:
            noise_sigma[name] = float(gain * sigma)

    info = {
        "index": index,
        "seed": seed,
        "snr": snr,
        "gains": {k: round(v, 3) for k, v in gains.items()},
        "scale": round(float(1.0 / abs(np.linalg.det(deformation.matrix)) ** (1 / 3)), 4),
        "lesion_volume_ml": round(float(label.astype(bool).sum()) * _voxel_ml(affine), 4),
        "params": plan.params,
    }
    info.update(task.annotate(label, {name: maps[f"region_{name}"] for name in regions}, affine))
    return Phantom(
        id=case_id or f"{task.name.replace('-', '_')}_{index:03d}",
        images=images,
        label=label,
        mask=mask.astype(np.uint8),
        affine=affine,
        clean=clean_images,
        tissues={t: maps[t] for t in ("wm", "gm", "csf")},
        noise_sigma=noise_sigma,
        records=rendered.records,
        info=info,
    )


def region_maps_on_grid(task: PhantomTask, grid: WorkGrid) -> dict[str, np.ndarray]:
    """The task's template region maps on a working grid (fractions, cached per grid)."""
    names = tuple(task.region_maps())
    return {name: volume for name, volume in zip(names, _regions_on_grid(task, names, grid))}


@functools.lru_cache(maxsize=4)
def _regions_on_grid(task: PhantomTask, names: tuple[str, ...], grid: WorkGrid) -> list:
    from lesionseg.data.phantoms.anatomy import load_template, resample_template

    maps = task.region_maps()
    affine = load_template().affine
    return [resample_template(maps[name], affine, grid, antialias=True) for name in names]


def _output_axes(affine: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, ...]:
    return tuple(
        (affine[i, 3] + affine[i, i] * np.arange(n)).astype(np.float32) for i, n in enumerate(shape)
    )


def _voxel_ml(affine: np.ndarray) -> float:
    return float(abs(np.linalg.det(affine[:3, :3]))) / 1000.0
