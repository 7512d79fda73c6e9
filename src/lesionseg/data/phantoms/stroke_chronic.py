"""``stroke-chronic``: chronic stroke phantoms in T1 (as ATLAS).

Old infarcts are cavities filled with CSF (encephalomalacia), CSF-dark on T1, with
a rim of gliotic tissue of intermediate signal; both are labelled. Sizes span three
orders of magnitude: large territorial cavities, subcortical infarcts, and tiny
lacunes that a method easily misses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lesionseg.data.phantoms.anatomy import Anatomy
from lesionseg.data.phantoms.base import LesionPlan, PhantomTask, Rendered
from lesionseg.data.phantoms.contrast import lesion_signal, mix
from lesionseg.data.phantoms.lesions import Compartment, LesionRecord
from lesionseg.data.phantoms.vascular import draw_infarct, render_infarct

KINDS = ("territorial", "subcortical", "lacune")


@dataclass(frozen=True)
class StrokeChronicConfig:
    """Ranges of the chronic stroke phantom's random choices.

    Attributes:
        lesions: Number of infarcts.
        kind_weights: Probability of a territorial, subcortical or lacunar infarct.
        territorial_radius_mm: Radius of territorial infarcts.
        subcortical_radius_mm: Radius of subcortical infarcts.
        lacune_radius_mm: Radius of lacunes.
        gliosis_mm: Thickness of the gliotic rim.
    """

    lesions: tuple[int, int] = (1, 3)
    kind_weights: tuple[float, float, float] = (0.45, 0.35, 0.2)
    territorial_radius_mm: tuple[float, float] = (8.0, 35.0)
    subcortical_radius_mm: tuple[float, float] = (3.0, 12.0)
    lacune_radius_mm: tuple[float, float] = (1.2, 3.0)
    gliosis_mm: tuple[float, float] = (1.0, 3.0)


class StrokeChronicTask(PhantomTask):
    """Chronic stroke: T1 only; label 1 = lesion (cavity and gliosis)."""

    name = "stroke-chronic"
    channels = ("T1",)
    labels = {0: "background", 1: "lesion"}
    default_snr = 30.0
    description = "Chronic stroke phantoms (T1) on ICBM152 anatomy, as ATLAS"

    def __init__(self, config: StrokeChronicConfig | None = None):
        self.config = config or StrokeChronicConfig()

    def plan(self, rng: np.random.Generator, placement: Anatomy) -> LesionPlan:
        """Infarcts of the three kinds, each with its gliotic rim thickness."""
        cfg = self.config
        plan = LesionPlan()
        n = int(rng.integers(cfg.lesions[0], cfg.lesions[1] + 1))
        weights = np.asarray(cfg.kind_weights) / np.sum(cfg.kind_weights)
        for _ in range(n):
            kind = KINDS[int(rng.choice(len(KINDS), p=weights))]
            if kind == "territorial":
                infarct = draw_infarct(rng, "territorial", cfg.territorial_radius_mm)
            elif kind == "subcortical":
                where = "deep" if rng.random() < 0.7 else "mca"
                infarct = draw_infarct(rng, "lacune", cfg.subcortical_radius_mm, where)
                infarct.kind = "subcortical"
            else:
                where = "deep" if rng.random() < 0.7 else "posterior_fossa"
                infarct = draw_infarct(rng, "lacune", cfg.lacune_radius_mm, where)
            plan.items.append((infarct, float(rng.uniform(*cfg.gliosis_mm))))
        return plan

    def render(self, plan: LesionPlan, anatomy: Anatomy) -> Rendered:
        """Cavity = the infarct; gliosis = the infarct grown by the rim, minus the cavity."""
        cavity = Compartment.empty(anatomy.grid.shape)
        grown = Compartment.empty(anatomy.grid.shape)
        records = []
        for infarct, rim in plan.items:
            volume, _, _ = render_infarct(infarct, anatomy, cavity)
            render_infarct(infarct, anatomy, grown, margin_mm=rim)
            records.append(
                LesionRecord(
                    infarct.kind,
                    infarct.blobs[0].centre.tolist(),
                    volume,
                    infarct.strength,
                    extra={"gliosis_mm": round(rim, 2)},
                )
            )
        gliosis = Compartment(
            np.clip(grown.fraction - cavity.fraction, 0.0, 1.0), grown.strength.copy()
        )
        return Rendered({"cavity": cavity, "gliosis": gliosis}, records)

    def clean_signals(self, maps: dict, tissue_signal: dict) -> dict[str, np.ndarray]:
        """T1 with CSF-like cavities and intermediate gliosis."""
        parts = [
            (maps["cavity"], lesion_signal("cavity", "T1", maps["cavity_strength"])),
            (maps["gliosis"], lesion_signal("gliosis", "T1", maps["gliosis_strength"])),
        ]
        return {"T1": mix(maps, tissue_signal["T1"], parts)}

    def label(self, maps: dict) -> np.ndarray:
        """Lesion where cavity and gliosis fill more than half of the voxel."""
        return ((maps["cavity"] + maps["gliosis"]) > 0.5).astype(np.uint8)
