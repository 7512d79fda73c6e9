"""EDD Net + MUSCLE Net: prediction of one ``stroke-acute`` phantom on the CPU.

The scan: phantom 0 of ``stroke-acute`` (DWI, ADC; 5 mm slices) at 1 mm in-plane (2 mm
with ``--quick``). Each step is the one ``lesionseg predict`` runs, timed on its own in a
fresh process (peak memory is the process's):

* preprocessing: :func:`~lesionseg.preprocess.preprocess_subject` with edd-muscle-paper's
  settings (DWI only, in-plane resampling to 1.6 × 1.6 mm, z-score), from the NIfTI files;
* EDD Net: the paper's widths (3,223,212 parameters, random weights, eval mode) on every
  whole slice through :func:`~lesionseg.inference.predictor.predict_volume`;
* MUSCLE Net: the paper's network (598,658 parameters) re-scoring small components through
  the ``rescore-components`` combiner. A network with random weights flags arbitrary
  pixels, so the candidates are those a trained EDD Net flags on this phantom: the small
  components (< 60 pixels a slice) of z-scored DWI > 3 inside the brain, its infarcts and
  its lesion-like artefacts. Their number is reported. A process's first call also pays
  for PyTorch's start-up of these layers (reported apart; once per ``lesionseg predict``).

The peer, in the same run: MONAI's ``sliding_window_inference`` running the same EDD Net on
the same slices with a window of the whole (padded) slice, which is what whole-slice
inference is. Both are warmed up by one full pass; medians of three passes are reported.
The paper reports 0.20 s (preprocessing), 0.63 s (EDD) and 0.07 s (MUSCLE) a scan on an
NVIDIA Tesla K80 (its Table 6); those are quoted, not measured.
"""

from __future__ import annotations

import os
import sys
import tempfile

import numpy as np
import torch

from benchmarks._common import measure, records, run_child

SPACING = {False: 1.0, True: 2.0}
#: Timed runs after a warm-up; the median is reported.
REPEATS = 3


def _paper_recipe() -> dict:
    from lesionseg.training.recipe import load_recipe

    return load_recipe("edd-muscle-paper").data


def _networks():
    from lesionseg.models.builder import ModelSpec, build_model

    recipe = _paper_recipe()
    muscle = next(s for s in recipe["stages"] if s.get("network") == "muscle")["model"]
    edd = build_model(ModelSpec.parse(recipe["model"]), 1, 2, seed=0).eval()
    return edd, build_model(ModelSpec.parse(muscle), 1, 2, seed=0).eval()


def prepare(folder: str, spacing: float) -> dict:
    """Write phantom 0 of ``stroke-acute`` as a data set in ``folder``."""
    from lesionseg.cli.main import main

    argv = ["synth", "stroke-acute", "-o", folder, "--subjects", "1", "--spacing", str(spacing)]
    if main([*argv, "--test-fraction", "0"]) != 0:
        raise RuntimeError("synth failed")
    return {}


def _preprocess(folder: str):
    from lesionseg.data.dataset import load_dataset
    from lesionseg.preprocess import PreprocessConfig, preprocess_subject

    recipe = _paper_recipe()
    data = load_dataset(folder).select_channels(recipe["channels"])
    config = PreprocessConfig.from_dict(recipe["preprocess"])
    return preprocess_subject(data.subjects[0], data.channel_names, config)


def child_preprocess(folder: str) -> dict:
    """Preprocessing alone (reading, resampling, z-scoring), after one warm-up."""
    _preprocess(folder)
    with measure() as record:
        pre = _preprocess(folder)
    return {**record, "shape": list(pre.image.shape[1:])}


