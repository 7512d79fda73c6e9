"""MSSEG cascade prediction of one 1 mm ``ms`` phantom with the paper's networks (issue point 8).

Both networks (``patch-cnn`` at the paper's widths, 715,234 parameters each) classify every
FLAIR candidate (z-scored FLAIR > 1.5 inside the brain) of one 1 mm ``ms`` phantom
(4 channels); the method's output is p1·p2 there. Measured in fresh processes:

* lesionseg: the method graph ``within(product(first, second))`` through
  :func:`~lesionseg.inference.predictor.predict_volume`: patches gathered from a strided
  view, batches sized to the memory budget, convolutions trimmed to the outputs the
  pooling reads, channels-last;
* the plain path (the peer): the same weights in plain same-padded layers (every
  convolution output computed), each patch cut and copied on its own, 256 a batch.

Useful FLOPs are those of the trimmed network (2 × 99.6 M multiply-adds a patch); the
machine's figure is a float32 2048² matrix product. Both paths give the same
probabilities (the largest difference is reported).
"""

from __future__ import annotations

import os
import sys
import tempfile

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks._common import measure, records, run_child

SPACING = {False: 1.0, True: 2.0}  # full run: 1 mm; --quick: 2 mm
THRESHOLD = 1.5
PLAIN_BATCH = 256


