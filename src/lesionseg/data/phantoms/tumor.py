"""``tumor``: glioma phantoms in T1, T1c, T2 and FLAIR with BRATS labels.

Labels as in BRATS 2015: 1 necrotic core, 2 oedema, 3 non-enhancing tumour,
4 enhancing tumour. A high-grade-like tumour has a necrotic centre inside an
irregular enhancing ring (bright on T1c), non-enhancing parts beside the ring and a
wide oedema that spreads along white matter and spares most of the cortex; a
low-grade-like tumour has no necrosis or enhancement. The tumour pushes the
anatomy away (mass effect: compressed ventricle, midline shift).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from lesionseg.data.phantoms.anatomy import (
    TERRITORIES,
    Anatomy,
    placement_anatomy,
    sample_positions,
)
from lesionseg.data.phantoms.base import LesionPlan, PhantomTask, Rendered
from lesionseg.data.phantoms.contrast import lesion_signal, mix
from lesionseg.data.phantoms.deform import MassEffect
from lesionseg.data.phantoms.lesions import (
    Compartment,
    LesionRecord,
    blob_box,
    fraction_on_box,
    random_blob,
)

#: Compartment name → BRATS label value.
COMPARTMENTS = {"necrosis": 1, "oedema": 2, "non_enhancing": 3, "enhancing": 4}


@dataclass(frozen=True)
class TumorConfig:
    """Ranges of the tumour phantom's random choices.

    Attributes:
        core_radius_mm: Radius of the tumour core (enhancing ring's outer surface).
        necrosis_ratio: Necrotic radius over core radius.
        min_ring_mm: Thinnest enhancing ring.
        oedema_ratio: Oedema radius over core radius.
        non_enhancing_parts: Number of non-enhancing lobules.
        low_grade_probability: Probability of a tumour without necrosis or enhancement.
        expansion: Range of the mass effect's expansion factor ``r1 / r0``.
    """

    core_radius_mm: tuple[float, float] = (9.0, 22.0)
    necrosis_ratio: tuple[float, float] = (0.35, 0.7)
    min_ring_mm: float = 2.0
    oedema_ratio: tuple[float, float] = (1.5, 2.6)
    non_enhancing_parts: tuple[int, int] = (1, 3)
    low_grade_probability: float = 0.2
    expansion: tuple[float, float] = (1.15, 1.45)


@functools.lru_cache(maxsize=1)
def tumour_sites() -> np.ndarray:
    """Placement weights: deep hemispheric white matter, away from the midline."""
    a = placement_anatomy()
    x = a.grid.axes()[0][:, None, None]
    supra = np.isin(a.territory, [TERRITORIES[t] for t in ("aca", "mca", "pca", "deep")])
    return (a.wm * (supra & (a.depth > 22) & (np.abs(x) > 14))).astype(np.float32)


class TumorTask(PhantomTask):
    """Glioma: T1, T1c, T2, FLAIR; labels 0-4 as in BRATS."""

    name = "tumor"
    channels = ("T1", "T1c", "T2", "FLAIR")
    labels = {0: "background", 1: "necrotic core", 2: "oedema", 3: "non-enhancing", 4: "enhancing"}
    default_snr = 25.0
    description = "Glioma phantoms (T1, T1c, T2, FLAIR) on ICBM152 anatomy, BRATS labels"

    def __init__(self, config: TumorConfig | None = None):
        self.config = config or TumorConfig()

    def plan(self, rng: np.random.Generator, placement: Anatomy) -> LesionPlan:
        """Tumour centre, compartment shapes, strengths and mass effect."""
        cfg = self.config
        centre = sample_positions(rng, placement, tumour_sites(), 1, key="tumour")[0]
        r_core = float(rng.uniform(*cfg.core_radius_mm))
        low_grade = bool(rng.random() < cfg.low_grade_probability)
        core = random_blob(rng, centre, r_core, aspect=(0.7, 0.95), roughness=0.15, waves=6)
        r_nec = r_core * rng.uniform(*cfg.necrosis_ratio)
        necrosis = random_blob(rng, centre, r_nec, aspect=(0.6, 0.95), roughness=0.2, waves=5)
        r_oed = r_core * rng.uniform(*cfg.oedema_ratio)
        oedema = random_blob(rng, centre, r_oed, aspect=(0.6, 0.9), roughness=0.3, waves=6)
        parts = []
        n_parts = int(rng.integers(cfg.non_enhancing_parts[0], cfg.non_enhancing_parts[1] + 1))
        for _ in range(n_parts):
            direction = rng.normal(size=3)
            direction /= np.linalg.norm(direction)
            offset = direction * r_core * rng.uniform(0.6, 1.0)
            parts.append(random_blob(rng, centre + offset, r_core * rng.uniform(0.3, 0.6)))
        strengths = {name: float(rng.uniform(0, 1)) for name in COMPARTMENTS}
        expansion = float(rng.uniform(*cfg.expansion))
        plan = LesionPlan(
            items=[{"core": core, "necrosis": necrosis, "oedema": oedema, "parts": parts}],
            mass_effects=[
                MassEffect(tuple(centre), r_core, r_core * expansion, rng.uniform(12.0, 25.0))
            ],
            params={
                "low_grade": low_grade,
                "core_radius_mm": round(r_core, 2),
                "expansion": round(expansion, 3),
                "strengths": strengths,
            },
        )
        return plan

    def render(self, plan: LesionPlan, anatomy: Anatomy) -> Rendered:
        """Nested compartments on the oedema's bounding box (fractions sum to at most 1)."""
        shapes = plan.items[0]
        grid = anatomy.grid
        comps = {name: Compartment.empty(grid.shape) for name in COMPARTMENTS}
        box = blob_box(shapes["oedema"], grid, margin_mm=shapes["core"].extent)
        records = []
        if box is not None:
            brain = anatomy.brain[box]
            core = fraction_on_box(shapes["core"], grid, box) * brain
            ring_limit = fraction_on_box(shapes["core"], grid, box, -self.config.min_ring_mm)
            necrosis = np.minimum(fraction_on_box(shapes["necrosis"], grid, box), ring_limit)
            lobules = np.zeros_like(core)
            for part in shapes["parts"]:
                np.maximum(lobules, fraction_on_box(part, grid, box), out=lobules)
            if plan.params["low_grade"]:
                necrosis = np.zeros_like(core)
                non_enhancing = np.maximum(core, lobules * brain)
                enhancing = np.zeros_like(core)
            else:
                necrosis = necrosis * brain
                enhancing = core - necrosis
                non_enhancing = np.clip(lobules * brain - core, 0.0, 1.0)
            solid = necrosis + enhancing + non_enhancing
            # Oedema follows white matter and spares most of the cortex.
            spread = np.clip(1.3 * anatomy.wm[box] + 0.45 * anatomy.gm[box], 0.0, 1.0)
            oedema = np.clip(fraction_on_box(shapes["oedema"], grid, box) * spread, 0.0, 1.0)
            oedema = np.clip(np.minimum(oedema, 1.0 - solid), 0.0, 1.0)
            fractions = {
                "necrosis": necrosis,
                "oedema": oedema,
                "non_enhancing": non_enhancing,
                "enhancing": enhancing,
            }
            for name, fraction in fractions.items():
                strength = plan.params["strengths"][name]
                comps[name].add(fraction.astype(np.float32), box, strength)
                volume = float(fraction.sum()) * grid.voxel_volume_mm3 / 1000.0
                records.append(LesionRecord(name, shapes["core"].centre.tolist(), volume, strength))
        return Rendered(comps, records)

    def clean_signals(self, maps: dict, tissue_signal: dict) -> dict[str, np.ndarray]:
        """Tissue mix with the four tumour compartments (displacing every tissue)."""
        out = {}
        for modality in self.channels:
            parts = [
                (maps[name], lesion_signal(name, modality, maps[f"{name}_strength"]))
                for name in COMPARTMENTS
            ]
            out[modality] = mix(maps, tissue_signal[modality], parts)
        return out

    def label(self, maps: dict) -> np.ndarray:
        """Where tumour fills more than half a voxel, its largest compartment's BRATS label."""
        stack = np.stack([maps[name] for name in COMPARTMENTS])
        values = np.array(list(COMPARTMENTS.values()), dtype=np.uint8)
        label = values[np.argmax(stack, axis=0)]
        return np.where(stack.sum(axis=0) > 0.5, label, 0).astype(np.uint8)
