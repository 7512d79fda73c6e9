"""Peak memory of predicting a 5000×5000×1 slab with the tiny DeepMedic on CPU.

A thin volume is the worst case for padding a volume whole before tiling it: padded
by the tiny DeepMedic's 18-voxel margins and rounded up to its multiple of 3, the
one-voxel-deep slab becomes 5036×5036×39 voxels, 15.8 GB of float32 for 4 channels.
lesionseg pads each tile on its own (:mod:`lesionseg.inference.padding`), so that
the peak follows the tile and the batch; the goal is a peak under 2 GiB.

Figures, measured in a fresh subprocess (peak memory from ``resource``): wall time,
CPU time, peak memory, and peak memory above the baseline (the child with the volume
in memory and the model built); plus, for comparison, the size of the whole padded
input that padding the volume first would allocate (computed from the tile plan).

The network is the ``deepmedic-tiny`` recipe's model section, untrained (seeded
random weights), with 4 channels and 2 classes; the volume is random float32 with a
mask of ones, so every tile is computed. Time does not depend on the values.

Usage: ``python -m benchmarks slab`` (``--quick``: a 1000×1000×1 slab; ``BENCH_TILE``
sets the output tile side, default: the predictor's own choice).
"""

from __future__ import annotations

import math
import os
import sys

import numpy as np
import torch

from benchmarks._common import measure, peak_rss_bytes, records, run_child

SHAPE = (5000, 5000, 1)
QUICK_SHAPE = (1000, 1000, 1)
CHANNELS = 4
CLASSES = 2
RECIPE = "deepmedic-tiny"
#: Peak memory the full-size prediction must stay under.
PEAK_GOAL_BYTES = 2 * 2**30


def build_model(seed: int = 0) -> torch.nn.Module:
    """The recipe's network, untrained, for ``CHANNELS`` channels and ``CLASSES`` classes."""
    from lesionseg.models.builder import ModelSpec
    from lesionseg.models.builder import build_model as build
    from lesionseg.training.recipe import load_recipe

    spec = ModelSpec.parse(load_recipe(RECIPE).data["model"])
    return build(spec, CHANNELS, CLASSES, seed).eval()


def whole_padding_bytes(plan) -> int:
    """Bytes of the float32 input padded whole by a valid-convolution tile plan."""
    padded = [s + b + a for s, b, a in zip(plan.shape, plan.pad_before, plan.pad_after)]
    return 4 * CHANNELS * math.prod(padded)


def child_predict(shape: list[int], tile: int | None) -> dict:
    """Predict a random slab of ``shape`` (a fresh process: peak memory is this run's)."""
    from lesionseg.inference import predict_volume
    from lesionseg.inference.tiling import choose_tile_size, plan_valid

    shape = tuple(shape)
    image = np.random.default_rng(0).standard_normal((CHANNELS, *shape), dtype=np.float32)
    mask = np.ones(shape, dtype=np.uint8)
    model = build_model()
    base = peak_rss_bytes()
    # What predict_volume chooses by itself when no tile is given.
    tile_size = tile if tile else choose_tile_size(model, shape)
    plan = plan_valid(shape, model.geometry, tile_size)
    with measure() as record:
        probs = predict_volume(model, image, mask=mask, tile_size=tile_size)
    return {
        **record,
        "base_rss": base,
        "shape": list(probs.shape[1:]),
        "tile_out": list(plan.tile_out),
        "tiles": len(plan.starts),
        "whole_padding": whole_padding_bytes(plan),
    }


def measure_slab(shape=SHAPE, tile: int | None = None) -> dict:
    """:func:`child_predict` in a fresh Python process."""
    return run_child("bench_slab", "child_predict", [list(shape), tile])


def run(quick: bool = False) -> list[dict]:
    """Peak memory and time of the slab prediction, and the whole padded input's size."""
    shape = QUICK_SHAPE if quick else SHAPE
    tile = os.environ.get("BENCH_TILE")
    result = measure_slab(shape, int(tile) if tile else None)
    common = {
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "recipe": RECIPE,
        "volume": "x".join(map(str, shape)),
        "channels": CHANNELS,
        "tile_out": "x".join(map(str, result["tile_out"])),
        "tiles": result["tiles"],
        "goal_peak_gib": PEAK_GOAL_BYTES / 2**30,
    }
    gib = 2**30
    rows = [
        ("predict_volume", "wall time", result["wall"], "s"),
        ("predict_volume", "CPU time", result["cpu"], "s"),
        ("predict_volume", "peak memory", result["peak_rss"] / gib, "GiB"),
        (
            "predict_volume",
            "peak memory above baseline",
            (result["peak_rss"] - result["base_rss"]) / gib,
            "GiB",
        ),
        (
            "padding the volume whole",
            "padded input (computed)",
            result["whole_padding"] / gib,
            "GiB",
        ),
    ]
    return records("slab", rows, common)


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(row)
