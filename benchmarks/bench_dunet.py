"""D-UNet against a 2D U-Net on chronic-stroke phantoms, and D-UNet inference time at 1 mm.

Two parts:

* **Comparison** (issue 7's acceptance): ``dunet-tiny`` and ``unet2d-tiny`` are
  trained on the same ``stroke-chronic`` phantoms (T1, 2 mm), with the same seeds,
  sampler, augmentation, loss, optimiser and number of steps, then segment the
  held-out test subjects through the same code as ``lesionseg predict``. Scores come
  from :func:`lesionseg.evaluation.evaluate` as the D-UNet paper reports them:
  per-subject Dice, recall and precision as mean ± SD, and the global Dice (all
  test voxels pooled); per seed and over the seeds.
* **Inference time** of the paper's D-UNet (SEAdd-23, widths 32–512) and 2D U-Net
  (transform) with random weights on a 1 mm brain-size volume (182×218×182, the
  synthetic brain of ``bench_deepmedic``), cropped to the brain and resized in-plane
  to 192×192 as ``dunet-paper.yaml`` preprocesses it, predicted slice by slice by
  :func:`~lesionseg.inference.predict_volume`; each in a fresh subprocess.

Training uses one thread (``BENCH_DUNET_TRAIN_THREADS``), inference torch's default
(as ``bench_deepmedic``). Usage: ``python -m benchmarks dunet`` (``--quick``: 12
subjects, 1 seed, 60 steps, a 32-slice volume). ``BENCH_DUNET_SEEDS=0,1`` overrides
the seeds.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks._common import measure, run_child

METHODS = ("dunet-tiny", "unet2d-tiny")
# No validation hold-out: every training subject is used and the model after the last
# step is compared (with 2 validation cases the "best" epoch is noise: small lesions).
FULL = {
    "subjects": 40,
    "seeds": (0, 1, 2),
    "overrides": {"validation.cases": 0},
    "volume": (182, 218, 182),
}
QUICK = {
    "subjects": 12,
    "seeds": (0,),
    "overrides": {"validation.cases": 0, "train.epochs": 3, "train.batches_per_epoch": 20},
    "volume": (182, 218, 32),
}
SPACING_MM = 2.0
DATA_SEED = 0


def _mean_sd(values) -> tuple[float, float]:
    values = np.asarray(values, float)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def compare(quick: bool, workdir: Path) -> list[dict]:
    """Train both tiny recipes per seed, predict the test subjects, evaluate."""
    from lesionseg.data.dataset import load_dataset
    from lesionseg.data.phantoms import synthesize
    from lesionseg.evaluation import evaluate
    from lesionseg.inference.pipeline import load_models, predict_subject
    from lesionseg.training import load_recipe, train

    setting = QUICK if quick else FULL
    # One thread: both methods get the same share of a shared machine (times comparable).
    threads = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("BENCH_DUNET_TRAIN_THREADS", "1")))
    seeds = setting["seeds"]
    if os.environ.get("BENCH_DUNET_SEEDS"):
        seeds = tuple(int(s) for s in os.environ["BENCH_DUNET_SEEDS"].split(","))
    data = synthesize(
        "stroke-chronic",
        workdir / "data",
        subjects=setting["subjects"],
        seed=DATA_SEED,
        spacing=SPACING_MM,
    )
    dataset = load_dataset(data)
    test = dataset.split("test")
    rows: list[dict] = []
    per_seed: dict[str, dict[str, list[float]]] = {m: {} for m in METHODS}
    for seed in seeds:
        folders = {}
        for method in METHODS:
            out = workdir / f"{method}-seed{seed}"
            result = train(
                method,
                data,
                out / "model",
                seed=seed,
                device="cpu",
                cache=workdir / "cache",
                overrides=setting["overrides"],
                progress=False,
            )
            stage = load_recipe(method, setting["overrides"]).stages()[0]
            slices = stage["epochs"] * stage["batches_per_epoch"] * stage["batch_size"]
            models = load_models([out / "model"])
            tic = time.perf_counter()
            for subject in test:
                predict_subject(models, subject, out / "pred")
            folders[method] = out / "pred"
            common = {
                "seed": seed,
                "train_subjects": len(dataset.split("train")),
                "test_subjects": len(test),
                "threads": torch.get_num_threads(),
            }
            rows += [
                {
                    "benchmark": f"dunet: {method} training",
                    "metric": "wall time",
                    "value": round(result.seconds, 1),
                    "unit": "s",
                    **common,
                },
                {
                    "benchmark": f"dunet: {method} training",
                    "metric": "slices seen",
                    "value": slices,
                    "unit": "slices",
                    **common,
                },
                {
                    "benchmark": f"dunet: {method} prediction",
                    "metric": "wall time per subject",
                    "value": round((time.perf_counter() - tic) / len(test), 3),
                    "unit": "s",
                    **common,
                },
            ]
        result = evaluate({m: folders[m] for m in METHODS}, data, presets=(), surface=False)
        summary = {
            (r["method"], r["metric"]): r
            for r in result.summary(metrics=["dice", "sensitivity", "precision"])
        }
        glob = {r["method"]: r["global_dice"] for r in result.global_dice()}
        for method in METHODS:
            common = {"seed": seed, "test_subjects": len(test)}
            for metric, name in (
                ("dice", "Dice"),
                ("sensitivity", "recall"),
                ("precision", "precision"),
            ):
                s = summary[(method, metric)]
                per_seed[method].setdefault(name, []).append(s["mean"])
                rows.append(
                    {
                        "benchmark": f"dunet: {method} held-out",
                        "metric": f"{name} mean",
                        "value": round(s["mean"], 4),
                        "unit": "",
                        "sd": round(s["sd"], 4),
                        "n": s["n"],
                        **common,
                    }
                )
            per_seed[method].setdefault("global Dice", []).append(glob[method])
            rows.append(
                {
                    "benchmark": f"dunet: {method} held-out",
                    "metric": "global Dice",
                    "value": round(glob[method], 4),
                    "unit": "",
                    **common,
                }
            )
        test_result = result.compare(METHODS[0], METHODS[1], "dice")
        for _region, paired in test_result:
            rows.append(
                {
                    "benchmark": "dunet: dunet-tiny - unet2d-tiny",
                    "metric": "Dice difference (paired)",
                    "value": round(paired.mean_difference, 4),
                    "unit": "",
                    "wilcoxon_p": round(paired.wilcoxon_pvalue, 4),
                    "t_p": round(paired.t_pvalue, 4),
                    "seed": seed,
                }
            )
    for method in METHODS:
        for name, values in per_seed[method].items():
            mean, sd = _mean_sd(values)
            rows.append(
                {
                    "benchmark": f"dunet: {method} held-out, over seeds",
                    "metric": f"{name} (mean of seed means)",
                    "value": round(mean, 4),
                    "unit": "",
                    "sd_over_seeds": round(sd, 4),
                    "seeds": len(values),
                }
            )
    torch.set_num_threads(threads)
    return rows


# ----------------------------------------------------------------------- inference time


def preprocessed_brain(shape) -> tuple[np.ndarray, np.ndarray]:
    """The synthetic brain's first channel, cropped and resampled to 192×192 in-plane."""
    from benchmarks.bench_deepmedic import synthetic_brain
    from lesionseg.preprocess.crop import bounding_box
    from lesionseg.preprocess.resample import resample_to_shape

    image, mask = synthetic_brain(tuple(shape))
    box = bounding_box(mask > 0, 4)
    image, mask = image[(slice(0, 1), *box)], mask[box]
    target = (192, 192, mask.shape[2])
    image = resample_to_shape(image, target, order=1).astype(np.float32)
    return image, resample_to_shape(mask, target, order=0)


