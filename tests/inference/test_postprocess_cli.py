"""``lesionseg predict`` post-processing options, with a model whose output is known."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from lesionseg.cli.main import main
from lesionseg.models.io import save_model
from tests.conftest import write_nifti
from tests.inference.conftest import Pointwise

SHAPE = (16, 16, 16)
AFFINE = np.diag([2.0, 1.0, 1.0, 1.0])  # voxels of 2 mm³

# Lesions (lines along the last axis, far apart) as (first voxel, length, probability).
LESIONS = {
    "a": ((2, 2, 2), 10, 0.7),  # 20 mm³
    "b": ((2, 8, 2), 4, 0.7),  # 8 mm³
    "c": ((2, 13, 2), 6, 0.7),  # 12 mm³
    "d": ((8, 2, 2), 9, 0.7),  # 18 mm³
    "e": ((8, 8, 2), 12, 0.55),  # over 0.5, under 0.6
}


def lesion_mask(name):
    mask = np.zeros(SHAPE, bool)
    (x, y, z), length, _ = LESIONS[name]
    mask[x, y, z : z + length] = True
    return mask


def expected(*names):
    return sum(lesion_mask(n) for n in names).astype(np.uint8)


def logit(p):
    return float(np.log(p / (1 - p)))


@pytest.fixture
def flair(tmp_path):
    """FLAIR whose values are the logits of the lesion probabilities (0.05 elsewhere)."""
    image = np.full(SHAPE, logit(0.05), np.float32)
    for name, (_, _, p) in LESIONS.items():
        image[lesion_mask(name)] = logit(p)
    return write_nifti(tmp_path / "in" / "case_flair.nii.gz", image, AFFINE)


def sigmoid_model(folder, postprocess=(), **preprocess):
    """A saved 1×1×1 model giving lesion probability sigmoid(FLAIR), with no normalisation."""
    model = Pointwise(1, 2)
    with torch.no_grad():
        model.conv.weight.zero_()
        model.conv.bias.zero_()
        model.conv.weight[1, 0] = 1.0
    config = {
        "recipe": {"model": {"name": "test-pointwise"}, "predict": {"postprocess": [*postprocess]}},
        "channel_names": ["FLAIR"],
        "labels": {"0": "background", "1": "lesion"},
        "preprocess": {"normalize": "none", **preprocess},
    }
    save_model(model, config, folder)
    return str(folder)


def predict(tmp_path, model, flair, *options, out="out"):
    argv = ["predict", "-m", model, "-i", str(flair), "-o", str(tmp_path / out), "--name", "case"]
    assert main([*argv, *options]) == 0
    seg = nib.load(str(tmp_path / out / "case_seg.nii.gz"))
    np.testing.assert_allclose(seg.affine, AFFINE)
    return np.asarray(seg.dataobj)


def test_threshold_and_min_lesion_size_in_mm3_and_voxels(tmp_path, flair):
    model = sigmoid_model(tmp_path / "m")
    # no post-processing: the argmax (p > 0.5) keeps every lesion
    np.testing.assert_array_equal(predict(tmp_path, model, flair), expected(*LESIONS))
    # 0.6 drops e; 10 mm³ = 5 voxels of 2 mm³ removes b (8 mm³) and keeps c (12 mm³)
    labels = predict(
        tmp_path, model, flair, "--threshold", "0.6", "--min-lesion-size", "10", out="o1"
    )
    np.testing.assert_array_equal(labels, expected("a", "c", "d"))
    # in voxels: d (9) and c (6) go too
    labels = predict(
        tmp_path, model, flair, "--threshold", "0.6", "--min-lesion-size", "10",
        "--min-lesion-unit", "voxels", out="o2",
    )  # fmt: skip
    np.testing.assert_array_equal(labels, expected("a"))
    # the size filter alone works on the argmax: e (12 voxels, 24 mm³) stays
    labels = predict(tmp_path, model, flair, "--min-lesion-size", "19", out="o3")
    np.testing.assert_array_equal(labels, expected("a", "e"))


def test_options_override_the_recipe_steps(tmp_path, flair):
    recipe_steps = [
        {"name": "threshold", "threshold": 0.5},
        {"min-lesion-size": {"size": 100, "unit": "voxels"}},
    ]
    model = sigmoid_model(tmp_path / "m", recipe_steps)
    assert not predict(tmp_path, model, flair).any()  # the recipe's 100 voxels remove all
    everything = predict(tmp_path, model, flair, "--postprocess", "none", out="o1")
    np.testing.assert_array_equal(everything, expected(*LESIONS))
    # --min-lesion-size replaces the recipe's size (mm3), its threshold 0.5 stays
    labels = predict(tmp_path, model, flair, "--min-lesion-size", "10", out="o2")
    np.testing.assert_array_equal(labels, expected("a", "c", "d", "e"))
    labels = predict(
        tmp_path, model, flair, "--threshold", "0.6", "--min-lesion-size", "0", out="o3"
    )
    np.testing.assert_array_equal(labels, expected("a", "b", "c", "d"))


def test_sizes_are_measured_on_the_resampled_grid(tmp_path):
    """Resampled to 1 mm, a 4×6×6 block of 2 mm³ voxels (288 mm³) is 288 voxels of 1 mm³."""
    image = np.full(SHAPE, logit(0.05), np.float32)
    image[4:8, 4:10, 4:10] = logit(0.9)
    block = (image > 0).astype(np.uint8)
    flair = write_nifti(tmp_path / "in" / "case_flair.nii.gz", image, AFFINE)
    model = sigmoid_model(tmp_path / "m", target_spacing=[1.0, 1.0, 1.0])
    for i, (options, kept) in enumerate(
        [
            (["--min-lesion-size", "280"], True),
            (["--min-lesion-size", "300"], False),
            (["--min-lesion-size", "200", "--min-lesion-unit", "voxels"], True),  # 144 input voxels
            (["--min-lesion-size", "300", "--min-lesion-unit", "voxels"], False),
        ]
    ):
        labels = predict(tmp_path, model, flair, *options, out=f"o{i}")
        np.testing.assert_array_equal(labels, block if kept else 0 * block)


def test_bad_post_processing_options(tmp_path, flair, capsys):
    model = sigmoid_model(tmp_path / "m")
    argv = ["predict", "-m", model, "-i", str(flair), "-o", str(tmp_path / "out")]
    assert main([*argv, "--min-lesion-unit", "voxels"]) == 2
    assert "--min-lesion-unit needs --min-lesion-size" in capsys.readouterr().err
    for options, message in [
        (["--threshold", "1.5"], "probability in [0, 1]"),
        (["--min-lesion-size", "-2"], "size >= 0"),
        (["--min-lesion-unit", "ml", "--min-lesion-size", "3"], "invalid choice"),
        (["--postprocess", "dense"], "invalid choice"),
    ]:
        with pytest.raises(SystemExit) as stop:  # argparse: usage and status 2
            main([*argv, *options])
        assert stop.value.code == 2 and message in capsys.readouterr().err
    assert not list(tmp_path.glob("out/*_seg.nii.gz"))
