"""Per-modality signal of tissues and lesions, relative to white matter.

The numbers follow the relative intensities of clinical scans (1.5-3 T):

* T1 (MPRAGE/SPGR): WM > GM > CSF; MS lesions hypointense (black holes darkest),
  chronic infarct cavities CSF-like, gadolinium-enhancing tumour bright on T1c.
* T2: CSF > GM > WM; lesions and oedema hyperintense.
* PD: CSF ≳ GM > WM; lesions hyperintense.
* FLAIR: CSF suppressed (dark), GM > WM, lesions and oedema bright.
* Diffusion: the b = 0 image ``S0`` is T2-like; the b = 1000 s/mm² image is
  ``S0·exp(-b·ADC)`` with ADC (10⁻³ mm²/s) WM 0.72, GM 0.85, CSF 3.0 and acute
  infarcts 0.3-0.55, so infarcts are bright on DWI and dark on ADC.

A lesion's signal in each modality interpolates between a faint (strength 0) and a
marked (strength 1) value, so that all modalities of one lesion co-vary.
"""

from __future__ import annotations

import numpy as np

#: Tissue signal per modality, relative to white matter.
TISSUE_SIGNAL: dict[str, dict[str, float]] = {
    "T1": {"wm": 1.00, "gm": 0.66, "csf": 0.30},
    "T1c": {"wm": 1.00, "gm": 0.68, "csf": 0.32},
    "T2": {"wm": 1.00, "gm": 1.32, "csf": 2.60},
    "PD": {"wm": 1.00, "gm": 1.18, "csf": 1.32},
    "FLAIR": {"wm": 1.00, "gm": 1.22, "csf": 0.25},
    "S0": {"wm": 1.00, "gm": 1.25, "csf": 2.20},
    "ADC": {"wm": 0.72, "gm": 0.85, "csf": 3.00},
}

#: Lesion signal per modality as (faint, marked), relative to white matter (ADC in 10⁻³ mm²/s).
LESION_SIGNAL: dict[str, dict[str, tuple[float, float]]] = {
    # MS plaques: hyperintense on T2/PD/FLAIR, iso- to hypointense on T1.
    "ms_lesion": {
        "T1": (0.94, 0.55),
        "T2": (1.35, 2.10),
        "PD": (1.12, 1.45),
        "FLAIR": (1.15, 1.80),
    },
    # Healthy periventricular caps and rims: FLAIR/T2 bright, T1 nearly normal.
    "ms_cap": {"T1": (0.97, 0.93), "T2": (1.25, 1.50), "PD": (1.10, 1.22), "FLAIR": (1.25, 1.55)},
    # Non-specific small-vessel dots: FLAIR/T2 bright, T1 normal.
    "ms_dot": {"T1": (1.00, 0.96), "T2": (1.35, 1.70), "PD": (1.12, 1.25), "FLAIR": (1.30, 1.65)},
    # BRATS compartments.
    "necrosis": {
        "T1": (0.45, 0.35),
        "T1c": (0.48, 0.38),
        "T2": (1.80, 2.30),
        "FLAIR": (1.10, 0.70),
    },
    "oedema": {"T1": (0.82, 0.72), "T1c": (0.84, 0.74), "T2": (1.45, 1.85), "FLAIR": (1.40, 1.85)},
    "non_enhancing": {
        "T1": (0.72, 0.62),
        "T1c": (0.74, 0.64),
        "T2": (1.40, 1.70),
        "FLAIR": (1.35, 1.60),
    },
    "enhancing": {
        "T1": (0.74, 0.66),
        "T1c": (1.35, 1.80),
        "T2": (1.25, 1.50),
        "FLAIR": (1.25, 1.50),
    },
    # Acute infarct: mild T2 change on S0, restricted diffusion.
    "infarct_acute": {"S0": (1.05, 1.35), "ADC": (0.55, 0.30)},
    # Chronic infarct: CSF-like cavity, gliotic rim.
    "cavity": {"T1": (0.42, 0.30)},
    "gliosis": {"T1": (0.80, 0.68)},
}


def jitter_tissues(rng: np.random.Generator, modalities: list[str], amount: float = 0.03) -> dict:
    """Per-subject tissue signals: the table values times ``1 ± amount`` (uniform).

    The draws are made in a fixed order (modality, then WM, GM, CSF) so that the
    same generator state gives the same values.
    """
    out = {}
    for modality in modalities:
        table = TISSUE_SIGNAL[modality]
        factors = 1.0 + amount * rng.uniform(-1, 1, size=3)
        out[modality] = {t: table[t] * f for t, f in zip(("wm", "gm", "csf"), factors)}
    return out


def lesion_signal(kind: str, modality: str, strength: np.ndarray | float) -> np.ndarray | float:
    """Signal of lesion ``kind`` on ``modality`` at the given strength (0-1)."""
    faint, marked = LESION_SIGNAL[kind][modality]
    return faint + (marked - faint) * strength


def mix(
    tissues: dict[str, np.ndarray],
    tissue_signal: dict[str, float],
    lesions: list[tuple[np.ndarray, np.ndarray | float]],
    replaces: tuple[str, ...] = ("wm", "gm", "csf"),
) -> np.ndarray:
    """Partial-volume signal: lesions take their fraction of each voxel from some tissues.

    Args:
        tissues: Fractions ``wm``, ``gm``, ``csf``.
        tissue_signal: Signal of each tissue.
        lesions: ``(fraction, signal)`` pairs.
        replaces: Tissues the lesions displace, in proportion to their fractions (an
            MS plaque displaces white and grey matter but leaves the CSF beside it).

    Returns:
        float32 signal map.
    """
    occupied = np.zeros_like(tissues["wm"])
    out = np.zeros_like(tissues["wm"])
    for fraction, signal in lesions:
        occupied += fraction
        out += fraction * signal
    available = sum(tissues[name] for name in replaces)
    keep = np.clip(1.0 - occupied / np.maximum(available, 1e-3), 0.0, 1.0)
    for name in ("wm", "gm", "csf"):
        share = keep * tissues[name] if name in replaces else tissues[name]
        out += share * np.float32(tissue_signal[name])
    return out.astype(np.float32)
