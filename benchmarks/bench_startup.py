"""Start-up time of the ``lesionseg`` command (wall time of a fresh process, median of 5).

* ``lesionseg --help``: the top-level help; only the sub-commands' names and one-line
  helps are needed, so nothing heavy (torch, scipy's statistics, the phantoms) loads;
* ``lesionseg evaluate --help``: one sub-command's options (its presets load);
* ``lesionseg info FILE``: a small NIfTI file described;
* the peer, in the same run: the eager parser (every sub-command's options built, as
  before the command line loaded lazily), which is what ``--help`` cost then.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from benchmarks._common import ROOT, records

RUNS = 5


def _median_seconds(argv: list[str], runs: int = RUNS) -> float:
    """Median wall time of ``argv`` in fresh processes (after one untimed run)."""
    times = []
    for i in range(runs + 1):
        start = time.perf_counter()
        subprocess.run(argv, cwd=ROOT, check=True, capture_output=True)
        if i:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(quick: bool = False) -> list[dict]:
    """Start-up of ``--help``, one command's help, ``info``, and the eager parser."""
    import nibabel as nib

    runs = 2 if quick else RUNS
    python = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "label.nii.gz")
        label = np.zeros((32, 32, 32), np.uint8)
        label[10:14, 10:14, 10:14] = 1
        nib.save(nib.Nifti1Image(label, np.eye(4)), path)
        help_lazy = _median_seconds([python, "-m", "lesionseg", "--help"], runs)
        help_one = _median_seconds([python, "-m", "lesionseg", "evaluate", "--help"], runs)
        info = _median_seconds([python, "-m", "lesionseg", "info", path], runs)
        eager_code = "from lesionseg.cli.main import build_parser; build_parser().format_help()"
        eager = _median_seconds([python, "-c", eager_code], runs)
    common = {"runs": runs}
    rows = [
        ("lesionseg --help", "wall time", help_lazy, "s"),
        ("lesionseg evaluate --help", "wall time", help_one, "s"),
        ("lesionseg info FILE (32^3 label map)", "wall time", info, "s"),
        ("eager parser (every command's options)", "wall time", eager, "s"),
        ("eager / lesionseg --help", "wall time ratio", eager / help_lazy, "x"),
    ]
    return records("startup", rows, common)


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(row)