def useful_flops_per_patch(model) -> float:
    """Multiply-adds × 2 of one patch through the trimmed network (what must be computed)."""
    flops, size = 0, model.geometry.patch_size[0]
    for stage in model.features:
        conv = stage.conv
        kept = 2 * (size // 2)
        flops += kept**3 * conv.out_channels * conv.in_channels * conv.kernel_size[0] ** 3
        size //= 2
    for layer in model.classifier:
        if isinstance(layer, torch.nn.Linear):
            flops += layer.in_features * layer.out_features
    return 2.0 * flops


def _networks():
    from lesionseg.models.builder import ModelSpec, build_model

    spec = ModelSpec("patch-cnn", {"widths": [32, 64], "hidden": 256})
    return {
        name: build_model(spec, 4, 2, seed=seed).eval()
        for seed, name in enumerate(("first", "second"))
    }


def prepare(path: str, spacing: float) -> dict:
    """Synthesise phantom 0 of ``ms``, z-score it over the brain as training does, save it."""
    from lesionseg.data.phantoms import generate_subject, get_task
    from lesionseg.preprocess.normalize import zscore

    task = get_task("ms")
    phantom = generate_subject(task, 0, 0, spacing, None, -1.0)
    names = list(task.channels)
    image = np.stack([phantom.images[c] for c in names]).astype(np.float32)
    mask = phantom.mask.astype(np.uint8)
    image, _ = zscore(image, mask)
    order = [names.index(c) for c in ("FLAIR", "PD", "T2", "T1")]
    np.savez(path, image=image[order], mask=mask)
    return {"shape": list(mask.shape), "brain": int(mask.sum())}


def _load(path: str):
    data = np.load(path)
    image, mask = data["image"], data["mask"]
    candidates = (image[0] > THRESHOLD) & (mask > 0)
    return image, mask, candidates


def predict_cascade(image, mask, networks, **options) -> np.ndarray:
    """The method graph on the candidates, as ``lesionseg predict`` runs it.

    ``options`` go to every ``predict_volume`` call (``layout``, ``amp``).
    """
    from lesionseg.inference.graph import NetworkInput, evaluate
    from lesionseg.inference.predictor import predict_volume

    graph = {
        "combine": "within",
        "rule": f"FLAIR > {THRESHOLD} and brain",
        "inputs": [{"combine": "product", "inputs": ["first", "second"]}],
    }
    channels = ["FLAIR", "PD", "T2", "T1"]

    def run(model, img, where):
        return predict_volume(model, img, mask=where, **options)

    inputs = {n: NetworkInput(m, image, mask, run, channels) for n, m in networks.items()}
    return evaluate(graph, inputs)


def child_lesionseg(path: str, out: str) -> dict:
    """:func:`predict_cascade` timed, the candidates' p1·p2 saved."""
    image, mask, candidates = _load(path)
    networks = _networks()
    with measure() as record:
        probs = predict_cascade(image, mask, networks)
    np.save(out, probs[1][candidates])
    return {
        **record,
        "candidates": int(candidates.sum()),
        "flops": useful_flops_per_patch(networks["first"]),
    }


def _plain_forward(model, x):
    """The same weights as plain layers: same-padded convolutions, every output computed."""
    pool = F.max_pool3d
    for stage in model.features:
        conv = stage.conv
        x = pool(F.relu(F.conv3d(x, conv.weight, conv.bias, padding=conv.kernel_size[0] // 2)), 2)
    return torch.softmax(model.classifier(x), 1)


def child_plain(path: str, out: str) -> dict:
    """The peer: each patch cut and copied on its own, 256 a batch, plain layers."""
    from lesionseg.sampling.crop import crop

    image, _, candidates = _load(path)
    networks = _networks()
    points = np.argwhere(candidates)
    size = (15, 15, 15)
    with measure() as record, torch.inference_mode():
        product = np.ones(len(points), np.float32)
        for model in networks.values():
            for start in range(0, len(points), PLAIN_BATCH):
                group = points[start : start + PLAIN_BATCH]
                batch = np.stack([crop(image, tuple(p - 7), size, 0.0, np.float32) for p in group])
                probs = _plain_forward(model, torch.from_numpy(batch))[:, 1].numpy()
                product[start : start + len(group)] *= probs
    np.save(out, product)
    return record


def run(quick: bool = False) -> list[dict]:
    """Time both paths on the same phantom and networks, plus the matmul reference."""
    spacing = SPACING[quick]
    with tempfile.TemporaryDirectory() as tmp:
        case = os.path.join(tmp, "case.npz")
        facts = run_child("bench_cascade", "prepare", [case, spacing])
        mm = run_child("_common", "child_matmul", [])
        ours = run_child("bench_cascade", "child_lesionseg", [case, f"{tmp}/ours.npy"])
        peer = run_child("bench_cascade", "child_plain", [case, f"{tmp}/plain.npy"])
        mm2 = run_child("_common", "child_matmul", [])
        diff = float(np.abs(np.load(f"{tmp}/ours.npy") - np.load(f"{tmp}/plain.npy")).max())
    matmul = max(mm["flops"], mm2["flops"])
    patches = 2 * ours["candidates"]
    useful = patches * ours["flops"]
    common = {
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "volume": "x".join(map(str, facts["shape"])),
        "spacing_mm": spacing,
        "brain_voxels": facts["brain"],
    }
    rows = [
        ("matmul 2048 float32", "FLOP/s", matmul / 1e9, "GFLOP/s"),
        ("FLAIR > 1.5 candidates", "count", ours["candidates"], "voxels"),
        ("useful FLOPs per patch", "FLOP", ours["flops"] / 1e6, "MFLOP"),
    ]
    for name, rec in (("lesionseg (both networks)", ours), ("plain path (both networks)", peer)):
        rows += [
            (name, "wall time", rec["wall"], "s"),
            (name, "CPU time", rec["cpu"], "s"),
            (name, "patches per second", patches / rec["wall"], "patches/s"),
            (name, "peak memory", rec["peak_rss"] / 2**30, "GiB"),
            (name, "useful FLOP/s", useful / rec["wall"] / 1e9, "GFLOP/s"),
            (name, "useful FLOP/s / matmul", useful / rec["wall"] / matmul, ""),
        ]
    rows += [
        ("plain / lesionseg", "wall time ratio", peer["wall"] / ours["wall"], "x"),
        ("plain vs lesionseg", "max |p1·p2 difference|", diff, ""),
    ]
    return records("cascade", rows, common)


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(row)
