"""The MSSEG cascade recipe end to end on a tiny 4-channel data set (FLAIR, PD, T2, T1)."""

from __future__ import annotations

import json
import os
import sys

import cc3d
import nibabel as nib
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from lesionseg.cli.main import main
from lesionseg.data.dataset import load_dataset
from lesionseg.inference.predictor import predict_volume
from lesionseg.models.io import load_model
from lesionseg.preprocess import PreprocessConfig, preprocess_subject
from tests.training.conftest import kill_when_checkpointed, resume_in_subprocess, write_toy_dataset

CONTRASTS = {"FLAIR": 60.0, "PD": 30.0, "T2": 40.0, "T1": -20.0}
SMALL = [
    "--set", "model.widths=[4, 6]", "--set", "model.hidden=8",
    "--set", "train.batch_size=64", "--set", "validation.examples=128",
    "--set", "stages.0.epochs=2", "--set", "stages.2.epochs=3",
]  # fmt: skip


@pytest.fixture(scope="module")
def ms_toy(tmp_path_factory):
    return write_toy_dataset(tmp_path_factory.mktemp("ms") / "toy", contrasts=CONTRASTS)


@pytest.fixture(scope="module")
def cascade(ms_toy, tmp_path_factory):
    root = tmp_path_factory.mktemp("cascade")
    out = root / "model"
    argv = ["train", "msseg-tiny", "-d", str(ms_toy), "-o", str(out), *SMALL]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the killed run of the SIGKILL test: the same sums
    try:
        assert main([*argv, "--cache", str(root / "cache"), "--device", "cpu", "--quiet"]) == 0
    finally:
        torch.set_num_threads(threads)
    return out


def _preprocessed(model_dir, ms_toy):
    _, config = load_model(model_dir)
    subject = load_dataset(ms_toy).subjects[0]
    pre = preprocess_subject(
        subject, config["channel_names"], PreprocessConfig.from_dict(config["preprocess"])
    )
    flair = pre.image[config["channel_names"].index("FLAIR")]
    return subject, pre, (flair > 1.5) & (pre.mask > 0)


def _remove_small(labels, voxels):
    components = cc3d.connected_components(labels, connectivity=26)
    sizes = np.bincount(components.ravel())
    keep = sizes >= voxels
    keep[0] = False
    return keep[components]


def test_held_out_loss_chooses_each_network(cascade):
    rows = [r.split(",") for r in (cascade / "log.csv").read_text().splitlines()]
    header, rows = rows[0], rows[1:]
    col = header.index("val_loss")
    for network, folder in (("first", cascade / "networks" / "first"), ("second", cascade)):
        losses = [float(r[col]) for r in rows if r[header.index("network")] == network]
        assert losses and all(np.isfinite(losses))
        config = json.loads((folder / "config.json").read_text())
        assert config["validation_loss"] == pytest.approx(min(losses))


def test_predict_is_p1_times_p2_on_the_candidates_then_small_lesions_removed(
    cascade, ms_toy, tmp_path
):
    out = tmp_path / "pred"
    argv = ["predict", "-m", str(cascade), "-i", str(ms_toy), "--all", "-o", str(out)]
    assert main([*argv, "--save-probabilities"]) == 0
    first, _ = load_model(cascade / "networks" / "first")
    second, _ = load_model(cascade)
    subject, pre, candidates = _preprocessed(cascade, ms_toy)
    p1 = predict_volume(first, pre.image, mask=candidates)[1]
    p2 = predict_volume(second, pre.image, mask=candidates)[1]
    fg = np.where(candidates, p1 * p2, 0.0)
    expected = pre.record.invert(np.stack([1 - fg, fg]), is_label=False, fill=[1.0, 0.0])
    written = nib.load(str(out / f"{subject.id}_prob.nii.gz")).get_fdata()
    np.testing.assert_allclose(written, expected, atol=1e-5)
    kept = _remove_small((fg > 0.5).astype(np.uint8), 30 / 8)  # 30 mm³ of 2 mm voxels
    labels = nib.load(str(out / f"{subject.id}_seg.nii.gz")).get_fdata()
    np.testing.assert_array_equal(labels, pre.record.invert(kept.astype(np.uint8), is_label=True))


def test_gated_variant_is_the_later_rule(cascade, ms_toy, tmp_path):
    out = tmp_path / "gated"
    argv = ["predict", "-m", str(cascade), "-i", str(ms_toy), "--all", "-o", str(out)]
    assert main([*argv, "--variant", "gated", "--save-probabilities"]) == 0
    first, _ = load_model(cascade / "networks" / "first")
    second, _ = load_model(cascade)
    subject, pre, candidates = _preprocessed(cascade, ms_toy)
    p1 = predict_volume(first, pre.image, mask=candidates)[1]
    gate = candidates & (p1 > 0.8)
    p2 = predict_volume(second, pre.image, mask=gate)[1]
    fg = np.where(gate, p2, 0.0)
    kept = _remove_small((fg >= 0.8).astype(np.uint8), 21 / 8)
    labels = nib.load(str(out / f"{subject.id}_seg.nii.gz")).get_fdata()
    np.testing.assert_array_equal(labels, pre.record.invert(kept.astype(np.uint8), is_label=True))
    other = ["predict", "-m", str(cascade), "-i", str(ms_toy), "-o", str(tmp_path / "x")]
    assert main([*other, "--variant", "nope"]) == 2


def test_sigkill_in_stage_two_then_resume_is_exact(ms_toy, cascade, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    base = [sys.executable, "-m", "lesionseg", "train", "msseg-tiny", "-d", str(ms_toy), *SMALL]
    common = ["--device", "cpu", "--quiet", "--cache", str(tmp_path / "cache")]
    out = tmp_path / "killed"
    # stages: first, first-maps, second (one epoch of it done)
    kill_when_checkpointed([*base, "-o", str(out), *common], env, out, 2, 1)
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["stage"] == 2 and 1 <= state["epoch"] < 3
    resume_in_subprocess(out, env)
    for name in ("model.safetensors", "networks/first/model.safetensors"):
        a, b = load_file(str(cascade / name)), load_file(str(out / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
