"""``predict --save-uncertainty`` / ``--mc-dropout``: maps against hand computations."""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn

from lesionseg.cli.main import main
from lesionseg.models import MODELS, ModelGeometry
from lesionseg.models.io import save_model
from tests.conftest import write_nifti
from tests.inference.conftest import Pointwise

SHAPE = (8, 8, 8)
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])


class DropoutPointwise(nn.Module):
    """Lesion logit = FLAIR value, then dropout (rate ``p``) on the two logits."""

    def __init__(self, in_channels, num_classes, p=0.5):
        super().__init__()
        self.conv = nn.Conv3d(in_channels, num_classes, 1)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.bias.zero_()
            self.conv.weight[1, 0] = 1.0
        self.drop = nn.Dropout(p)
        self.geometry = ModelGeometry(3, in_channels, num_classes, size_multiple=(4,) * 3)

    def forward(self, x):
        return self.drop(self.conv(x))


@pytest.fixture(autouse=True)
def dropout_model_registered():
    with MODELS.registered("test-dropout-pointwise", DropoutPointwise):
        yield


def save(folder, model, name="test-pointwise"):
    config = {
        "recipe": {"model": {"name": name}, "predict": {"postprocess": []}},
        "channel_names": ["FLAIR"],
        "labels": {"0": "background", "1": "lesion"},
        "preprocess": {"normalize": "none"},
    }
    save_model(model, config, folder)
    return str(folder)


def scaled(folder, gain):
    """A pointwise model whose lesion probability is sigmoid(gain · FLAIR)."""
    model = Pointwise(1, 2)
    with torch.no_grad():
        model.conv.weight.zero_()
        model.conv.bias.zero_()
        model.conv.weight[1, 0] = gain
    return save(folder, model)


@pytest.fixture
def flair(tmp_path):
    values = np.linspace(-4, 4, np.prod(SHAPE), dtype=np.float32).reshape(SHAPE)
    return write_nifti(tmp_path / "in" / "case_flair.nii.gz", values, AFFINE), values


def run(tmp_path, models, flair_path, *options, out="out"):
    argv = ["predict", "-i", str(flair_path), "-o", str(tmp_path / out), "--name", "case"]
    for m in models:
        argv += ["-m", m]
    code = main([*argv, "--save-uncertainty", *options])
    return code, tmp_path / out


def entropy2(p):
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return -(p * np.log(p) + (1 - p) * np.log(1 - p)) / math.log(2)


def test_ensemble_maps_equal_a_hand_computation(tmp_path, flair):
    path, x = flair
    a, b = scaled(tmp_path / "a", 1.0), scaled(tmp_path / "b", 3.0)
    code, out = run(tmp_path, [a, b], path)
    assert code == 0
    maps = np.asarray(nib.load(str(out / "case_uncertainty.nii.gz")).dataobj)
    members = np.asarray(nib.load(str(out / "case_members.nii.gz")).dataobj)
    assert maps.shape == (*SHAPE, 2) and members.shape == (*SHAPE, 2)
    pa, pb = 1 / (1 + np.exp(-x)), 1 / (1 + np.exp(-3 * x))
    entropy = entropy2((pa + pb) / 2)
    mutual = entropy - (entropy2(pa) + entropy2(pb)) / 2
    np.testing.assert_allclose(maps[..., 0], entropy, atol=1e-5)
    np.testing.assert_allclose(maps[..., 1], mutual, atol=1e-5)
    np.testing.assert_array_equal(members[..., 0], (pa > 0.5).astype(np.uint8))
    np.testing.assert_array_equal(members[..., 1], (pb > 0.5).astype(np.uint8))
    # entropy is highest where the mean is 0.5 (x = 0) and near 0 where both are sure
    assert maps[..., 0].max() == pytest.approx(entropy.max(), abs=1e-5)
    assert maps[..., 0].flat[0] < 0.2 and maps[..., 0].flat[-1] < 0.2


