"""Training throughput (segments or slices per second) of the DeepMedic and D-UNet recipes
on this machine's CPU, in float32 with the contiguous and the channels-last layout and in
bfloat16 channels-last.

Runs the real training loop (`lesionseg.training.train`: loader, model, loss,
optimiser, checkpoint) for one epoch on a small synthetic data set and reports the
segments per second of that epoch (the loop's own figure, logged in log.csv),
plus the time of one optimiser step.
"""

from __future__ import annotations

import itertools
import json
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from lesionseg.errors import LesionsegError
from lesionseg.training import train

#: Recipe: (image channels, batches per measured epoch, the same for --quick).
RECIPES = {
    "deepmedic-tiny": (4, 25, 5),
    "deepmedic-paper": (4, 10, 3),
    "dunet-tiny": (1, 25, 5),
    "dunet-paper": (1, 3, 1),
}
#: (train.precision, train.layout) pairs measured one after another in the same run.
VARIANTS = (("fp32", "contiguous"), ("fp32", "channels_last"), ("bf16", "channels_last"))


def _dataset(root: Path, channels: int = 4, n: int = 3, size: int = 72) -> Path:
    rng = np.random.default_rng(0)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    grid = np.indices((size,) * 3).astype(np.float32)
    brain = ((grid - size / 2) ** 2).sum(0) < (size * 0.45) ** 2
    for i in range(n):
        label = np.zeros((size,) * 3, np.uint8)
        for _ in range(6):
            c = rng.uniform(size * 0.25, size * 0.75, 3)
            label[((grid - c[:, None, None, None]) ** 2).sum(0) < rng.uniform(4, 30)] = 1
        label &= brain
        for ch in range(channels):
            img = brain * (100 + 30 * label + rng.normal(0, 10, label.shape))
            nib.save(
                nib.Nifti1Image(img.astype(np.float32), np.eye(4)),
                root / "imagesTr" / f"b_{i:03d}_{ch:04d}.nii.gz",
            )
        nib.save(nib.Nifti1Image(label, np.eye(4)), root / "labelsTr" / f"b_{i:03d}.nii.gz")
    (root / "dataset.json").write_text(
        json.dumps(
            {
                "name": "bench",
                "channel_names": {str(k): f"c{k}" for k in range(channels)},
                "labels": {"background": 0, "lesion": 1},
                "numTraining": n,
                "file_ending": ".nii.gz",
            }
        )
    )
    return root


def run(quick: bool) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = {c: _dataset(Path(tmp) / f"data{c}", c) for c in {v[0] for v in RECIPES.values()}}
        for recipe, (precision, layout) in itertools.product(RECIPES, VARIANTS):
            channels, full, short = RECIPES[recipe]
            batches = short if quick else full
            name = f"{recipe} {precision} {layout}"
            # Two epochs: the first warms up (allocations, worker start); the second is measured.
            common = {
                "device": "cpu",
                "threads": torch.get_num_threads(),
                "batches": batches,
                "precision": precision,
                "layout": layout,
            }
            try:
                result = train(
                    recipe,
                    data[channels],
                    Path(tmp) / name.replace(" ", "-"),
                    device="cpu",
                    progress=False,
                    overrides={
                        "train.epochs": 2,
                        "train.batches_per_epoch": batches,
                        "train.precision": precision,
                        "train.layout": layout,
                        "validation.cases": 0,
                    },
                    cache=Path(tmp) / f"cache-{recipe}",
                )
            except LesionsegError as error:  # a diverged run is a result, not a crash
                rows.append(
                    {
                        "benchmark": "training",
                        "metric": f"{name} diverged",
                        "value": 1.0,
                        "unit": str(error).split(";")[0],
                        **common,
                    }
                )
                continue
            epoch = result.history[-1]
            common["batch"] = round(epoch["segments_per_s"] * epoch["seconds"] / batches)
            rows.append(
                {
                    "benchmark": "training",
                    "metric": f"{name} throughput",
                    "value": float(epoch["segments_per_s"]),
                    "unit": "slices/s" if recipe.startswith("dunet") else "segments/s",
                    **common,
                }
            )
            rows.append(
                {
                    "benchmark": "training",
                    "metric": f"{name} step time",
                    "value": float(epoch["seconds"] / batches),
                    "unit": "s",
                    **common,
                }
            )
    return rows
