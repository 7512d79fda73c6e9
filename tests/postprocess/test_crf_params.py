"""CRF parameters: official defaults, files, validation."""

from __future__ import annotations

import json

import pytest

from lesionseg.errors import LesionsegError
from lesionseg.postprocess.crf import CRFParams, resolve_params


def test_defaults_are_the_official_ones():
    p = CRFParams()
    assert p.iterations == 5
    assert (p.smoothness_weight, p.smoothness_sigma_mm) == (3.0, (3.0, 3.0, 3.0))
    assert (p.appearance_weight, p.appearance_sigma_mm) == (5.0, (5.0, 5.0, 5.0))
    assert p.intensity_sigmas(4) == (3.0, 3.0, 3.0, 3.0)
    assert p.intensity_range == (-3.1, 3.1)


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_save_and_load_round_trip(tmp_path, suffix):
    p = CRFParams(iterations=2, appearance_sigma_mm=(17, 12, 10), intensity_sigma=(4.5, 3.5))
    path = tmp_path / f"crf{suffix}"
    p.save(path)
    assert CRFParams.load(path) == p
    p.save(path, extra={"tuning": {"trials": 3}})  # crf-tune's layout: parameters under "crf"
    assert CRFParams.load(path) == p
    assert resolve_params(str(path)) == p and resolve_params(None) == CRFParams()


def test_scalars_and_lists_are_accepted():
    p = CRFParams.from_dict(
        {"smoothness_sigma_mm": 2, "intensity_sigma": [4, 5], "iterations": 3.0}
    )
    assert p.smoothness_sigma_mm == (2.0, 2.0, 2.0)
    assert p.iterations == 3
    with pytest.raises(LesionsegError, match="2 values but the image has 3 channels"):
        p.intensity_sigmas(3)


@pytest.mark.parametrize(
    "data, message",
    [
        ({"bogus": 1}, "unknown CRF parameter"),
        ({"iterations": -1}, "iterations"),
        ({"iterations": 2.5}, "iterations"),
        ({"smoothness_weight": -1}, "smoothness_weight"),
        ({"appearance_sigma_mm": [1, 2]}, "needs 3 values"),
        ({"intensity_sigma": [0]}, "positive"),
        ({"intensity_range": [3, -3]}, "low < high"),
        ({"min_probability": 0.7}, "min_probability"),
        ({"smoothness_sigma_mm": "wide"}, "number"),
    ],
)
def test_bad_values_are_user_errors(data, message):
    with pytest.raises(LesionsegError, match=message):
        CRFParams.from_dict(data)


def test_bad_files_are_user_errors(tmp_path):
    with pytest.raises(LesionsegError, match="not found"):
        CRFParams.load(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(LesionsegError, match="cannot read"):
        CRFParams.load(broken)
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"iterations": "many"}))
    with pytest.raises(LesionsegError, match=str(wrong.name)):
        CRFParams.load(wrong)
