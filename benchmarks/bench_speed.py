"""Every paper model's prediction in float32 (default layout), float32 channels-last and
bfloat16 channels-last, one after another in the same run (CPU).

For each model, each variant runs in a fresh process (peak memory from ``resource``):
wall time, peak memory, useful FLOP/s (the FLOPs the outputs need / wall time) and
their fraction of a 2048² matrix product of the same precision measured in the same
run, the speed-up over float32 default, and the agreement of its labels with float32
default on the brain voxels (random weights; the phantom-trained agreement guard is
``bench_precision``). The cases and networks are those of the models' own benchmarks:

* DeepMedic (paper widths): the 1 mm synthetic brain of ``bench_deepmedic``, cropped;
  useful FLOPs per output voxel from the architecture (recomputed tile margins count
  against it);
* D-UNet (SEAdd-23, paper widths) and its 2D U-Net baseline: that brain preprocessed as
  ``dunet-paper`` (192×192 in-plane), slice by slice; FLOPs of one slice's forward pass
  (``torch.utils.flop_counter``) × the slices with brain;
* Brain SegNet (paper widths): the 1 mm ``tumor`` phantom of ``bench_brainsegnet``;
  FLOPs of one pass over the padded volume;
* the MSSEG 2016 cascade (two paper-width patch CNNs): the 1 mm ``ms`` phantom of
  ``bench_cascade``, on its FLAIR candidates; useful FLOPs of a patch × candidates × 2;
* EDD Net (paper widths): the ``stroke-acute`` phantom of ``bench_edd`` preprocessed as
  the paper (1.6 mm in-plane), whole slices; FLOPs of a slice × slices.

Usage: ``python -m benchmarks speed`` (``--quick``: 2 mm volumes, a 96³ DeepMedic case).
"""

from __future__ import annotations

import os
import sys
import tempfile

import numpy as np
import torch

from benchmarks._common import measure, measure_variants, records, run_child, variant_settings


def _flops(model, x: torch.Tensor) -> float:
    """FLOPs of one forward pass of ``model`` on ``x`` (``torch.utils.flop_counter``)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return float(counter.get_total_flops())


def _predict(model, image, mask, **kwargs) -> tuple[dict, np.ndarray]:
    """``predict_volume`` in the variant the parent asked for; the record and probabilities."""
    from lesionseg.inference.predictor import predict_volume

    layout, amp = variant_settings()
    with measure() as record:
        probs = predict_volume(model, image, mask=mask, layout=layout, amp=amp, **kwargs)
    return record, probs


def _save(labels: np.ndarray, mask: np.ndarray) -> None:
    """The labels on the brain voxels, where the parent compares the variants."""
    np.save(os.environ["BENCH_OUT"], labels[mask > 0].astype(np.uint8))


def child_deepmedic(shape: list) -> dict:
    from benchmarks.bench_deepmedic import (
        build_model,
        cropped_case,
        deepmedic_useful_flops_per_voxel,
    )

    image, mask = cropped_case(tuple(shape))
    model = build_model()
    record, probs = _predict(model, image, mask)
    _save(probs.argmax(0), mask)
    useful = deepmedic_useful_flops_per_voxel(model) * mask.size
    return {**record, "useful_flops": useful}


def child_slices(name: str, shape: list) -> dict:
    """D-UNet or its 2D U-Net baseline on the brain preprocessed as ``dunet-paper``."""
    from benchmarks.bench_dunet import preprocessed_brain
    from lesionseg.models import MODELS

    image, mask = preprocessed_brain(tuple(shape))
    torch.manual_seed(0)
    model = MODELS.build(name, in_channels=1, num_classes=1).eval()
    slices = int((mask > 0).reshape(-1, mask.shape[2]).any(axis=0).sum())
    depth = 1 + sum(model.geometry.slice_context)
    per_slice = _flops(model, torch.zeros(1, depth, *image.shape[1:3]))
    record, probs = _predict(model, image, mask)
    _save(probs[-1] > 0.5, mask)
    return {**record, "useful_flops": per_slice * slices}


def child_brainsegnet(path: str) -> dict:
    from benchmarks.bench_brainsegnet import _model, flops_per_voxel
    from lesionseg.inference.tiling import choose_tile_size, plan_same

    data = np.load(path)
    image, mask = data["image"], data["mask"]
    model = _model()
    tile = choose_tile_size(model, image.shape[1:])
    plan = plan_same(image.shape[1:], model.geometry, tile)
    record, probs = _predict(model, image, mask, tile_size=tile)
    _save(probs.argmax(0), mask)
    return {**record, "useful_flops": flops_per_voxel(model) * int(np.prod(plan.padded_shape))}


def child_cascade(path: str) -> dict:
    from benchmarks.bench_cascade import _load, _networks, predict_cascade, useful_flops_per_patch

    image, mask, candidates = _load(path)
    networks = _networks()
    layout, amp = variant_settings()
    with measure() as record:
        probs = predict_cascade(image, mask, networks, layout=layout, amp=amp)
    _save(probs[1] > 0.5, mask)
    useful = useful_flops_per_patch(networks["first"]) * int(candidates.sum()) * len(networks)
    return {**record, "useful_flops": useful}


def child_edd(folder: str) -> dict:
    from benchmarks.bench_edd import _networks, _preprocess

    pre = _preprocess(folder)
    edd, _ = _networks()
    image, mask = pre.image, pre.mask
    per_slice = _flops(edd, torch.zeros(1, 1, *edd.geometry.input_size(image.shape[1:3])))
    _predict(edd, image, mask, axis=2)  # warm-up: the volume is small, start-up would count
    record, probs = _predict(edd, image, mask, axis=2)
    _save(probs.argmax(0), mask)
    slices = int((mask > 0).reshape(-1, mask.shape[2]).any(axis=0).sum())
    return {**record, "useful_flops": per_slice * slices}


def run(quick: bool = False) -> list[dict]:
    """The three variants of every paper model, model after model."""
    from benchmarks import bench_deepmedic

    spacing = 2.0 if quick else 1.0
    brain = list(bench_deepmedic.QUICK_SHAPE if quick else bench_deepmedic.FULL_SHAPE)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-speed-") as tmp:
        tumor, ms, stroke = f"{tmp}/tumor.npz", f"{tmp}/ms.npz", f"{tmp}/stroke"
        run_child("bench_brainsegnet", "prepare", [tumor, spacing])
        run_child("bench_cascade", "prepare", [ms, spacing])
        run_child("bench_edd", "prepare", [stroke, 2.0 if quick else 1.0])
        cases = [
            ("deepmedic", "child_deepmedic", [brain]),
            ("dunet", "child_slices", ["dunet", brain]),
            ("unet2d-transform", "child_slices", ["unet2d-transform", brain]),
            ("brainsegnet", "child_brainsegnet", [tumor]),
            ("msseg-cascade", "child_cascade", [ms]),
            ("edd", "child_edd", [stroke]),
        ]
        for model, child, args in cases:
            found = measure_variants("bench_speed", child, args, None, None, tmp, label=model)
            common = {"device": "cpu", "threads": torch.get_num_threads(), "model": model}
            rows += records("speed", found, common)
    return rows


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(row)