def child_inference(name: str, shape) -> dict:
    """predict_volume of the paper-width network on a 1 mm synthetic brain, preprocessed."""
    from lesionseg.inference import predict_volume
    from lesionseg.models import MODELS

    image, mask = preprocessed_brain(shape)
    torch.manual_seed(0)
    model = MODELS.build(name, in_channels=1, num_classes=1).eval()
    predict_volume(model, image[:, :, :, :16], mask=mask[:, :, :16])  # warm-up
    with measure() as record:
        predict_volume(model, image, mask=mask)
    return {
        **record,
        "slices": int((mask > 0).reshape(-1, mask.shape[2]).any(axis=0).sum()),
        "shape": list(image.shape[1:]),
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def inference(quick: bool) -> list[dict]:
    """Inference time of the paper-width D-UNet and 2D U-Net on one 1 mm volume."""
    shape = (QUICK if quick else FULL)["volume"]
    rows = []
    for name in ("dunet", "unet2d-transform"):
        r = run_child("bench_dunet", "child_inference", [name, list(shape)])
        common = {
            "device": "cpu",
            "threads": torch.get_num_threads(),
            "volume": "x".join(map(str, shape)),
            "preprocessed": "x".join(map(str, r["shape"])),
            "slices": r["slices"],
            "parameters": r["parameters"],
        }
        rows += [
            {
                "benchmark": f"dunet: {name} (paper widths) predict_volume",
                "metric": "wall time",
                "value": round(r["wall"], 2),
                "unit": "s",
                **common,
            },
            {
                "benchmark": f"dunet: {name} (paper widths) predict_volume",
                "metric": "CPU time",
                "value": round(r["cpu"], 2),
                "unit": "s",
                **common,
            },
            {
                "benchmark": f"dunet: {name} (paper widths) predict_volume",
                "metric": "time per slice",
                "value": round(r["wall"] / r["slices"], 4),
                "unit": "s",
                **common,
            },
            {
                "benchmark": f"dunet: {name} (paper widths) predict_volume",
                "metric": "peak memory",
                "value": round(r["peak_rss"] / 2**30, 3),
                "unit": "GiB",
                **common,
            },
        ]
    return rows


def run(quick: bool = False) -> list[dict]:
    """The comparison, then the inference times."""
    with tempfile.TemporaryDirectory(prefix="bench-dunet-") as tmp:
        rows = compare(quick, Path(tmp))
    return rows + inference(quick)


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(row)