def _padded_slices(image: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """The DWI's axial slices ``(Z, 1, X', Y')``, zero-padded to multiples of 4."""
    x, y, z = image.shape[1:]
    padded = (-(-x // 4) * 4, -(-y // 4) * 4)
    slices = np.zeros((z, 1, *padded), np.float32)
    slices[:, 0, :x, :y] = np.moveaxis(image[0], 2, 0)
    return slices, padded


def _median_wall(predict) -> tuple[dict, np.ndarray]:
    """``predict()`` timed :data:`REPEATS` times after a warm-up: the last record (median
    wall time) and its result."""
    times = []
    for _ in range(REPEATS + 1):  # the first is the warm-up
        with measure() as record:
            result = predict()
        times.append(record["wall"])
    return {**record, "wall": float(np.median(times[1:]))}, result


def _foreground(probs: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per-slice ``(Z, K, X', Y')`` probabilities → the ``(X, Y, Z)`` foreground map."""
    x, y = mask.shape[:2]
    return np.moveaxis(probs[:, 1, :x, :y], 0, 2) * (mask > 0)


class _Fixed:
    """A graph input whose dense output is given: the stand-in for a trained EDD Net."""

    def __init__(self, probability: np.ndarray):
        self.probability = probability

    def dense(self, where=None):
        return np.stack([1.0 - self.probability, self.probability]).astype(np.float32)


def child_lesionseg(folder: str, out: str) -> dict:
    """EDD on whole slices, then MUSCLE through ``rescore-components``, timed apart."""
    from lesionseg.inference.combine import rescore_components
    from lesionseg.inference.graph import NetworkInput
    from lesionseg.inference.predictor import predict_volume
    from lesionseg.postprocess.components import small_components

    pre = _preprocess(folder)
    edd, muscle = _networks()
    image, mask = pre.image, pre.mask
    edd_time, probs = _median_wall(lambda: predict_volume(edd, image, mask=mask, axis=2))
    np.save(out, probs[1])
    flagged = np.where((image[0] > 3.0) & (mask > 0), 0.9, 0.1).astype(np.float32)
    _, small, _ = small_components(flagged > 0.5, 60, 2, 8)

    def run(model, img, where):
        return predict_volume(model, img, mask=where, axis=2)

    graph_inputs = [_Fixed(flagged), NetworkInput(muscle, image, mask, run, ["DWI"])]
    options = {"max_size": 60, "threshold": 0.5, "slice_axis": 2, "connectivity": 8}
    with measure() as first_time:  # a process's first call pays for torch's start-up
        rescore_components(graph_inputs, **options)
    with measure() as muscle_time:
        rescore_components(graph_inputs, **options)
    return {
        "edd_wall": edd_time["wall"],
        "edd_cpu": edd_time["cpu"],
        "muscle_wall": muscle_time["wall"],
        "muscle_first_wall": first_time["wall"],
        "candidates": len(small),
        "peak_rss": muscle_time["peak_rss"],
        "shape": list(image.shape[1:]),
    }


def child_monai(folder: str, out: str) -> dict:
    """MONAI's sliding window over the padded slices, one window per slice."""
    from monai.inferers import sliding_window_inference

    pre = _preprocess(folder)
    edd, _ = _networks()
    slices, padded = _padded_slices(pre.image)

    def predict():
        with torch.inference_mode():
            net = lambda batch: torch.softmax(edd(batch), 1)  # noqa: E731
            probs = sliding_window_inference(torch.from_numpy(slices), padded, 16, net, overlap=0)
        return probs.numpy()

    record, probs = _median_wall(predict)
    np.save(out, _foreground(probs, pre.mask))
    return record


def child_onnxruntime(folder: str, out: str) -> dict:
    """The same EDD Net exported by ``lesionseg export``, run in onnxruntime."""
    import onnxruntime as ort

    from lesionseg.inference.onnx_export import export_onnx
    from lesionseg.models.io import save_model

    pre = _preprocess(folder)
    edd, _ = _networks()
    slices, padded = _padded_slices(pre.image)
    work = os.path.dirname(out)
    config = {
        "recipe": {"name": "edd-muscle-paper", "model": _paper_recipe()["model"], "predict": {}},
        "channel_names": ["DWI"],
        "labels": {"0": "background", "1": "infarct"},
        "preprocess": _paper_recipe()["preprocess"],
        "network": "edd",
    }
    save_model(edd, config, os.path.join(work, "edd-model"))
    path = os.path.join(work, "edd.onnx")
    export_onnx(os.path.join(work, "edd-model"), path, size=padded)
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def predict():
        logits = np.concatenate(
            [session.run(None, {"image": slices[i : i + 16]})[0] for i in range(0, len(slices), 16)]
        )
        return torch.softmax(torch.from_numpy(logits), 1).numpy()

    record, probs = _median_wall(predict)
    np.save(out, _foreground(probs, pre.mask))
    return record


def run(quick: bool = False) -> list[dict]:
    """Preprocessing, EDD (lesionseg and MONAI) and MUSCLE on one phantom."""
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "data")
        run_child("bench_edd", "prepare", [data, SPACING[quick]])
        pre = run_child("bench_edd", "child_preprocess", [data])
        ours = run_child("bench_edd", "child_lesionseg", [data, f"{tmp}/ours.npy"])
        peer = run_child("bench_edd", "child_monai", [data, f"{tmp}/monai.npy"])
        difference = float(np.abs(np.load(f"{tmp}/ours.npy") - np.load(f"{tmp}/monai.npy")).max())
        onnx = run_child("bench_edd", "child_onnxruntime", [data, f"{tmp}/onnx.npy"])
        onnx_difference = float(
            np.abs(np.load(f"{tmp}/ours.npy") - np.load(f"{tmp}/onnx.npy")).max()
        )
    total = pre["wall"] + ours["edd_wall"] + ours["muscle_wall"]
    common = {
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "volume": "x".join(map(str, ours["shape"])),
        "in_plane_mm": 1.6,
        "candidates": ours["candidates"],
    }
    rows = [
        ("preprocessing (DWI, 1.6 mm in-plane, z-score)", "wall time", pre["wall"], "s"),
        ("EDD Net, whole slices (lesionseg)", "wall time", ours["edd_wall"], "s"),
        ("EDD Net, whole slices (lesionseg)", "CPU time", ours["edd_cpu"], "s"),
        ("EDD Net, whole slices (monai sliding window)", "wall time", peer["wall"], "s"),
        ("monai / lesionseg, EDD Net", "wall time ratio", peer["wall"] / ours["edd_wall"], "x"),
        ("monai vs lesionseg, EDD Net", "max probability difference", difference, ""),
        ("EDD Net, whole slices (onnxruntime, lesionseg export)", "wall time", onnx["wall"], "s"),
        (
            "onnxruntime / lesionseg, EDD Net",
            "wall time ratio",
            onnx["wall"] / ours["edd_wall"],
            "x",
        ),
        ("onnxruntime vs lesionseg, EDD Net", "max probability difference", onnx_difference, ""),
        ("MUSCLE Net on the small components", "wall time", ours["muscle_wall"], "s"),
        ("MUSCLE Net, a process's first call", "wall time", ours["muscle_first_wall"], "s"),
        ("whole scan (preprocessing + EDD + MUSCLE)", "wall time", total, "s"),
        ("whole scan", "peak memory", ours["peak_rss"] / 2**30, "GiB"),
        ("paper, Tesla K80 GPU (Table 6)", "wall time", 0.90, "s (quoted)"),
    ]
    return records("edd", rows, common)


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(row)
