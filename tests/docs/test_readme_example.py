"""The README's Python example is examples/predict_and_evaluate.py, and it runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import nibabel as nib

from tests.safety.builders import model_folder, msd

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "predict_and_evaluate.py"


def test_the_readme_shows_the_example_file():
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert EXAMPLE.read_text() in blocks


def test_the_example_prints_and_returns_probabilities_on_the_input_grid(tmp_path):
    data = msd(tmp_path / "data", n_train=1, n_test=0)  # a labelled subject: Dice printed
    model = model_folder(tmp_path / "model")
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), str(model), str(data)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    shape = nib.load(str(data / "imagesTr" / "case_000_0000.nii.gz")).shape
    assert f"input {shape}, probabilities {(*shape, 2)}" in done.stdout
    assert re.search(r"^lesion voxels: \d+$", done.stdout, re.M)
    assert re.search(r"^Dice: [01]\.\d{3}$", done.stdout, re.M)
