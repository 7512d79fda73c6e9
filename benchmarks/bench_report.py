"""``lesionseg report``: registration time and location accuracy, and uncertainty retention.

* **Locations**: ``ms`` phantoms at 2 mm (held-out indices 16…), their reference label
  maps as the segmentation, the T1 registered to the ICBM152 template with the affine
  alone and with the B-spline; the share of lesions whose class equals the truth the
  phantom generator records (the same rule on the subject's own warped anatomy), and
  the registration's wall time per case (median).
* **Retention** (Shifts 2022): the DeepMedic demo model (``lesionseg demo``, trained on
  16 ``ms`` phantoms) predicts its 4 held-out phantoms with flip test-time augmentation
  and ``--save-uncertainty``; per case, inside the brain mask, the nDSC retention curve
  with voxels retained from most to least certain (the entropy of the mean) against a
  random order (seeded), and its area above the curve (R-AAC, lower is better).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks._common import records

#: Phantom indices of the location benchmark (past the demo's and tests' training ones).
FIRST_INDEX = 16


def locations(count: int) -> list[tuple]:
    """Location agreement and registration time, affine and B-spline."""
    from lesionseg.data.phantoms import generate_subject, get_task
    from lesionseg.report.lesions import label_lesions
    from lesionseg.report.locations import classify_lesions
    from lesionseg.report.registration import regions_on_subject, register_to_template

    task = get_task("ms")
    phantoms = [generate_subject(task, FIRST_INDEX + i, 0, 2.0, None, -1.0) for i in range(count)]
    rows = []
    for bspline in (False, True):
        agree = total = 0
        seconds, dice = [], []
        for phantom in phantoms:
            registration = register_to_template(
                phantom.images["T1"], phantom.affine, phantom.mask, bspline=bspline
            )
            regions = regions_on_subject(registration, phantom.label.shape, phantom.affine)
            numbered, _ = label_lesions(phantom.label, connectivity=26)
            classes = classify_lesions(numbered, regions)
            truth = phantom.info["lesion_locations"]["lesions"]
            agree += sum(classes[t["id"]] == t["location"] for t in truth)
            total += len(truth)
            seconds.append(registration.seconds)
            dice.append(registration.brain_dice)
        name = "affine + B-spline" if bspline else "affine"
        rows += [
            (f"locations, {name}: agreement with the truth", "share", agree / total, ""),
            (f"locations, {name}: lesions", "count", total, ""),
            (f"registration, {name}: time per case", "median", statistics.median(seconds), "s"),
            (f"registration, {name}: brain Dice", "median", statistics.median(dice), ""),
        ]
    return rows


def retention(workdir: Path) -> list[tuple]:
    """R-AAC of the entropy order against a random order on the demo's held-out phantoms."""
    import nibabel as nib

    from lesionseg.cli.main import main
    from lesionseg.evaluation.retention import retention_area
    from lesionseg.training.demo import run_demo

    run_demo(workdir / "demo", method="deepmedic", progress=False)
    data, model = workdir / "demo" / "data", workdir / "demo" / "model"
    out = workdir / "pred"
    argv = ["predict", "-m", str(model), "-i", str(data), "-o", str(out), "--quiet"]
    assert main([*argv, "--tta", "--save-uncertainty"]) == 0
    rng = np.random.default_rng(0)
    certain, random_order = [], []
    for label_path in sorted((Path(data) / "labelsTs").glob("*.nii.gz")):
        case = label_path.name[: -len(".nii.gz")]
        reference = np.asarray(nib.load(str(label_path)).dataobj) > 0
        mask = np.asarray(nib.load(str(Path(data) / "masksTs" / label_path.name)).dataobj) > 0
        prediction = np.asarray(nib.load(str(out / f"{case}_seg.nii.gz")).dataobj) > 0
        entropy = np.asarray(nib.load(str(out / f"{case}_uncertainty.nii.gz")).dataobj)[..., 0]
        inside = (reference[mask], prediction[mask])
        certain.append(retention_area(*inside, entropy[mask]))
        random_order.append(retention_area(*inside, rng.random(int(mask.sum()))))
    return [
        ("retention, most certain first (entropy, TTA)", "R-AAC mean", float(np.mean(certain)), ""),
        ("retention, random order", "R-AAC mean", float(np.mean(random_order)), ""),
        (
            "retention, random / entropy",
            "ratio",
            float(np.mean(random_order) / np.mean(certain)),
            "x",
        ),
        ("retention, cases", "count", len(certain), ""),
    ]


def run(quick: bool = False) -> list[dict]:
    """Location agreement, registration time, and retention areas."""
    rows = locations(2 if quick else 8)
    with tempfile.TemporaryDirectory() as tmp:
        rows += retention(Path(tmp))
    return records("report", rows, {"phantoms": "ms, 2 mm"})


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(row)
