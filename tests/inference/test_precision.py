"""``--precision bf16|auto`` on every registered model (issue #17)."""

from __future__ import annotations

import numpy as np
import pytest

from lesionseg.cli.main import main
from lesionseg.inference import precision
from lesionseg.inference.predictor import predict_volume
from lesionseg.models import MODELS
from lesionseg.models.builder import ModelSpec, build_model
from tests.models.test_model_contract import SMALL
from tests.safety.builders import model_folder, msd


def _dense_models() -> list[str]:
    """Models the dense predictor runs (MUSCLE's multi-scale input is built elsewhere)."""
    names = []
    for name in MODELS.names():
        model = build_model(ModelSpec(name, SMALL.get(name, {})), 1, 2, seed=0)
        if not getattr(model.geometry, "patch_scales", None):
            names.append(name)
    return names


@pytest.mark.parametrize("name", _dense_models())
def test_bfloat16_prediction_is_close_to_float32(name):
    model = build_model(ModelSpec(name, SMALL.get(name, {})), 1, 2, seed=0)
    rng = np.random.default_rng(0)
    image = rng.normal(0, 1, (1, 24, 24, 16)).astype(np.float32)
    mask = np.zeros(image.shape[1:], np.uint8)
    mask[8:14, 8:14, 6:10] = 1  # a few voxels: patch classifiers classify each one
    fp32 = predict_volume(model, image, mask=mask)
    bf16 = predict_volume(model, image, mask=mask, amp=True)
    assert bf16.dtype == np.float32 and bf16.shape == fp32.shape
    np.testing.assert_allclose(bf16.sum(0), 1.0, atol=1e-5)
    # bfloat16 keeps 8 bits of mantissa (relative step 0.0039): on average the brain
    # voxels' probabilities move by about that much (random tiny networks; Brain SegNet's
    # deep residual stack moves most, 0.008 on average and 0.067 at worst)
    inside = np.abs(bf16 - fp32)[:, mask > 0]
    assert inside.mean() < 0.01, name


def test_auto_uses_bfloat16_only_with_hardware_support(monkeypatch):
    assert precision.use_reduced_precision("fp32", "cpu") is False
    assert precision.use_reduced_precision("bf16", "cpu") is True
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    assert precision.use_reduced_precision("auto", "cpu") is False  # emulated: slower
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)
    assert precision.use_reduced_precision("auto", "cpu") is True


def test_predict_precision_option(tmp_path, monkeypatch):
    data = msd(tmp_path / "data", n_train=1, n_test=1)
    model = str(model_folder(tmp_path / "model"))
    seen = []
    real = predict_volume

    def spy(*args, **kwargs):
        seen.append(kwargs.get("amp"))
        return real(*args, **kwargs)

    monkeypatch.setattr("lesionseg.inference.method.predict_volume", spy)
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    for choice, expected in (("fp32", False), ("bf16", True), ("auto", False)):
        out = tmp_path / choice
        argv = ["predict", "-m", model, "-i", str(data), "-o", str(out), "--quiet"]
        assert main([*argv, "--precision", choice]) == 0
        assert seen.pop() is expected, choice
        assert (out / "case_001_seg.nii.gz").is_file()
    with pytest.raises(SystemExit):  # argparse: not a choice
        main(
            [
                "predict",
                "-m",
                model,
                "-i",
                str(data),
                "-o",
                str(tmp_path / "x"),
                "--precision",
                "fp8",
            ]
        )