def test_identical_members_have_no_mutual_information(tmp_path, flair):
    path, _ = flair
    a, b = scaled(tmp_path / "a", 2.0), scaled(tmp_path / "b", 2.0)
    code, out = run(tmp_path, [a, b], path)
    assert code == 0
    maps = np.asarray(nib.load(str(out / "case_uncertainty.nii.gz")).dataobj)
    assert np.abs(maps[..., 1]).max() < 1e-6
    assert maps[..., 0].max() > 0.9  # yet uncertain where the probability is near 0.5


def test_one_prediction_gives_no_uncertainty(tmp_path, flair, capsys):
    path, _ = flair
    code, out = run(tmp_path, [scaled(tmp_path / "a", 1.0)], path)
    assert code == 2
    assert "--save-uncertainty needs several predictions" in capsys.readouterr().err
    assert not (out / "case_seg.nii.gz").exists()


def test_mc_dropout_needs_dropout(tmp_path, flair, capsys):
    path, _ = flair
    code, _ = run(tmp_path, [scaled(tmp_path / "a", 1.0)], path, "--mc-dropout", "4")
    assert code == 2
    assert "no dropout" in capsys.readouterr().err


def test_mc_dropout_passes_are_seeded_and_disagree(tmp_path, flair):
    path, _ = flair
    model = save(tmp_path / "d", DropoutPointwise(1, 2), "test-dropout-pointwise")
    code, out = run(tmp_path, [model], path, "--mc-dropout", "6")
    assert code == 0
    first = np.asarray(nib.load(str(out / "case_uncertainty.nii.gz")).dataobj)
    assert first[..., 1].max() > 0.05  # dropout really ran: the passes differ
    code, again = run(tmp_path, [model], path, "--mc-dropout", "6", out="again")
    assert code == 0
    np.testing.assert_array_equal(
        first, np.asarray(nib.load(str(again / "case_uncertainty.nii.gz")).dataobj)
    )
    members = np.asarray(nib.load(str(out / "case_members.nii.gz")).dataobj)
    assert members.shape[-1] == 6


def test_tta_samples_without_the_ensemble(tmp_path, flair):
    """A pointwise model is flip-equivariant: both flips agree, no mutual information."""
    path, x = flair
    code, out = run(tmp_path, [scaled(tmp_path / "a", 1.0)], path, "--tta")
    assert code == 0
    maps = np.asarray(nib.load(str(out / "case_uncertainty.nii.gz")).dataobj)
    np.testing.assert_allclose(maps[..., 0], entropy2(1 / (1 + np.exp(-x))), atol=1e-5)
    assert np.abs(maps[..., 1]).max() < 1e-6


def test_report_reads_the_uncertainty(tmp_path, flair):
    path, _ = flair
    a, b = scaled(tmp_path / "a", 1.0), scaled(tmp_path / "b", 3.0)
    options = ["--save-probabilities", "--report", "--no-viewer", "--registration", "none"]
    code, out = run(tmp_path, [a, b], path, *options)
    assert code == 0
    import json

    table = json.loads((out / "report" / "case_lesions.json").read_text())
    (lesion,) = table["lesions"]  # x > 0: one block of lesion voxels
    assert 0 < lesion["mean_uncertainty"] < 1
    assert 0 <= lesion["disagreement"] < 1
    assert 0.5 < lesion["mean_probability"] <= lesion["max_probability"] <= 1
    assert table["locations"] is None  # no template registration for a non-brain
    assert (out / "report" / "index.html").is_file()


def test_a_registration_that_fails_is_one_clear_error(tmp_path, flair, capsys):
    path, _ = flair
    a, b = scaled(tmp_path / "a", 1.0), scaled(tmp_path / "b", 3.0)
    code, _ = run(tmp_path, [a, b], path, "--report", "--no-viewer")
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "registration of FLAIR to the template failed" in err[-1]
    assert "Traceback" not in "\n".join(err)
