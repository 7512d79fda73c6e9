"""``stroke-acute``: acute ischaemic stroke phantoms in DWI and ADC, thick slices.

As in clinical diffusion imaging (and the EDD Net data): 2D acquisitions with 5 mm
slices; the b = 1000 s/mm² image (DWI) and the ADC map computed from it and the
b = 0 image. Infarcts restrict diffusion: bright on DWI, dark on ADC. Territorial
infarcts, lacunes and showers of small embolic infarcts give small and large
lesions. Susceptibility artefacts of echo-planar imaging near the air-filled
sinuses and the petrous bones (orbitofrontal and inferior temporal brain surface)
make bright DWI spots that mimic small lesions; as the b = 0 image brightens with
them, the ADC stays normal there, as in real scans.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from lesionseg.data.phantoms.anatomy import Anatomy, placement_anatomy, sample_positions
from lesionseg.data.phantoms.base import LesionPlan, PhantomTask, Rendered
from lesionseg.data.phantoms.contrast import lesion_signal, mix
from lesionseg.data.phantoms.lesions import Compartment, LesionRecord, random_blob, render_blobs
from lesionseg.data.phantoms.vascular import draw_infarct, render_infarct

#: Largest ADC stored (10⁻³ mm²/s); free water is 3.0 at body temperature.
ADC_MAX = 4.0


@dataclass(frozen=True)
class StrokeAcuteConfig:
    """Ranges of the acute stroke phantom's random choices.

    Attributes:
        territorial_probability: Probability of one territorial infarct.
        territorial_radius_mm: Its radius.
        lacunes: Number of lacunes.
        lacune_radius_mm: Their radius.
        emboli: Number of small embolic infarcts (in the territorial infarct's
            territory when there is one).
        embolus_radius_mm: Their radius.
        artefacts: Number of susceptibility artefacts (not lesions).
        artefact_radius_mm: Their radius.
        artefact_gain: Brightening factor of the artefacts.
    """

    territorial_probability: float = 0.65
    territorial_radius_mm: tuple[float, float] = (8.0, 32.0)
    lacunes: tuple[int, int] = (0, 2)
    lacune_radius_mm: tuple[float, float] = (2.0, 7.0)
    emboli: tuple[int, int] = (0, 5)
    embolus_radius_mm: tuple[float, float] = (1.5, 5.0)
    artefacts: tuple[int, int] = (2, 7)
    artefact_radius_mm: tuple[float, float] = (2.0, 6.0)
    artefact_gain: tuple[float, float] = (1.4, 2.6)


@functools.lru_cache(maxsize=1)
def artefact_sites() -> np.ndarray:
    """Brain surface next to the paranasal sinuses and the petrous bones."""
    a = placement_anatomy()
    x, y, z = np.meshgrid(*a.grid.axes(), indexing="ij", sparse=True)
    surface = (a.depth > 0) & (a.depth < 6)
    frontal_base = (y > 10) & (z > -35) & (z < -2) & (np.abs(x) < 40)
    temporal_base = (np.abs(x) > 28) & (y > -45) & (y < 20) & (z < -12)
    return (surface & (frontal_base | temporal_base) & (a.brain > 0.5)).astype(np.float32)


class StrokeAcuteTask(PhantomTask):
    """Acute stroke: DWI and ADC, 5 mm slices; label 1 = infarct."""

    name = "stroke-acute"
    channels = ("DWI", "ADC")
    signals = ("S0", "DWI")
    tissue_modalities = ("S0", "ADC")
    labels = {0: "background", 1: "infarct"}
    default_snr = 30.0
    default_thickness = 5.0
    bias_amplitude = 0.12
    shared_bias = True
    fixed_scale = {"ADC": 1000.0}  # stored in 10⁻⁶ mm²/s
    description = "Acute stroke phantoms (DWI, ADC; 5 mm slices) on ICBM152 anatomy"

    def __init__(self, config: StrokeAcuteConfig | None = None):
        self.config = config or StrokeAcuteConfig()

    def plan(self, rng: np.random.Generator, placement: Anatomy) -> LesionPlan:
        """Infarcts by kind, and artefacts."""
        cfg = self.config
        plan = LesionPlan()
        territory, side = None, None
        if rng.random() < cfg.territorial_probability:
            infarct = draw_infarct(rng, "territorial", cfg.territorial_radius_mm)
            plan.items.append(infarct)
            territory = {1: "aca", 2: "mca", 3: "pca", 5: "posterior_fossa"}[infarct.territory]
            side = infarct.side
        n_lacunes = int(rng.integers(cfg.lacunes[0], cfg.lacunes[1] + 1))
        for _ in range(n_lacunes):
            where = "deep" if rng.random() < 0.8 else "posterior_fossa"
            plan.items.append(draw_infarct(rng, "lacune", cfg.lacune_radius_mm, where))
        n_emboli = int(rng.integers(cfg.emboli[0], cfg.emboli[1] + 1))
        if not plan.items and n_emboli == 0:
            n_emboli = 1  # every subject has a lesion
        for _ in range(n_emboli):
            plan.items.append(draw_infarct(rng, "embolic", cfg.embolus_radius_mm, territory, side))
        n_art = int(rng.integers(cfg.artefacts[0], cfg.artefacts[1] + 1))
        centres = sample_positions(rng, placement, artefact_sites(), n_art, key="dwi_artefact")
        artefacts = []
        for centre in centres:
            radius = rng.uniform(*cfg.artefact_radius_mm)
            blob = random_blob(rng, centre, radius, aspect=(0.4, 0.8), roughness=0.2)
            artefacts.append((blob, float(rng.uniform(0, 1))))
        plan.params = {"_artefacts": artefacts, "artefacts": len(artefacts)}
        return plan

    def render(self, plan: LesionPlan, anatomy: Anatomy) -> Rendered:
        """Infarcts confined to their territory; artefacts confined to the brain."""
        infarct = Compartment.empty(anatomy.grid.shape)
        artefact = Compartment.empty(anatomy.grid.shape)
        records = []
        for item in plan.items:
            volume, _, _ = render_infarct(item, anatomy, infarct)
            records.append(
                LesionRecord(item.kind, item.blobs[0].centre.tolist(), volume, item.strength)
            )
        for blob, strength in plan.params["_artefacts"]:
            volume = render_blobs([blob], anatomy.grid, artefact, strength, anatomy.brain)
            records.append(
                LesionRecord("artefact", blob.centre.tolist(), volume, strength, labelled=False)
            )
        return Rendered({"infarct": infarct, "artefact": artefact}, records)

    def clean_signals(self, maps: dict, tissue_signal: dict) -> dict[str, np.ndarray]:
        """Signals at b = 0 and b = 1000; each compartment decays with its own ADC."""
        s0, adc = tissue_signal["S0"], tissue_signal["ADC"]
        strength = maps["infarct_strength"]
        infarct_s0 = lesion_signal("infarct_acute", "S0", strength)
        infarct_adc = lesion_signal("infarct_acute", "ADC", strength)
        lesion = [(maps["infarct"], infarct_s0)]
        b0 = mix(maps, s0, lesion)
        dwi_tissue = {t: s0[t] * float(np.exp(-adc[t])) for t in s0}
        dwi = mix(maps, dwi_tissue, [(maps["infarct"], infarct_s0 * np.exp(-infarct_adc))])
        gain_lo, gain_hi = self.config.artefact_gain
        pile_up = 1.0 + maps["artefact"] * (
            gain_lo - 1.0 + (gain_hi - gain_lo) * maps["artefact_strength"]
        )
        return {"S0": b0 * pile_up, "DWI": dwi * pile_up}

    def label(self, maps: dict) -> np.ndarray:
        """Infarct where more than half of the voxel is infarct."""
        return (maps["infarct"] > 0.5).astype(np.uint8)

    def outputs(self, signals: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """DWI as acquired; ADC = ln(S0 / DWI) / b, in 10⁻³ mm²/s (b = 1000 s/mm²)."""
        s0 = np.maximum(signals["S0"], 1e-3)
        dwi = np.maximum(signals["DWI"], 1e-3)
        adc = np.clip(np.log(s0 / dwi), 0.0, ADC_MAX).astype(np.float32)
        return {"DWI": signals["DWI"], "ADC": adc}
