"""DeepMedic inference on a 1 mm brain-size volume (182×218×182, 4 channels) on CPU.

Figures, each measured in a fresh subprocess (peak memory from ``resource``):

* a 2048×2048 float32 matrix product: the machine's reference FLOP/s;
* lesionseg's :func:`~lesionseg.inference.predict_volume` on the volume cropped to
  the brain (as preprocessing does): wall time, CPU time, peak memory, and useful
  FLOP/s = FLOPs the output voxels need (0.72 MFLOP each, computed from the
  architecture) / wall time, so recomputed tile margins count against it;
* the same network (same weights, same tiles) through MONAI's
  ``sliding_window_inference``: windows of the tile's input size at a stride of the
  tile's output size; the valid output is put back in the window's centre with a
  weight channel (1 in the centre, 0 in the margin), so that MONAI's averaging gives
  the exact valid-convolution result. Ratio = MONAI wall time / lesionseg wall time;
* the float32 / channels-last / bfloat16 variants are in ``bench_speed``.

The paper network (widths 30…50, hidden 150, ×3 pathway, 2 classes) with random
weights and batch-norm statistics; time does not depend on the values.

Usage: ``python -m benchmarks deepmedic`` (``--quick``: a 96³ volume).
"""

from __future__ import annotations

import os
import sys

import numpy as np
import torch

from benchmarks._common import (
    measure,
    peak_rss_bytes,
    records,
    run_child,
    variant_settings,
)

FULL_SHAPE = (182, 218, 182)
QUICK_SHAPE = (96, 96, 96)
CHANNELS = 4
CLASSES = 2


def deepmedic_useful_flops_per_voxel(model) -> float:
    """FLOPs (2 per multiply-add) one output voxel needs, from the layers' widths.

    Normal pathway: every layer's MACs per voxel; a subsampled pathway (factor f):
    its MACs per low-resolution voxel / f³; hidden layers and classifier per voxel.
    """
    macs = 0.0
    for layer in model.normal.layers:
        c = layer.conv
        macs += c.in_channels * c.out_channels * np.prod(c.kernel_size)
    for pathway, f in zip(model.subsampled, model.factors):
        for layer in pathway.layers:
            c = layer.conv
            macs += c.in_channels * c.out_channels * np.prod(c.kernel_size) / f**3
    for layer in model.head:
        macs += layer.conv.in_channels * layer.conv.out_channels
    return 2.0 * macs


def synthetic_brain(shape, seed=0):
    """A 4-channel volume with an ellipsoid "brain" the size of an adult's at 1 mm."""
    rng = np.random.default_rng(seed)
    grid = np.ogrid[tuple(slice(0, s) for s in shape)]
    centre = [(s - 1) / 2 for s in shape]
    # Semi-axes of an adult brain in MNI space (about 140 × 172 × 142 mm), scaled for --quick.
    semi = [a * s / f for a, s, f in zip((70, 86, 71), shape, FULL_SHAPE)]
    r2 = sum(((g - c) / a) ** 2 for g, c, a in zip(grid, centre, semi))
    mask = r2 < 1
    image = rng.normal(0, 1, (CHANNELS, *shape)).astype(np.float32) * mask
    return image, mask.astype(np.uint8)


def build_model(seed=0):
    """The paper's DeepMedic (2 classes) with random weights and batch-norm statistics."""
    from lesionseg.models.deepmedic import DeepMedic

    torch.manual_seed(seed)
    model = DeepMedic(CHANNELS, CLASSES)
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm3d):
            m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=g))
            m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
    return model.eval()


def cropped_case(shape):
    """The synthetic case cropped to the brain's bounding box (+4 voxels), as preprocessing."""
    from lesionseg.preprocess.crop import bounding_box

    image, mask = synthetic_brain(shape)
    box = bounding_box(mask > 0, 4)
    return np.ascontiguousarray(image[(slice(None), *box)]), np.ascontiguousarray(mask[box])


def child_lesionseg(shape, tile) -> dict:
    from lesionseg.inference import predict_volume
    from lesionseg.inference.tiling import choose_tile_size, plan_valid

    image, mask = cropped_case(shape)
    model = build_model()
    base = peak_rss_bytes()
    tile = tuple(tile) if tile else choose_tile_size(model, image.shape[1:])
    plan = plan_valid(image.shape[1:], model.geometry, tile)
    layout, amp = variant_settings()  # amp: bfloat16 autocast (--precision bf16)
    with measure() as record:
        probs = predict_volume(model, image, mask=mask, tile_size=tile, amp=amp, layout=layout)
    np.save(os.environ["BENCH_OUT"], probs[1])
    from lesionseg.inference.layout import _MEASURED

    chosen = list(_MEASURED.values())
    return {
        **record,
        "channels_last": bool(chosen[0]) if chosen else layout == "channels_last",
        "base_rss": base,
        "shape": list(image.shape[1:]),
        "voxels": int(np.prod(image.shape[1:])),
        "brain_voxels": int(mask.sum()),
        "tile_out": list(plan.tile_out),
        "tiles": len(plan.starts),
        "flops_per_voxel": deepmedic_useful_flops_per_voxel(model),
    }


