"""The 3D fully connected CRF: lesionseg against SimpleCRF and pydensecrf2.

Input: one ``ms`` phantom subject at 1 mm (4 channels: T1, T2, PD, FLAIR), padded to the
issue's 182×218×182, z-scored in the brain; two classes whose probabilities imitate a
segmentation network (the lesion mask blurred, with smooth noise and false positives).
Every method runs the official DeepMedic defaults (5 iterations, smoothness σ 3 / weight 3,
appearance σ 5 / intensity σ 3 / weight 5, intensities of [-3.1, 3.1] mapped to [0, 255]).

Each method runs in a fresh subprocess that loads its inputs, then runs the CRF; its wall
time, CPU time and peak memory (``resource.getrusage`` ``ru_maxrss``, inputs included; the
resident size after loading the inputs is reported as ``inputs_mib``) are recorded. The
peers are not dependencies of lesionseg: they run with the interpreter of a separate
environment, ``$LESIONSEG_CRF_PEERS_PYTHON`` (default ``/work/peers/bin/python``); a peer
that cannot be run gives a row with a note instead of figures. To build that environment::

    python -m venv /work/peers && /work/peers/bin/pip install numpy cython setuptools wheel
    /work/peers/bin/pip download --no-deps --no-binary :all: --no-build-isolation simplecrf==0.2.1.1
    # unpack; in densecrf_python/densecrf.cpp, densecrf_python/densecrf3d.cpp and
    # maxflow_python/maxflow.cpp replace NPY_IN_ARRAY by NPY_ARRAY_IN_ARRAY, then
    /work/peers/bin/pip install --no-build-isolation ./SimpleCRF-0.2.1.1
    /work/peers/bin/pip install pydensecrf2

SimpleCRF's ``densecrf3d`` gets the mapped intensities as ``(X, Y, Z, C)`` uint8 and the
probabilities as ``(X, Y, Z, K)``; pydensecrf2's generic ``DenseCRF`` gets ``-log p`` and
explicit feature matrices (built inside the timed run, as a user must). Label agreement
is measured on brain voxels, on the full volume and on a cubic crop: SimpleCRF indexes
voxels as if the volume were cubic, so only the cubic crop is a fair comparison with it.

Usage: ``python -m benchmarks crf`` (``--quick``: a small 2 mm case, for a smoke run).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PEERS_ENV = "LESIONSEG_CRF_PEERS_PYTHON"
DEFAULT_PEERS_PYTHON = "/work/peers/bin/python"
FULL_SHAPE = (182, 218, 182)
ITERATIONS = 5
SMOOTH_SIGMA, SMOOTH_WEIGHT = 3.0, 3.0
APPEAR_SIGMA, APPEAR_WEIGHT, INTENSITY_SIGMA = 5.0, 5.0, 3.0
MIN_PROBABILITY = 1e-6


# --------------------------------------------------------------------------- input case


def _fit(volume: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Centre-pad with zeros or centre-crop ``volume`` to ``shape``."""
    out = np.zeros(shape, volume.dtype)
    src, dst = [], []
    for have, want in zip(volume.shape, shape):
        if have >= want:
            start = (have - want) // 2
            src.append(slice(start, start + want))
            dst.append(slice(0, want))
        else:
            start = (want - have) // 2
            src.append(slice(0, have))
            dst.append(slice(start, start + have))
    out[tuple(dst)] = volume[tuple(src)]
    return out


