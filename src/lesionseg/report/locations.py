"""Lesion location classes (McDonald regions) and the template regions they are read from.

The rule is LST-AI's: after a one-voxel dilation (the 26-neighbourhood), a lesion that
touches the ventricles is **periventricular**; else one that touches the cortex is
**juxtacortical**; else one that lies (by the majority of its voxels) in the
infratentorial region is **infratentorial**; else it is **subcortical**.

The regions come from the ICBM152 2009a templates that nilearn ships (the same ones the
phantoms are built on, :mod:`lesionseg.data.phantoms.anatomy`), on the 1 mm template grid:

* ventricles: the lateral ventricles (large deep CSF components off the midline);
* cortex: grey matter (fraction > 0.5) of the cerebrum, less the deep grey nuclei
  (basal ganglia and thalami: the deep box of the arterial territory map) and anything
  deeper than 30 mm below the brain surface;
* infratentorial: the posterior fossa (brainstem and cerebellum) below the tentorium.

:func:`lesionseg.report.registration.regions_on_subject` brings them onto a subject's
grid; the ``ms`` phantoms apply :func:`classify_lesions` to the regions warped with their
own deformation, which gives the true class of every lesion they contain.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

LOCATION_CLASSES = ("periventricular", "juxtacortical", "infratentorial", "subcortical")
#: Names of the template region maps, in the order they are stored.
REGIONS = ("ventricles", "cortex", "infratentorial")
#: Grey matter deeper than this below the brain surface is not cortex (mm).
CORTEX_MAX_DEPTH_MM = 30.0


@dataclass
class RegionMasks:
    """The regions the location rule reads, on one grid (boolean arrays).

    Attributes:
        ventricles: Lateral ventricles.
        cortex: Cerebral cortex.
        infratentorial: Brainstem and cerebellum.
    """

    ventricles: np.ndarray
    cortex: np.ndarray
    infratentorial: np.ndarray

    @classmethod
    def from_fractions(cls, fractions: dict[str, np.ndarray]) -> RegionMasks:
        """Masks from region fractions (resampled maps): more than half of a voxel."""
        return cls(**{name: np.asarray(fractions[name]) > 0.5 for name in REGIONS})


@functools.lru_cache(maxsize=1)
def template_regions() -> dict[str, np.ndarray]:
    """The region maps on the 1 mm ICBM152 grid (float32 0/1, cached per process).

    Returns:
        Region name (:data:`REGIONS`) → map, plus ``"brain"`` (the template brain mask)
        and ``"t1"`` (the brain-masked template T1) for registration.
    """
    from lesionseg.data.phantoms.anatomy import (
        TERRITORIES,
        WorkGrid,
        load_template,
        template_t1,
        territory_map,
    )

    tpl = load_template()
    grid = WorkGrid(tuple(float(v) for v in tpl.affine[:3, 3]), (1.0, 1.0, 1.0), tpl.gm.shape)
    territory = territory_map(grid, tpl.depth, tpl.brain)
    brain = tpl.brain > 0.5
    infratentorial = territory == TERRITORIES["posterior_fossa"]
    cortex = (
        (tpl.gm > 0.5)
        & brain
        & (territory != TERRITORIES["deep"])
        & ~infratentorial
        & (tpl.depth < CORTEX_MAX_DEPTH_MM)
    )
    ventricles = tpl.ventricle_distance < 0.5
    t1 = template_t1() * brain
    return {
        "ventricles": ventricles.astype(np.float32),
        "cortex": cortex.astype(np.float32),
        "infratentorial": infratentorial.astype(np.float32),
        "brain": brain.astype(np.float32),
        "t1": t1.astype(np.float32),
    }


def template_affine() -> np.ndarray:
    """Voxel-to-world matrix of :func:`template_regions` (MNI millimetres, RAS)."""
    from lesionseg.data.phantoms.anatomy import load_template

    return np.asarray(load_template().affine, dtype=np.float64)


def classify_lesions(numbered: np.ndarray, regions: RegionMasks) -> dict[int, str]:
    """The location class of every lesion of a numbered lesion map.

    Args:
        numbered: Lesion ids 1… (0 background), on the regions' grid.
        regions: Ventricles, cortex and infratentorial masks on that grid.

    Returns:
        Lesion id → one of :data:`LOCATION_CLASSES`.
    """
    structure = np.ones((3, 3, 3), bool)  # one voxel in every direction (26-neighbourhood)
    classes: dict[int, str] = {}
    boxes = ndimage.find_objects(numbered)
    for k, box in enumerate(boxes, start=1):
        if box is None:
            continue
        # Work in the lesion's box grown by one voxel: the dilation reaches no further.
        grown = tuple(
            slice(max(s.start - 1, 0), min(s.stop + 1, n)) for s, n in zip(box, numbered.shape)
        )
        lesion = numbered[grown] == k
        dilated = ndimage.binary_dilation(lesion, structure)
        if (dilated & regions.ventricles[grown]).any():
            classes[k] = "periventricular"
        elif (dilated & regions.cortex[grown]).any():
            classes[k] = "juxtacortical"
        elif 2 * int((lesion & regions.infratentorial[grown]).sum()) > int(lesion.sum()):
            classes[k] = "infratentorial"
        else:
            classes[k] = "subcortical"
    return classes
