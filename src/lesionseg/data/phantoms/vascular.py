"""Infarcts in arterial territories, shared by the acute and chronic stroke phantoms.

Three kinds, as seen in stroke data sets: territorial infarcts (large, cortical and
subcortical, filling part of one territory of one hemisphere), lacunes (small, deep
perforator territory, brainstem) and small embolic infarcts (cortical or
subcortical dots, often several in one territory).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from lesionseg.data.phantoms.anatomy import (
    TERRITORIES,
    Anatomy,
    placement_anatomy,
    sample_positions,
)
from lesionseg.data.phantoms.lesions import (
    Blob,
    Compartment,
    blob_box,
    fraction_on_box,
    random_blob,
)

#: Probability of each territory for a territorial infarct.
TERRITORY_WEIGHTS = {"mca": 0.6, "pca": 0.17, "aca": 0.1, "posterior_fossa": 0.13}


@dataclass
class Infarct:
    """One infarct in template space.

    Attributes:
        kind: ``"territorial"``, ``"lacune"`` or ``"embolic"``.
        blobs: Its blob(s).
        territory: Territory code it is confined to (0: none).
        side: -1 left, +1 right hemisphere.
        strength: Intensity strength (0-1).
    """

    kind: str
    blobs: list[Blob]
    territory: int
    side: int
    strength: float


@functools.lru_cache(maxsize=16)
def territory_sites(territory: str, side: int, deep_only: bool = False) -> np.ndarray:
    """Placement weights: parenchyma of one territory in one hemisphere."""
    a = placement_anatomy()
    x = a.grid.axes()[0][:, None, None]
    inside = (a.territory == TERRITORIES[territory]) & (np.sign(x) == side)
    weight = a.wm + a.gm
    if deep_only:
        weight = a.wm
    return (weight * inside).astype(np.float32)


def draw_infarct(
    rng: np.random.Generator,
    kind: str,
    radius_mm: tuple[float, float],
    territory: str | None = None,
    side: int | None = None,
) -> Infarct:
    """Draw one infarct of ``kind`` with a log-uniform radius in ``radius_mm``."""
    placement = placement_anatomy()
    side = side if side is not None else (1 if rng.random() < 0.5 else -1)
    if territory is None:
        names = list(TERRITORY_WEIGHTS)
        p = np.array([TERRITORY_WEIGHTS[n] for n in names])
        territory = names[int(rng.choice(len(names), p=p / p.sum()))]
    deep = kind == "lacune"
    weights = territory_sites(territory, side, deep)
    centre = sample_positions(rng, placement, weights, 1, key=f"{territory}{side}{deep}")[0]
    radius = float(np.exp(rng.uniform(np.log(radius_mm[0]), np.log(radius_mm[1]))))
    if kind == "territorial":
        blobs = [random_blob(rng, centre, radius, aspect=(0.5, 0.85), roughness=0.25, waves=6)]
        # A second lobe makes wedge- and comma-shaped infarcts.
        offset = rng.normal(size=3)
        offset *= radius * 0.6 / np.linalg.norm(offset)
        blobs.append(random_blob(rng, centre + offset, radius * rng.uniform(0.4, 0.8)))
    else:
        blobs = [random_blob(rng, centre, radius, aspect=(0.6, 0.95), roughness=0.12)]
    return Infarct(kind, blobs, TERRITORIES[territory], side, float(rng.uniform(0, 1)))


def territory_confinement(
    anatomy: Anatomy, box: tuple[slice, ...], territory: int, side: int
) -> np.ndarray:
    """Soft mask (0-1) on ``anatomy.grid[box]``: parenchyma of one territory and hemisphere.

    The territory's edge is smoothed over about 3 mm so infarcts end in a soft,
    slightly irregular border instead of a coordinate plane.
    """
    x = anatomy.grid.axes()[0][box[0]][:, None, None]
    inside = ((anatomy.territory[box] == territory) & (np.sign(x) == side)).astype(np.float32)
    sigma = [3.0 / s for s in anatomy.grid.step]
    soft = np.clip(ndimage.gaussian_filter(inside, sigma, mode="nearest") * 1.6 - 0.3, 0, 1)
    return soft * np.clip(anatomy.gm[box] + anatomy.wm[box], 0.0, 1.0)


def render_infarct(
    infarct: Infarct, anatomy: Anatomy, compartment: Compartment, margin_mm: float = 0.0
) -> tuple[float, np.ndarray | None, tuple[slice, ...] | None]:
    """Render an infarct (union of its blobs, confined to its territory).

    Returns:
        Rendered volume (ml), the local fraction and its box (None if outside).
    """
    grid = anatomy.grid
    boxes = [blob_box(b, grid, margin_mm) for b in infarct.blobs]
    boxes = [b for b in boxes if b is not None]
    if not boxes:
        return 0.0, None, None
    box = tuple(
        slice(min(b[a].start for b in boxes), max(b[a].stop for b in boxes)) for a in range(3)
    )
    local = np.zeros(tuple(s.stop - s.start for s in box), np.float32)
    for blob in infarct.blobs:
        np.maximum(local, fraction_on_box(blob, grid, box, margin_mm), out=local)
    if infarct.kind == "territorial":
        local *= territory_confinement(anatomy, box, infarct.territory, infarct.side)
    else:
        local *= np.clip(anatomy.gm[box] + anatomy.wm[box], 0.0, 1.0)
    compartment.add(local, box, infarct.strength)
    return float(local.sum()) * grid.voxel_volume_mm3 / 1000.0, local, box