def child_monai(shape, tile) -> dict:
    from monai.inferers import sliding_window_inference

    from lesionseg.inference.allocator import keep_freed_memory
    from lesionseg.inference.tiling import plan_valid

    keep_freed_memory()  # the same allocator settings as lesionseg, for a fair comparison
    image, mask = cropped_case(shape)
    model = build_model().to(memory_format=torch.channels_last_3d)
    base = peak_rss_bytes()
    margin = model.margin
    tile_in = [t + 2 * margin for t in tile]

    def valid_in_window(x):
        x = x.contiguous(memory_format=torch.channels_last_3d)
        probs = torch.softmax(model(x), 1)
        out = torch.zeros((x.shape[0], CLASSES + 1, *x.shape[2:]))
        centre = (slice(None), slice(None), *(slice(margin, s - margin) for s in x.shape[2:]))
        out[centre] = torch.cat([probs, torch.ones_like(probs[:, :1])], 1)
        return out

    with measure() as record:
        # The same padding as lesionseg (margins, rounded up to multiples of 3), so that
        # MONAI's windows start where lesionseg's tiles do and the results agree.
        plan = plan_valid(image.shape[1:], model.geometry, tile)
        pad = [(0, 0)] + list(zip(plan.pad_before, plan.pad_after))
        padded = np.pad(image, pad)  # zeros beyond the image, as lesionseg (and training)
        with torch.inference_mode():
            # Overlap so that the stride is the tile's output size (MONAI: int(roi·(1-overlap))).
            overlap = [(2 * margin - 0.5) / t for t in tile_in]
            summed = sliding_window_inference(
                torch.from_numpy(padded)[None],
                tile_in,
                1,
                valid_in_window,
                overlap=overlap,
                mode="constant",
            )[0]
        inner = (slice(None), *(slice(margin, margin + s) for s in image.shape[1:]))
        summed = summed[inner]
        probs = (summed[:CLASSES] / summed[CLASSES:].clamp_min(1e-6)).numpy() * (mask > 0)
    np.save(os.environ["BENCH_OUT"], probs[1])
    return {**record, "base_rss": base}


def _in_subprocess(
    kind: str, shape, tile, out_path: str, bf16: bool = False, layout: str = "auto"
) -> dict:
    args = [list(shape), list(tile) if tile else None]
    env = {"BENCH_OUT": out_path, "BENCH_AMP": "1" if bf16 else "0", "BENCH_LAYOUT": layout}
    return run_child("bench_deepmedic", f"child_{kind}", args, env=env)


def run(quick: bool = False) -> list[dict]:
    """Measure lesionseg and MONAI on the same volume, network and tiles, plus matmul."""
    import tempfile

    shape = QUICK_SHAPE if quick else FULL_SHAPE
    tile = os.environ.get("BENCH_TILE")
    tile = [int(tile)] * 3 if tile else None
    with tempfile.TemporaryDirectory() as tmp:
        ours_path, peer_path = f"{tmp}/ours.npy", f"{tmp}/monai.npy"
        mm = run_child("_common", "child_matmul", [])
        ours = _in_subprocess("lesionseg", shape, tile, ours_path)
        peer = _in_subprocess("monai", shape, ours["tile_out"], peer_path)
        mm2 = run_child("_common", "child_matmul", [])
        a, b = np.load(ours_path), np.load(peer_path)
        agree = float(((a > 0.5) == (b > 0.5)).mean())
        max_diff = float(np.abs(a - b).max())
    matmul = max(mm["flops"], mm2["flops"])
    useful = ours["flops_per_voxel"] * ours["voxels"]
    common = {
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "volume": "x".join(map(str, shape)),
        "cropped": "x".join(map(str, ours["shape"])),
        "tile_out": "x".join(map(str, ours["tile_out"])),
        "tiles": ours["tiles"],
    }
    rows = [
        ("matmul 2048 float32", "FLOP/s", matmul / 1e9, "GFLOP/s"),
        ("deepmedic useful FLOPs per output voxel", "FLOP", ours["flops_per_voxel"] / 1e6, "MFLOP"),
        ("lesionseg predict_volume", "wall time", ours["wall"], "s"),
        ("lesionseg predict_volume", "CPU time", ours["cpu"], "s"),
        ("lesionseg predict_volume", "peak memory", ours["peak_rss"] / 2**30, "GiB"),
        (
            "lesionseg predict_volume",
            "peak memory above baseline",
            (ours["peak_rss"] - ours["base_rss"]) / 2**30,
            "GiB",
        ),
        ("lesionseg predict_volume", "useful FLOP/s", useful / ours["wall"] / 1e9, "GFLOP/s"),
        ("lesionseg predict_volume", "useful FLOP/s / matmul", useful / ours["wall"] / matmul, ""),
        # On a shared machine wall time includes waiting for other processes; CPU time
        # divided by the threads is what the run would take with the cores to itself.
        (
            "lesionseg predict_volume",
            "useful FLOP/s per CPU time / threads",
            useful / (ours["cpu"] / torch.get_num_threads()) / 1e9,
            "GFLOP/s",
        ),
        ("monai sliding_window_inference", "wall time", peer["wall"], "s"),
        ("monai sliding_window_inference", "CPU time", peer["cpu"], "s"),
        ("monai sliding_window_inference", "peak memory", peer["peak_rss"] / 2**30, "GiB"),
        ("monai sliding_window_inference", "useful FLOP/s", useful / peer["wall"] / 1e9, "GFLOP/s"),
        ("monai / lesionseg", "wall time ratio", peer["wall"] / ours["wall"], "x"),
        ("monai / lesionseg", "CPU time ratio", peer["cpu"] / ours["cpu"], "x"),
        ("monai vs lesionseg", "foreground agreement", agree, "fraction of voxels"),
        ("monai vs lesionseg", "max |p difference|", max_diff, ""),
        ("layout auto chose channels-last (float32)", "1 = yes", ours["channels_last"], ""),
    ]
    return records("deepmedic", rows, common)


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(row)