def make_case(quick: bool, seed: int = 0) -> dict[str, np.ndarray]:
    """Image ``(4, X, Y, Z)`` z-scored in the brain, probabilities ``(2, X, Y, Z)``, brain mask."""
    from scipy import ndimage as ndi

    from lesionseg.data.phantoms import generate_subject, get_task
    from lesionseg.preprocess.normalize import zscore

    phantom = generate_subject(get_task("ms"), 0, seed=seed, spacing=2.0 if quick else 1.0)
    shape = (48, 56, 48) if quick else FULL_SHAPE
    brain = _fit(phantom.mask > 0, shape)
    image = np.stack([_fit(v.astype(np.float32), shape) for v in phantom.images.values()])
    image, _ = zscore(image, brain)
    lesion = _fit(phantom.label > 0, shape).astype(np.float32)
    rng = np.random.default_rng(seed)
    noise = ndi.gaussian_filter(rng.normal(size=shape).astype(np.float32), 2.0)
    noise /= noise.std()
    # a network's output: soft boundaries, uncertain patches, a few confident false positives
    logit = 9.0 * (ndi.gaussian_filter(lesion, 1.0) - 0.5) + 2.0 * noise - 1.0
    spots = ndi.gaussian_filter((rng.random(shape) > 0.99995).astype(np.float32), 1.5)
    logit += 40.0 * spots
    fg = (1.0 / (1.0 + np.exp(-logit))) * brain
    probs = np.stack([1.0 - fg, fg]).astype(np.float32)
    return {"image": image.astype(np.float32), "prob": probs, "brain": brain}


def write_inputs(folder: Path, case: dict[str, np.ndarray]) -> None:
    """Inputs of every method, each in the layout it takes."""
    from lesionseg.postprocess.crf import map_intensities

    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "image.npy", case["image"])
    np.save(folder / "prob.npy", case["prob"])
    shape = case["prob"].shape[1:]
    mapped = map_intensities(case["image"], -3.1, 3.1).reshape(-1, *shape)
    np.save(folder / "intensities_xyzc.npy", np.ascontiguousarray(np.moveaxis(mapped, 0, -1)))
    np.save(folder / "intensities_cn.npy", mapped.reshape(mapped.shape[0], -1))
    clipped = np.clip(case["prob"], MIN_PROBABILITY, 1.0)
    np.save(folder / "prob_xyzk.npy", np.ascontiguousarray(np.moveaxis(clipped, 0, -1)))


# --------------------------------------------------------------------------- workers


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _run_lesionseg(folder: Path) -> tuple[np.ndarray, dict]:
    from lesionseg.postprocess.crf import CRFParams, dense_crf

    image = np.load(folder / "image.npy")
    prob = np.load(folder / "prob.npy")
    inputs = _rss_mib()
    start, cpu = time.perf_counter(), time.process_time()
    refined = dense_crf(prob, image, (1.0, 1.0, 1.0), CRFParams())
    labels = refined.argmax(0).astype(np.uint8)
    record = {
        "seconds": time.perf_counter() - start,
        "cpu_seconds": time.process_time() - cpu,
        "inputs_mib": inputs,
    }
    # after the timing: how many voxels the appearance lattice took (the rest is background)
    from lesionseg.postprocess.crf import map_intensities
    from lesionseg.postprocess.crf.appearance import background_vector

    _, background = background_vector(map_intensities(image, -3.1, 3.1))
    record["lattice_voxels"] = int(background.size - np.count_nonzero(background))
    return labels, record


def _run_simplecrf(folder: Path) -> tuple[np.ndarray, dict]:
    import denseCRF3D

    intensities = np.load(folder / "intensities_xyzc.npy")
    prob = np.load(folder / "prob_xyzk.npy")
    inputs = _rss_mib()
    param = {
        "MaxIterations": float(ITERATIONS),
        "PosRStd": SMOOTH_SIGMA,
        "PosCStd": SMOOTH_SIGMA,
        "PosZStd": SMOOTH_SIGMA,
        "PosW": SMOOTH_WEIGHT,
        "BilateralRStd": APPEAR_SIGMA,
        "BilateralCStd": APPEAR_SIGMA,
        "BilateralZStd": APPEAR_SIGMA,
        "ModalityNum": float(intensities.shape[-1]),
        "BilateralW": APPEAR_WEIGHT,
        "BilateralModsStds": (INTENSITY_SIGMA,) * intensities.shape[-1],
    }
    start, cpu = time.perf_counter(), time.process_time()
    labels = denseCRF3D.densecrf3d(intensities, prob, param)
    return labels.astype(np.uint8), {
        "seconds": time.perf_counter() - start,
        "cpu_seconds": time.process_time() - cpu,
        "inputs_mib": inputs,
    }


