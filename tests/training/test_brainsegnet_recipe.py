"""The Brain SegNet recipe: three curriculum stages on one network, Adam kept, resumable."""

from __future__ import annotations

import json
import os
import sys

import nibabel as nib
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from lesionseg.cli.main import main
from lesionseg.training import load_recipe, train
from tests.training.conftest import (
    assert_equal_states,
    kill_when_checkpointed,
    record_slots,
    resume_in_subprocess,
    write_toy_dataset,
)

CONTRASTS = {"T1": -20.0, "T1c": 50.0, "T2": 40.0, "FLAIR": 60.0}
SMALL = {
    "model.widths": [4, 4, 8, 8],
    "model.refine_channels": 4,
    "sampler.depth": 4,
    "sampler.size": 16,
    "train.batch_size": 2,
    "train.epochs": 2,
    "validation.cases": 1,
    "validation.every": 2,
}


@pytest.fixture(scope="module")
def tumour_toy(tmp_path_factory):
    return write_toy_dataset(tmp_path_factory.mktemp("t") / "toy", contrasts=CONTRASTS)


def _set_args():
    out = []
    for key, value in SMALL.items():
        out += ["--set", f"{key}={json.dumps(value)}"]
    return out


def test_curriculum_keeps_adam_and_the_model_comes_from_stage_three(
    tumour_toy, tmp_path, monkeypatch
):
    recipe = load_recipe("brainsegnet-brats-tiny").with_overrides(SMALL)
    stages = recipe.stages()
    assert [s["name"] for s in stages] == ["original", "augmented", "focal"]
    assert [s["sampler"]["augment_probability"] for s in stages] == [0.0, 0.5, 0.75]
    assert stages[2]["loss"] == {"name": "focal", "gamma": 2.0}
    seen = record_slots(monkeypatch)
    result = train(recipe, tumour_toy, tmp_path / "m", device="cpu", progress=False)
    assert_equal_states(seen["end:original"]["optimizer"], seen["start:augmented"]["optimizer"])
    assert_equal_states(seen["end:augmented"]["optimizer"], seen["start:focal"]["optimizer"])
    assert [r["stage"] for r in result.history] == ["original"] * 2 + ["augmented"] * 2 + [
        "focal"
    ] * 2
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["epoch"] == 6  # select: last in the last stage
    final = load_file(str(tmp_path / "m" / "model.safetensors"))
    last = load_file(str(tmp_path / "m" / "last" / "model.safetensors"))
    assert all(torch.equal(final[k], last[k]) for k in final)


def test_sigkill_in_stage_three_then_resume_is_exact(tumour_toy, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    base = [sys.executable, "-m", "lesionseg", "train", "brainsegnet-brats-tiny"]
    base += ["-d", str(tumour_toy), *_set_args(), "--set", "train.epochs=3"]
    common = ["--device", "cpu", "--quiet", "--cache", str(tmp_path / "cache")]
    import subprocess

    full = subprocess.run(
        [*base, "-o", str(tmp_path / "full"), *common], env=env, capture_output=True, text=True
    )
    assert full.returncode == 0, full.stderr[-2000:]
    out = tmp_path / "killed"
    kill_when_checkpointed([*base, "-o", str(out), *common], env, out, 2, 1)
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["stage"] == 2 and 1 <= state["epoch"] < 3
    resume_in_subprocess(out, env)
    a = load_file(str(tmp_path / "full" / "model.safetensors"))
    b = load_file(str(out / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_predict_writes_labels_on_the_input_grid(tumour_toy, tmp_path):
    model = tmp_path / "m"
    argv = ["train", "brainsegnet-brats-tiny", "-d", str(tumour_toy), "-o", str(model)]
    assert main([*argv, *_set_args(), "--set", "train.epochs=1", "--quiet"]) == 0
    preds = tmp_path / "p"
    assert (
        main(["predict", "-m", str(model), "-i", str(tumour_toy), "--all", "-o", str(preds)]) == 0
    )
    image = nib.load(str(tumour_toy / "imagesTr" / "toy_000_0000.nii.gz"))
    labels = nib.load(str(preds / "toy_000_seg.nii.gz"))
    assert labels.shape == image.shape
    np.testing.assert_allclose(labels.affine, image.affine)
    assert set(np.unique(np.asarray(labels.dataobj))) <= {0, 1}
