"""The MSSEG cascade recipe end to end on a tiny 4-channel data set (FLAIR, PD, T2, T1)."""

from __future__ import annotations

import json

import cc3d
import nibabel as nib
import numpy as np
import pytest

from lesionseg.cli.main import main
from lesionseg.data.dataset import load_dataset
from lesionseg.inference.predictor import predict_volume
from lesionseg.models.io import load_model
from lesionseg.preprocess import PreprocessConfig, preprocess_subject
from tests.training.conftest import (
    kill_resume_and_compare,
    train_single_threaded,
    write_toy_dataset,
)

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
    return train_single_threaded("msseg-tiny", ms_toy, tmp_path_factory.mktemp("cascade"), SMALL)


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
    # stages: first, first-maps, second (killed after one epoch of the third)
    files = ("model.safetensors", "networks/first/model.safetensors")
    kill_resume_and_compare("msseg-tiny", ms_toy, SMALL, cascade, tmp_path, 2, files)