def _run_pydensecrf2(folder: Path) -> tuple[np.ndarray, dict]:
    import pydensecrf.densecrf as dcrf

    intensities = np.load(folder / "intensities_cn.npy")
    prob = np.load(folder / "prob.npy")
    inputs = _rss_mib()
    start, cpu = time.perf_counter(), time.process_time()
    n_classes, shape = prob.shape[0], prob.shape[1:]
    n = int(np.prod(shape))
    unary = -np.log(np.clip(prob.reshape(n_classes, n), MIN_PROBABILITY, 1.0))
    crf = dcrf.DenseCRF(n, n_classes)
    crf.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
    del unary
    grid = np.indices(shape, dtype=np.float32).reshape(3, n)
    crf.addPairwiseEnergy(np.ascontiguousarray(grid / SMOOTH_SIGMA), compat=SMOOTH_WEIGHT)
    features = np.concatenate([grid / APPEAR_SIGMA, intensities / np.float32(INTENSITY_SIGMA)])
    del grid
    crf.addPairwiseEnergy(np.ascontiguousarray(features, dtype=np.float32), compat=APPEAR_WEIGHT)
    del features
    q = np.array(crf.inference(ITERATIONS))
    labels = q.argmax(0).reshape(shape).astype(np.uint8)
    return labels, {
        "seconds": time.perf_counter() - start,
        "cpu_seconds": time.process_time() - cpu,
        "inputs_mib": inputs,
    }


WORKERS = {
    "lesionseg": _run_lesionseg,
    "simplecrf": _run_simplecrf,
    "pydensecrf2": _run_pydensecrf2,
}


