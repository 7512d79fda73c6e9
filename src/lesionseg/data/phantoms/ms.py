"""``ms``: multiple-sclerosis phantoms in T1, T2, PD and FLAIR (as MSSEG 2016).

Many small ovoid plaques, mostly periventricular (long axis perpendicular to the
ventricle wall, like Dawson's fingers) and juxtacortical, some in deep and
infratentorial white matter, plus a few confluent periventricular lesions. Healthy
FLAIR hyperintensities that are not lesions make a FLAIR threshold produce false
positives, as in real scans: periventricular caps at the frontal and occipital
horns, a thin rim along the ventricles, and small non-specific white-matter dots
(bright on FLAIR and T2, but normal on T1, unlike plaques).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from lesionseg.data.phantoms.anatomy import (
    TERRITORIES,
    Anatomy,
    gradient_at,
    load_template,
    placement_anatomy,
    sample_positions,
)
from lesionseg.data.phantoms.base import LesionPlan, PhantomTask, Rendered
from lesionseg.data.phantoms.contrast import lesion_signal, mix
from lesionseg.data.phantoms.lesions import (
    Compartment,
    LesionRecord,
    random_blob,
    render_blobs,
)

LOCATIONS = ("periventricular", "juxtacortical", "deep", "infratentorial")
#: Connectivity of the labelled lesions whose true location class is recorded.
LOCATION_CONNECTIVITY = 26


@dataclass(frozen=True)
class MSConfig:
    """Ranges of the MS phantom's random choices (all inclusive).

    Attributes:
        small_lesions: Number of small ovoid lesions.
        small_radius_mm: Long semi-axis of small lesions (log-uniform).
        location_weights: Probability of each location for a small lesion.
        confluent_lesions: Number of confluent periventricular lesions.
        confluent_blobs: Number of ovoids merged into one confluent lesion.
        confluent_radius_mm: Long semi-axis of those ovoids.
        cap_mm: Thickness of the periventricular caps at the horns.
        rim_mm: Thickness of the hyperintense rim along the ventricle bodies.
        dots: Number of non-specific white-matter dots (not lesions).
        dot_radius_mm: Radius of the dots.
        halo_mm: Width of the faint unlabelled halo around confluent lesions.
    """

    small_lesions: tuple[int, int] = (15, 50)
    small_radius_mm: tuple[float, float] = (1.3, 6.0)
    location_weights: tuple[float, float, float, float] = (0.42, 0.28, 0.18, 0.12)
    confluent_lesions: tuple[int, int] = (1, 4)
    confluent_blobs: tuple[int, int] = (3, 8)
    confluent_radius_mm: tuple[float, float] = (3.5, 7.5)
    cap_mm: tuple[float, float] = (4.0, 10.0)
    rim_mm: tuple[float, float] = (1.0, 2.5)
    dots: tuple[int, int] = (3, 12)
    dot_radius_mm: tuple[float, float] = (1.0, 2.2)
    halo_mm: tuple[float, float] = (1.5, 4.5)


@functools.lru_cache(maxsize=1)
def location_maps() -> dict[str, np.ndarray]:
    """Placement weights of each MS lesion location on the placement grid."""
    a = placement_anatomy()
    fossa = a.territory == TERRITORIES["posterior_fossa"]
    supra = (a.territory > 0) & ~fossa
    step = a.grid.step[0]
    cortex_near = (ndimage.gaussian_filter(a.gm, 3.0 / step) > 0.35) & (a.depth < 25)
    vd = a.ventricle_distance
    white = a.wm > 0.5
    peri = white & (vd > 1.0) & (vd < 9.0) & supra
    juxta = white & cortex_near & supra & ~peri
    deep = (a.wm > 0.8) & (vd >= 9.0) & ~cortex_near & supra
    infra = white & fossa
    return {
        name: (a.wm * region).astype(np.float32)
        for name, region in zip(LOCATIONS, (peri, juxta, deep, infra))
    }


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


class MSTask(PhantomTask):
    """Multiple sclerosis: T1, T2, PD, FLAIR; label 1 = lesion."""

    name = "ms"
    channels = ("T1", "T2", "PD", "FLAIR")
    labels = {0: "background", 1: "lesion"}
    default_snr = 25.0
    bias_amplitude = 0.08
    #: Width (mm) of the fading edge of plaques.
    edge_mm = 1.0
    description = "MS lesion phantoms (T1, T2, PD, FLAIR) on ICBM152 anatomy, as MSSEG 2016"

    def __init__(self, config: MSConfig | None = None):
        self.config = config or MSConfig()

    def plan(self, rng: np.random.Generator, placement: Anatomy) -> LesionPlan:
        """Small ovoids by location, confluent lesions, dots, cap and rim sizes."""
        cfg = self.config
        maps = location_maps()
        plan = LesionPlan()
        n_small = int(rng.integers(cfg.small_lesions[0], cfg.small_lesions[1] + 1))
        weights = np.asarray(cfg.location_weights) / np.sum(cfg.location_weights)
        for _ in range(n_small):
            where = LOCATIONS[int(rng.choice(len(LOCATIONS), p=weights))]
            centre = sample_positions(rng, placement, maps[where], 1, key=f"ms_{where}")[0]
            radius = _log_uniform(rng, *cfg.small_radius_mm)
            direction = None
            if where == "periventricular":
                direction = gradient_at(placement, placement.ventricle_distance, centre[None])[0]
            blob = random_blob(rng, centre, radius, direction=direction)
            plan.items.append(("lesion", where, [blob], float(rng.uniform(0.0, 1.0)), 0.0))
        n_confluent = int(rng.integers(cfg.confluent_lesions[0], cfg.confluent_lesions[1] + 1))
        for _ in range(n_confluent):
            blobs = self._confluent(rng, placement)
            plan.items.append(("lesion", "confluent", blobs, float(rng.uniform(0.5, 1.0)), 0.0))
            # Dirty-appearing white matter: a faint unlabelled halo around confluent plaques.
            halo = float(rng.uniform(*cfg.halo_mm))
            plan.items.append(("cap", "halo", blobs, float(rng.uniform(0.0, 0.5)), halo))
        n_dots = int(rng.integers(cfg.dots[0], cfg.dots[1] + 1))
        for _ in range(n_dots):
            where = "deep" if rng.random() < 0.6 else "juxtacortical"
            centre = sample_positions(rng, placement, maps[where], 1, key=f"ms_{where}")[0]
            radius = rng.uniform(*cfg.dot_radius_mm)
            blob = random_blob(rng, centre, radius, aspect=(0.75, 1.0), roughness=0.05)
            plan.items.append(("dot", "dot", [blob], float(rng.uniform(0.0, 1.0)), 0.0))
        plan.params = {
            "cap_mm": float(rng.uniform(*cfg.cap_mm)),
            "rim_mm": float(rng.uniform(*cfg.rim_mm)),
            "cap_strength": float(rng.uniform(0.0, 1.0)),
        }
        return plan

    def _confluent(self, rng: np.random.Generator, placement: Anatomy) -> list:
        """A chain of ovoids along the ventricle wall."""
        cfg = self.config
        maps = location_maps()
        start = sample_positions(
            rng, placement, maps["periventricular"], 1, key="ms_periventricular"
        )[0]
        normal = gradient_at(placement, placement.ventricle_distance, start[None])[0]
        tangent = rng.normal(size=3)
        tangent -= normal * (tangent @ normal)
        tangent /= max(np.linalg.norm(tangent), 1e-9)
        n_blobs = int(rng.integers(cfg.confluent_blobs[0], cfg.confluent_blobs[1] + 1))
        blobs, centre = [], start
        for _ in range(n_blobs):
            radius = rng.uniform(*cfg.confluent_radius_mm)
            blobs.append(
                random_blob(rng, centre, radius, aspect=(0.6, 0.95), direction=tangent, waves=5)
            )
            # Next ovoid overlaps this one; wander a little, keep hugging the ventricle.
            tangent = tangent + 0.3 * rng.normal(size=3)
            tangent -= normal * (tangent @ normal)
            tangent /= max(np.linalg.norm(tangent), 1e-9)
            centre = centre + tangent * radius * 1.1 + normal * rng.normal(0, 1.0)
        return blobs

    def render(self, plan: LesionPlan, anatomy: Anatomy) -> Rendered:
        """Lesions and dots (confined to parenchyma), caps and rim on the working grid."""
        shape = anatomy.grid.shape
        cap = Compartment.empty(shape)
        cap.fraction[...] = self._caps(anatomy, plan.params)
        cap.strength[...] = plan.params["cap_strength"]
        parts = {"lesion": Compartment.empty(shape), "dot": Compartment.empty(shape), "cap": cap}
        # Plaques sit in white matter and reach into the cortex only partly.
        confine = np.clip(anatomy.wm + 0.6 * anatomy.gm, 0.0, 1.0)
        records = []
        for compartment, kind, blobs, strength, margin in plan.items:
            volume = render_blobs(
                blobs, anatomy.grid, parts[compartment], strength, confine, margin_mm=margin
            )
            records.append(
                LesionRecord(
                    kind, blobs[0].centre.tolist(), volume, strength, compartment == "lesion"
                )
            )
        return Rendered(parts, records)

    @staticmethod
    def _caps(anatomy: Anatomy, params: dict) -> np.ndarray:
        """Cap/rim fraction: fading with distance from the ventricles, thicker at the horns."""
        front, back = load_template().ventricle_y
        y = anatomy.grid.axes()[1][None, :, None]
        horn = np.maximum(
            np.clip((y - (front - 14.0)) / 8.0, 0, 1), np.clip(((back + 14.0) - y) / 8.0, 0, 1)
        )
        width = params["rim_mm"] + (params["cap_mm"] - params["rim_mm"]) * horn
        fade = np.clip(1.0 - anatomy.ventricle_distance / width, 0.0, 1.0)
        return (fade * (anatomy.wm + anatomy.gm)).astype(np.float32)

    def clean_signals(self, maps: dict, tissue_signal: dict) -> dict[str, np.ndarray]:
        """Tissue mix with plaques, dots and caps (caps and dots yield to plaques)."""
        lesion = maps["lesion"]
        dot = maps["dot"] * (1.0 - lesion)
        cap = np.clip(maps["cap"] * (1.0 - lesion) - dot, 0.0, 1.0)
        # Plaques fade towards their edges: the signal change grows with the depth
        # inside the lesion, so thin edges and the smallest plaques stay faint.
        sigma = [self.edge_mm / s for s in maps["spacing"]]
        depth = ndimage.gaussian_filter(lesion, sigma, mode="constant")
        strength = maps["lesion_strength"] * (0.4 + 0.6 * np.clip(depth / 0.8, 0.0, 1.0))
        out = {}
        for modality in self.channels:
            parts = [
                (lesion, lesion_signal("ms_lesion", modality, strength)),
                (dot, lesion_signal("ms_dot", modality, maps["dot_strength"])),
                (cap, lesion_signal("ms_cap", modality, maps["cap_strength"])),
            ]
            out[modality] = mix(maps, tissue_signal[modality], parts, replaces=("wm", "gm"))
        return out

    def label(self, maps: dict) -> np.ndarray:
        """Lesion where more than half of the voxel is plaque."""
        return (maps["lesion"] > 0.5).astype(np.uint8)

    def region_maps(self) -> dict[str, np.ndarray]:
        """The location rule's template regions (ventricles, cortex, infratentorial)."""
        from lesionseg.report.locations import REGIONS, template_regions

        maps = template_regions()
        return {name: maps[name] for name in REGIONS}

    def annotate(self, label: np.ndarray, regions: dict, affine: np.ndarray) -> dict:
        """The true location class of every labelled lesion (26-connected components).

        The location rule of :mod:`lesionseg.report.locations` applied to the regions
        warped with this subject's own deformation: the truth a report that registers
        the subject to the template is checked against.
        """
        from lesionseg.report.lesions import label_lesions
        from lesionseg.report.locations import RegionMasks, classify_lesions

        numbered, count = label_lesions(label, connectivity=LOCATION_CONNECTIVITY)
        classes = classify_lesions(numbered, RegionMasks.from_fractions(regions))
        centroids = ndimage.center_of_mass(np.ones_like(numbered), numbered, range(1, count + 1))
        sizes = np.bincount(numbered.ravel(), minlength=count + 1)
        lesions = []
        for k in range(1, count + 1):
            world = np.asarray(affine, float) @ np.append(centroids[k - 1], 1.0)
            lesions.append(
                {
                    "id": k,
                    "voxels": int(sizes[k]),
                    "centroid_mm": [round(float(v), 2) for v in world[:3]],
                    "location": classes[k],
                }
            )
        return {
            "lesion_locations": {
                "connectivity": LOCATION_CONNECTIVITY,
                "rule": "lesionseg.report.locations (LST-AI's order) on the true anatomy",
                "lesions": lesions,
            }
        }
