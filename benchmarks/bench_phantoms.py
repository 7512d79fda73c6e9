"""Phantom generation speed and the difficulty of the ms phantoms.

Rows: seconds to write N ``ms`` subjects at 2 mm and 1 mm (``lesionseg synth``'s
Python API, NIfTI writing included; the one-off template preparation is timed on
its own), and the Dice of the FLAIR-threshold baseline (normalised FLAIR > 1.5 SD
inside the brain, the MSSEG cascade's candidate rule) on those data sets.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from lesionseg.data.dataset import load_msd
from lesionseg.data.nifti import load_nifti
from lesionseg.data.phantoms import synthesize
from lesionseg.data.phantoms.anatomy import load_template


def flair_baseline_dice(root: Path) -> list[float]:
    """Per-subject Dice of (z-scored FLAIR > 1.5 inside the brain mask)."""
    scores = []
    for subject in load_msd(root):
        flair = load_nifti(subject.channels["FLAIR"]).data.astype(np.float64)
        brain = load_nifti(subject.mask).data > 0
        label = load_nifti(subject.label).data > 0
        z = (flair - flair[brain].mean()) / flair[brain].std()
        pred = (z > 1.5) & brain
        scores.append(2.0 * (pred & label).sum() / max(pred.sum() + label.sum(), 1))
    return scores


def run(quick: bool) -> list[dict]:
    rows = []
    start = time.perf_counter()
    load_template()
    rows.append(
        {
            "benchmark": "phantoms",
            "metric": "template preparation (once per process)",
            "value": round(time.perf_counter() - start, 2),
            "unit": "s",
        }
    )
    subjects = 3 if quick else 20
    for spacing in (2.0, 1.0):
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            out = synthesize("ms", Path(tmp) / "ms", subjects=subjects, seed=0, spacing=spacing)
            seconds = time.perf_counter() - start
            scores = flair_baseline_dice(out)
        extra = {"task": "ms", "subjects": subjects, "spacing_mm": spacing}
        rows.append(
            {
                "benchmark": "phantoms",
                "metric": f"generate {subjects} ms subjects at {spacing:g} mm",
                "value": round(seconds, 1),
                "unit": "s",
                **extra,
            }
        )
        rows.append(
            {
                "benchmark": "phantoms",
                "metric": f"FLAIR>1.5SD baseline Dice, ms at {spacing:g} mm (mean)",
                "value": round(float(np.mean(scores)), 3),
                "unit": "Dice",
                "min": round(float(np.min(scores)), 3),
                "max": round(float(np.max(scores)), 3),
                **extra,
            }
        )
    return rows