def worker_main(argv: list[str]) -> int:
    """Entry point of a measuring subprocess: run one method, save labels, print JSON."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", choices=sorted(WORKERS), required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    labels, record = WORKERS[args.worker](args.data)
    record["peak_mib"] = _rss_mib()
    np.save(args.out, labels)
    print("RESULT " + json.dumps(record))
    return 0


# --------------------------------------------------------------------------- driver


_LAUNCHER = "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))"


def _peers_python() -> str | None:
    path = os.environ.get(PEERS_ENV, DEFAULT_PEERS_PYTHON)
    return path if path and Path(path).exists() else None


def _measure(python: str, method: str, folder: Path, threads: int | None) -> dict:
    """Run one method in a fresh subprocess; its record, or ``{"error": ...}``."""
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    if threads is not None:
        env["NUMBA_NUM_THREADS"] = str(threads)
    out = folder / f"labels_{method}_{threads}.npy"
    command = [python, str(Path(__file__).resolve()), "--worker", method, "--data", str(folder)]
    # Linux carries a process's peak resident size over fork and exec, so a worker started
    # from this (large) process would report our size as its own peak: a small launcher
    # process starts it instead
    command = [sys.executable, "-c", _LAUNCHER, *command, "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=folder)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"error": f"{method} failed (exit {done.returncode}): {tail[0][:200]}"}
    record = json.loads(lines[-1][len("RESULT ") :])
    record["labels"] = np.load(out)
    return record


def _agreement(a: np.ndarray, b: np.ndarray, brain: np.ndarray) -> float:
    return float((a[brain] == b[brain]).mean())


def _crop_cube(case: dict[str, np.ndarray], side: int) -> dict[str, np.ndarray]:
    """A centred cube of ``side`` voxels (SimpleCRF handles cubic volumes correctly)."""
    shape = case["brain"].shape
    starts = [(s - side) // 2 for s in shape]
    window = tuple(slice(st, st + side) for st in starts)
    return {
        "image": np.ascontiguousarray(case["image"][(slice(None), *window)]),
        "prob": np.ascontiguousarray(case["prob"][(slice(None), *window)]),
        "brain": case["brain"][window],
    }


def _warm_up() -> None:
    """Compile lesionseg's kernels once, so that the measured runs load them from the cache.

    The image has a constant background (the background split) and is bigger than
    :data:`~lesionseg.postprocess.crf.meanfield.PARALLEL_MIN_VOXELS` (the parallel
    kernels); a second run without background compiles the lattice over every voxel.
    """
    from lesionseg.postprocess.crf import CRFParams, dense_crf

    rng = np.random.default_rng(0)
    shape = (104, 104, 104)
    prob = rng.random((2, *shape)).astype(np.float32)
    prob /= prob.sum(0)
    image = np.zeros((4, *shape), np.float32)
    image[:, 30:70, 30:70, 30:70] = rng.normal(size=(4, 40, 40, 40))
    dense_crf(prob, image, (1, 1, 1), CRFParams(iterations=1))
    small = (slice(None), slice(0, 12), slice(0, 12), slice(0, 12))
    dense_crf(prob[small], rng.normal(size=(4, 12, 12, 12)).astype(np.float32), (1, 1, 1))


def run(quick: bool) -> list[dict]:
    _warm_up()
    case = make_case(quick)
    peers = _peers_python()
    rows: list[dict] = []
    threads_all = os.cpu_count() or 1
    plans = [("full", case), ("cube", _crop_cube(case, 40 if quick else 144))]
    for label, data in plans:
        shape = data["brain"].shape
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            write_inputs(folder, data)
            runs: dict[str, dict] = {
                "lesionseg (1 thread)": _measure(sys.executable, "lesionseg", folder, 1)
            }
            if label == "full" and threads_all > 1:
                runs[f"lesionseg ({threads_all} threads)"] = _measure(
                    sys.executable, "lesionseg", folder, threads_all
                )
            for peer in ("simplecrf", "pydensecrf2"):
                if peers is None:
                    runs[peer] = {"error": f"skipped: no peer interpreter (set {PEERS_ENV})"}
                else:
                    runs[peer] = _measure(peers, peer, folder, None)
        ours = runs["lesionseg (1 thread)"]
        common = {"volume": "x".join(map(str, shape)), "channels": 4, "classes": 2}
        for name, record in runs.items():
            base = {"benchmark": "crf", **common, "method": name}
            if "error" in record:
                rows.append(
                    {
                        **base,
                        "metric": f"{label}: run",
                        "value": "n/a",
                        "unit": "",
                        "note": record["error"],
                    }
                )
                continue
            extra = {k: record[k] for k in ("lattice_voxels",) if k in record}
            rows.append(
                {
                    **base,
                    "metric": f"{label}: wall time",
                    "value": round(record["seconds"], 2),
                    "unit": "s",
                    "cpu_s": round(record["cpu_seconds"], 2),
                    **extra,
                }
            )
            rows.append(
                {
                    **base,
                    "metric": f"{label}: peak memory",
                    "value": round(record["peak_mib"] / 1024, 3),
                    "unit": "GiB",
                    "inputs_mib": round(record["inputs_mib"]),
                }
            )
            if name.startswith("lesionseg") or "error" in ours:
                continue
            rows.append(
                {
                    **base,
                    "metric": f"{label}: labels agreeing with lesionseg (brain voxels)",
                    "value": round(_agreement(ours["labels"], record["labels"], data["brain"]), 5),
                    "unit": "fraction",
                    "speedup": round(record["seconds"] / ours["seconds"], 2),
                    "cpu_speedup": round(record["cpu_seconds"] / ours["cpu_seconds"], 2),
                    "memory_ratio": round(ours["peak_mib"] / record["peak_mib"], 3),
                }
            )
    return rows


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1:]))
