"""``lesionseg check-precision`` and ``--precision auto``'s use of its record."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lesionseg.cli.main import main
from lesionseg.data.ownership import mark
from lesionseg.inference import precision
from lesionseg.inference.precision_check import bf16_verified, read_check
from lesionseg.models.io import save_model
from tests.conftest import write_nifti
from tests.inference.conftest import Pointwise

SHAPE = (8, 8, 8)
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])


@pytest.fixture
def dataset(tmp_path):
    """Two test cases whose FLAIR runs from -0.5 to 0.5; the lesion is FLAIR > 0."""
    root = tmp_path / "data"
    spec = {
        "channel_names": {"0": "FLAIR"},
        "labels": {"background": 0, "lesion": 1},
        "file_ending": ".nii.gz",
        "numTraining": 0,
    }
    root.mkdir()
    (root / "dataset.json").write_text(json.dumps(spec))
    values = np.linspace(-0.5, 0.5, np.prod(SHAPE), dtype=np.float32).reshape(SHAPE)
    for i in range(2):
        write_nifti(root / "imagesTs" / f"c{i}_0000.nii.gz", values, AFFINE)
        write_nifti(root / "labelsTs" / f"c{i}.nii.gz", (values > 0).astype(np.uint8), AFFINE)
    return root


def model(folder, gain, offset=0.0):
    """Lesion logit gain·FLAIR + offset, background logit offset: a model folder."""
    net = Pointwise(1, 2)
    with torch.no_grad():
        net.conv.weight.zero_()
        net.conv.weight[1, 0] = gain
        net.conv.bias.fill_(offset)
    config = {
        "recipe": {"model": {"name": "test-pointwise"}, "predict": {"postprocess": []}},
        "channel_names": ["FLAIR"],
        "labels": {"0": "background", "1": "lesion"},
        "preprocess": {"normalize": "none"},
    }
    save_model(net, config, folder)
    mark(folder, "model")
    return str(folder)


def test_a_model_that_agrees_passes_and_auto_then_uses_bf16(tmp_path, dataset, monkeypatch, capsys):
    folder = model(tmp_path / "m", gain=40.0)  # logits far from a tie
    assert main(["check-precision", folder, "-d", str(dataset)]) == 0
    assert "passed" in capsys.readouterr().out
    record = read_check(folder)
    assert record["passed"] is True and len(record["cases"]) == 2
    assert record["agreement"] == 1.0 and record["dice_change"] == 0.0
    assert record["cases"][0]["dice_fp32"] == pytest.approx(1.0)
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)
    assert precision.use_reduced_precision("auto", "cpu", bf16_verified(folder)) is True


def test_a_model_that_bf16_changes_fails_and_auto_keeps_fp32(tmp_path, dataset, monkeypatch):
    # Both logits near 256, where bfloat16's step is 2: the +-0.5 differences vanish.
    folder = model(tmp_path / "m", gain=1.0, offset=256.0)
    assert main(["check-precision", folder, "-d", str(dataset), "--quiet"]) == 0
    record = read_check(folder)
    assert record["passed"] is False
    assert record["agreement"] < 0.9
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)
    assert precision.use_reduced_precision("auto", "cpu", bf16_verified(folder)) is False
    assert precision.use_reduced_precision("bf16", "cpu", bf16_verified(folder)) is True


def test_auto_without_a_record_says_why_it_keeps_fp32(tmp_path, dataset, monkeypatch, capsys):
    folder = model(tmp_path / "m", gain=40.0)
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)
    argv = ["predict", "-m", folder, "-i", str(dataset), "-o", str(tmp_path / "out")]
    assert main([*argv, "--precision", "auto"]) == 0
    assert "--precision auto: float32" in capsys.readouterr().err
    assert bf16_verified(folder) is False


def test_an_unreadable_record_is_not_trusted(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "precision.json").write_text("{not json")
    assert bf16_verified(folder) is False
    (folder / "precision.json").write_text(json.dumps({"precision": "bf16", "passed": "yes"}))
    assert bf16_verified(folder) is False


def test_only_a_lesionseg_model_folder_gets_a_record(tmp_path, dataset, capsys):
    folder = tmp_path / "plain"
    net = Pointwise(1, 2)
    config = {
        "recipe": {"model": {"name": "test-pointwise"}},
        "channel_names": ["FLAIR"],
        "labels": {"0": "background", "1": "lesion"},
        "preprocess": {"normalize": "none"},
    }
    save_model(net, config, folder)
    assert main(["check-precision", str(folder), "-d", str(dataset)]) == 2
    assert "not a model folder lesionseg made" in capsys.readouterr().err
    assert not (folder / "precision.json").exists()
