"""Brain SegNet on one 1 mm ``tumor`` phantom: inference and training throughput (CPU).

Inference: the paper's network (11.9 M parameters, 4 channels, 5 classes, random weights in
eval mode) on phantom 0 of ``tumor`` at 1 mm, cropped to the brain and z-scored as
preprocessing does, through :func:`~lesionseg.inference.predictor.predict_volume` with
its memory-chosen tiles (cut along the slice axis only, combined exactly). The peer, in the
same run: MONAI's ``sliding_window_inference`` on the same network, volume and tile, with
its Gaussian blending (25 % overlap, its default). Useful FLOPs are those of one pass over
the (padded) volume, counted by ``torch.utils.flop_counter`` on a slab and scaled by the
voxels; the machine's figure is a float32 2048² matrix product.

Training: examples per second of the paper's 12×128×128 slabs (batch 2, forward, backward
and an Adam step, cross-entropy), after one warm-up step.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

import numpy as np
import torch

from benchmarks._common import measure, records, run_child

SPACING = {False: 1.0, True: 2.0}


def _model():
    from lesionseg.models.builder import ModelSpec, build_model

    return build_model(ModelSpec("brainsegnet", {}), 4, 5, seed=0).eval()


def flops_per_voxel(model) -> float:
    """FLOPs of one forward pass per output voxel (on a 64×64×12 slab; convolutions scale)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 4, 64, 64, 12)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return counter.get_total_flops() / (64 * 64 * 12)


def prepare(path: str, spacing: float) -> dict:
    """Phantom 0 of ``tumor``, cropped to the brain (+4 voxels) and z-scored; saved."""
    from lesionseg.data.phantoms import generate_subject, get_task
    from lesionseg.preprocess.normalize import zscore

    task = get_task("tumor")
    phantom = generate_subject(task, 0, 0, spacing, None, -1.0)
    image = np.stack([phantom.images[c] for c in task.channels]).astype(np.float32)
    mask = phantom.mask.astype(np.uint8)
    found = np.argwhere(mask)
    lo, hi = np.maximum(found.min(0) - 4, 0), found.max(0) + 5
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    image, mask = image[(slice(None), *box)], mask[box]
    image, _ = zscore(image, mask)
    np.savez(path, image=image, mask=mask)
    return {"shape": list(mask.shape)}


def child_lesionseg(path: str, out: str) -> dict:
    """``predict_volume`` with the tile it chooses from the free memory."""
    from lesionseg.inference.predictor import predict_volume
    from lesionseg.inference.tiling import choose_tile_size, plan_same

    data = np.load(path)
    image, mask = data["image"], data["mask"]
    model = _model()
    tile = choose_tile_size(model, image.shape[1:])
    plan = plan_same(image.shape[1:], model.geometry, tile)
    with measure() as record:
        probs = predict_volume(model, image, mask=mask, tile_size=tile)
    np.save(out, probs.argmax(0).astype(np.uint8))
    return {
        **record,
        "tile": list(plan.tile),
        "tiles": len(plan.starts),
        "padded_voxels": int(np.prod(plan.padded_shape)),
        "flops_per_voxel": flops_per_voxel(model),
    }


def child_monai(path: str, out: str, tile: list) -> dict:
    """MONAI's sliding window on the same tile (padded to the multiple of 8 in-plane)."""
    from monai.inferers import sliding_window_inference

    data = np.load(path)
    image, mask = data["image"], data["mask"]
    model = _model().to(memory_format=torch.channels_last_3d)
    shape = image.shape[1:]
    multiple = model.geometry.size_multiple
    padded = [-(-s // m) * m for s, m in zip(shape, multiple)]
    x = np.zeros((1, 4, *padded), np.float32)
    x[0, :, : shape[0], : shape[1], : shape[2]] = image

    def net(batch):
        return torch.softmax(model(batch.contiguous(memory_format=torch.channels_last_3d)), 1)

    with measure() as record, torch.inference_mode():
        probs = sliding_window_inference(
            torch.from_numpy(x), tile, 1, net, overlap=0.25, mode="gaussian"
        )[0, :, : shape[0], : shape[1], : shape[2]]
        labels = (probs.argmax(0).numpy() * (mask > 0)).astype(np.uint8)
    np.save(out, labels)
    return record


def child_training(steps: int = 3) -> dict:
    """Examples/s of the paper's slabs: batch 2 of 4 × 128×128×12, Adam, cross-entropy."""
    model = _model().train()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.randn(2, 4, 128, 128, 12)
    y = torch.randint(0, 5, (2, 128, 128, 12))

    def step():
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()

    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = time.perf_counter() - start
    return {"examples_per_s": 2 * steps / seconds, "seconds_per_step": seconds / steps}


def run(quick: bool = False) -> list[dict]:
    """Inference (lesionseg and MONAI, same tile) and training throughput, plus matmul."""
    with tempfile.TemporaryDirectory() as tmp:
        case = os.path.join(tmp, "case.npz")
        facts = run_child("bench_brainsegnet", "prepare", [case, SPACING[quick]])
        mm = run_child("_common", "child_matmul", [])
        ours = run_child("bench_brainsegnet", "child_lesionseg", [case, f"{tmp}/ours.npy"])
        peer = run_child(
            "bench_brainsegnet", "child_monai", [case, f"{tmp}/monai.npy", ours["tile"]]
        )
        training = run_child("bench_brainsegnet", "child_training", [1 if quick else 3])
        mm2 = run_child("_common", "child_matmul", [])
        agree = float((np.load(f"{tmp}/ours.npy") == np.load(f"{tmp}/monai.npy")).mean())
    matmul = max(mm["flops"], mm2["flops"])
    useful = ours["flops_per_voxel"] * ours["padded_voxels"]
    common = {
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "volume": "x".join(map(str, facts["shape"])),
        "tile": "x".join(map(str, ours["tile"])),
        "tiles": ours["tiles"],
    }
    rows = [
        ("matmul 2048 float32", "FLOP/s", matmul / 1e9, "GFLOP/s"),
        ("useful FLOPs per voxel", "FLOP", ours["flops_per_voxel"] / 1e6, "MFLOP"),
        ("lesionseg predict_volume", "wall time", ours["wall"], "s"),
        ("lesionseg predict_volume", "CPU time", ours["cpu"], "s"),
        ("lesionseg predict_volume", "peak memory", ours["peak_rss"] / 2**30, "GiB"),
        ("lesionseg predict_volume", "useful FLOP/s", useful / ours["wall"] / 1e9, "GFLOP/s"),
        ("lesionseg predict_volume", "useful FLOP/s / matmul", useful / ours["wall"] / matmul, ""),
        ("monai sliding_window_inference", "wall time", peer["wall"], "s"),
        ("monai sliding_window_inference", "peak memory", peer["peak_rss"] / 2**30, "GiB"),
        ("monai / lesionseg", "wall time ratio", peer["wall"] / ours["wall"], "x"),
        ("monai vs lesionseg", "label agreement", agree, "fraction of voxels"),
        (
            "training, 12x128x128 slabs, batch 2",
            "throughput",
            training["examples_per_s"],
            "slabs/s",
        ),
    ]
    return records("brainsegnet", rows, common)


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(row)
