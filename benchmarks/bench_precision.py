"""The bfloat16 agreement guard on trained models: every method's demo model, held-out phantoms.

For each method, ``lesionseg demo --method M`` trains its small recipe on phantoms (2 mm);
``lesionseg check-precision`` then predicts the 4 held-out phantoms in float32 and with
bfloat16 autocast and compares the labels: the lowest share of brain voxels that agree and
the largest change of the Dice, against issue #17's limits (>= 99.9 %, < 0.002), and the
prediction time of both (``lesionseg predict``, the whole held-out set, one run each).

This trains five models: about 25 minutes on a 2-core CPU (``--quick``: DeepMedic only).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from benchmarks._common import records

METHODS = ("deepmedic", "dunet", "cascade", "brainsegnet", "edd-muscle")


def _timed_predict(model: Path, data: Path, out: Path, precision: str) -> float:
    from lesionseg.cli.main import main

    start = time.perf_counter()
    argv = ["predict", "-m", str(model), "-i", str(data), "-o", str(out), "--quiet"]
    assert main([*argv, "--precision", precision, "--overwrite"]) == 0
    return time.perf_counter() - start


def check_method(method: str, workdir: Path) -> list[tuple]:
    """Train the method's demo, check bfloat16 on its held-out phantoms, time both."""
    from lesionseg.data.dataset import load_dataset
    from lesionseg.inference.method import load_method
    from lesionseg.inference.precision_check import compare_precisions
    from lesionseg.training.demo import run_demo

    root = workdir / method
    demo = run_demo(root, method=method, progress=False)
    data, model = root / "data", root / "model"
    check = compare_precisions(load_method(model), load_dataset(data).split("test"))
    fp32 = _timed_predict(model, data, workdir / f"{method}-fp32", "fp32")
    bf16 = _timed_predict(model, data, workdir / f"{method}-bf16", "bf16")
    return [
        (f"{method}: demo held-out Dice (float32)", "mean", demo.mean_dice, ""),
        (f"{method}: demo time", "wall time", sum(demo.seconds.values()), "s"),
        (f"{method}: labels agree (lowest case)", "share of brain voxels", check.agreement, ""),
        (f"{method}: Dice change (largest case)", "absolute", check.dice_change, ""),
        (f"{method}: guard passed", "1 = yes", float(check.passed), ""),
        (f"{method}: predict 4 held-out, float32", "wall time", fp32, "s"),
        (f"{method}: predict 4 held-out, bfloat16", "wall time", bf16, "s"),
        (f"{method}: float32 / bfloat16", "ratio", fp32 / bf16, "x"),
    ]


def run(quick: bool = False) -> list[dict]:
    """The guard's figures for every method (DeepMedic only with ``quick``)."""
    from lesionseg.inference.precision import cpu_has_bf16

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for method in METHODS[:1] if quick else METHODS:
            rows += check_method(method, Path(tmp))
    return records("precision", rows, {"hardware_bf16": cpu_has_bf16(), "phantoms": "2 mm"})


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(row)
