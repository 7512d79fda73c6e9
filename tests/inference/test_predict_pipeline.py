"""predict_subject and ``lesionseg predict``: channels by name, outputs on the input grid."""

from __future__ import annotations

import sys
import types

import nibabel as nib
import numpy as np
import pytest

from lesionseg.cli.main import main
from lesionseg.data.dataset import Subject
from lesionseg.errors import LesionsegError
from lesionseg.inference.pipeline import load_models, predict_subject
from lesionseg.models.io import save_model
from lesionseg.registry import Registry
from tests.conftest import write_nifti
from tests.data.test_nifti_io import oblique_lps_affine
from tests.inference.conftest import CentreThreshold

SHAPE = (30, 26, 12)


def make_images(seed=0):
    """Brain ellipsoid; the lesion is bright on FLAIR only. Returns T1, FLAIR, lesion."""
    rng = np.random.default_rng(seed)
    grid = np.indices(SHAPE).transpose(1, 2, 3, 0).astype(float)
    centre = (np.array(SHAPE) - 1) / 2
    brain = (((grid - centre) / (np.array(SHAPE) * 0.45)) ** 2).sum(-1) < 1
    # Lesion off-centre (x > centre), ~3 voxels in-plane and 1 thick slice.
    lesion = (((grid - [20, 10, 6]) / [2.6, 2.2, 1.1]) ** 2).sum(-1) < 1
    noise = rng.normal(0, 5, SHAPE)
    t1 = np.where(brain, 100 + noise, 0).astype(np.float32)
    flair = np.where(brain, 100 + noise + 100 * lesion, 0).astype(np.float32)
    return t1, flair, (lesion & brain).astype(np.uint8)


@pytest.fixture
def lps_subject(tmp_path):
    affine = oblique_lps_affine()
    t1, flair, lesion = make_images()
    paths = {
        "T1": write_nifti(tmp_path / "in" / "s1_t1.nii.gz", t1, affine),
        "FLAIR": write_nifti(tmp_path / "in" / "s1_flair.nii.gz", flair, affine),
    }
    return Subject("s1", paths), lesion, affine


def threshold_model(folder, preprocess=None, threshold=3.0, postprocess=()):
    """A saved model labelling voxels with z-scored FLAIR above ``threshold`` (FLAIR first)."""
    options = {"context": 5, "channel": 0, "threshold": threshold}
    config = {
        "recipe": {
            "model": {"name": "test-centre-threshold", **options},
            "predict": {"postprocess": list(postprocess)},
        },
        "channel_names": ["FLAIR", "T1"],
        "labels": {"0": "background", "1": "lesion"},
        "preprocess": preprocess or {},
    }
    save_model(CentreThreshold(2, 2, **options), config, folder)
    return folder


def world_centroid(mask, affine):
    idx = np.argwhere(mask > 0).mean(0)
    return affine[:3, :3] @ idx + affine[:3, 3]


def test_lps_anisotropic_prediction_lines_up(tmp_path, lps_subject):
    subject, lesion, affine = lps_subject
    models = load_models([threshold_model(tmp_path / "m")])
    out = predict_subject(models, subject, tmp_path / "out", save_probabilities=True, tile_size=6)
    seg = nib.load(str(out.segmentation))
    assert seg.shape == SHAPE and seg.get_data_dtype() == np.uint8
    np.testing.assert_allclose(seg.affine, affine, atol=1e-5)
    assert nib.aff2axcodes(seg.affine) == nib.aff2axcodes(affine)
    labels = np.asarray(seg.dataobj)
    # No resampling: the labelled voxels are exactly the lesion's, at the same world positions.
    np.testing.assert_array_equal(labels, lesion)
    prob = nib.load(str(out.probabilities))
    assert prob.shape == (*SHAPE, 2)
    np.testing.assert_allclose(prob.affine, affine, atol=1e-5)
    p = np.asarray(prob.dataobj)
    np.testing.assert_allclose(p.sum(-1), 1, atol=1e-5)
    assert (p[..., 1] > 0.5).sum() == lesion.sum()


def test_resampled_prediction_lines_up_in_world_coordinates(tmp_path, lps_subject):
    subject, lesion, affine = lps_subject
    models = load_models([threshold_model(tmp_path / "m", {"target_spacing": [1.0, 1.0, 1.0]})])
    out = predict_subject(models, subject, tmp_path / "out")
    seg = nib.load(str(out.segmentation))
    labels = np.asarray(seg.dataobj)
    assert seg.shape == SHAPE
    np.testing.assert_allclose(seg.affine, affine, atol=1e-5)
    dice = 2 * (labels & lesion).sum() / (labels.sum() + lesion.sum())
    assert dice > 0.7
    shift = world_centroid(labels, affine) - world_centroid(lesion, affine)
    assert np.linalg.norm(shift) < 1.5  # mm


def test_channels_are_matched_by_name(tmp_path, lps_subject):
    subject, lesion, _ = lps_subject
    models = load_models([threshold_model(tmp_path / "m")])
    missing = Subject("s1", {"T1": subject.channels["T1"]})
    with pytest.raises(LesionsegError, match="lacks channel.*FLAIR"):
        predict_subject(models, missing, tmp_path / "out")
    extra = Subject("s1", {**subject.channels, "T2": subject.channels["T1"]})
    with pytest.raises(LesionsegError, match="T2.*does not use"):
        predict_subject(models, extra, tmp_path / "out")
    # Swapped order in the subject does not matter: channels go by name.
    swapped = Subject("s1", {"FLAIR": subject.channels["FLAIR"], "T1": subject.channels["T1"]})
    out = predict_subject(models, swapped, tmp_path / "out")
    np.testing.assert_array_equal(np.asarray(nib.load(str(out.segmentation)).dataobj), lesion)


def test_existing_outputs_need_overwrite(tmp_path, lps_subject):
    subject, _, _ = lps_subject
    models = load_models([threshold_model(tmp_path / "m")])
    predict_subject(models, subject, tmp_path / "out")
    with pytest.raises(LesionsegError, match="overwrite"):
        predict_subject(models, subject, tmp_path / "out")
    predict_subject(models, subject, tmp_path / "out", overwrite=True)


def test_ensemble_with_different_preprocessing_and_tta(tmp_path, lps_subject):
    subject, lesion, _ = lps_subject
    a = threshold_model(tmp_path / "a")
    b = threshold_model(tmp_path / "b", {"crop_margin": 1}, threshold=2.5)
    models = load_models([a, b])
    out = predict_subject(models, subject, tmp_path / "out", save_probabilities=True, tta=True)
    p = np.asarray(nib.load(str(out.probabilities)).dataobj)
    single = [
        np.asarray(
            nib.load(
                str(
                    predict_subject(
                        load_models([m]), subject, tmp_path / name, save_probabilities=True
                    ).probabilities
                )
            ).dataobj
        )
        for m, name in ((a, "oa"), (b, "ob"))
    ]
    # Pointwise models are flip-invariant, so TTA changes nothing; the ensemble is the mean.
    np.testing.assert_allclose(p, (single[0] + single[1]) / 2, atol=1e-5)


def test_postprocess_steps_from_the_recipe(tmp_path, lps_subject, monkeypatch):
    subject, lesion, _ = lps_subject
    calls = []
    registry = Registry("post-processing step")

    @registry.register("keep-largest-x")
    def keep_half(probs, *, image, mask, spacing, fraction=0.5):
        calls.append((probs.shape, image.shape, mask.shape, tuple(spacing), fraction))
        labels = (probs[1] > 0.5).astype(np.uint8)
        labels[: int(labels.shape[0] * fraction)] = 0
        return probs, labels

    monkeypatch.setitem(
        sys.modules, "lesionseg.postprocess", types.SimpleNamespace(POSTPROCESS=registry)
    )
    models = load_models(
        [threshold_model(tmp_path / "m", postprocess=[{"name": "keep-largest-x", "fraction": 0.9}])]
    )
    out = predict_subject(models, subject, tmp_path / "out")
    assert len(calls) == 1 and calls[0][-1] == 0.9
    assert calls[0][1][0] == 2 and calls[0][0][0] == 2
    labels = np.asarray(nib.load(str(out.segmentation)).dataobj)
    assert labels.sum() < lesion.sum()  # the step's labels were used


def test_cli_predict_files_folder_and_dataset(tmp_path, lps_subject, capsys):
    subject, lesion, _ = lps_subject
    model = str(threshold_model(tmp_path / "m"))
    flair, t1 = str(subject.channels["FLAIR"]), str(subject.channels["T1"])
    # Files of one subject, in the model's channel order.
    assert main(["predict", "-m", model, "-i", flair, t1, "-o", str(tmp_path / "o1")]) == 0
    seg = tmp_path / "o1" / "s1_seg.nii.gz"  # named by the subject (s1_t1, s1_flair → s1)
    np.testing.assert_array_equal(np.asarray(nib.load(str(seg)).dataobj), lesion)
    # Named files, any order; existing output refused, then --overwrite.
    args = ["predict", "-m", model, "-i", f"T1={t1}", f"FLAIR={flair}", "-o", str(tmp_path / "o1")]
    assert main(args) == 2
    assert "overwrite" in capsys.readouterr().err
    assert main(args + ["--overwrite", "--save-probabilities"]) == 0
    assert (tmp_path / "o1" / "s1_prob.nii.gz").is_file()
    assert main(args + ["--name", "mycase"]) == 0
    assert (tmp_path / "o1" / "mycase_seg.nii.gz").is_file()
    # A folder of <case>_XXXX files (channel 0 = FLAIR, the model's first channel).
    folder = tmp_path / "folder"
    folder.mkdir()
    for i, path in enumerate((flair, t1)):
        (folder / f"case7_{i:04d}.nii.gz").write_bytes(open(path, "rb").read())
    assert main(["predict", "-m", model, "-i", str(folder), "-o", str(tmp_path / "o2")]) == 0
    assert (tmp_path / "o2" / "case7_seg.nii.gz").is_file()
    # Wrong number of files: a one-line error, exit 2.
    assert main(["predict", "-m", model, "-i", flair, "-o", str(tmp_path / "o3")]) == 2
    err = capsys.readouterr().err
    assert "1 file(s) given but the model takes 2" in err and len(err.strip().splitlines()) == 1


def test_cli_predict_dataset_test_split(tmp_path, msd_dataset):
    # msd_dataset channels are T1 and FLAIR: a model with FLAIR first still matches by name.
    model = str(threshold_model(tmp_path / "m"))
    out = tmp_path / "out"
    assert main(["predict", "-m", model, "-i", str(msd_dataset), "-o", str(out)]) == 0
    # besides the outputs, only the marker that says lesionseg made this folder
    assert sorted(p.name for p in out.iterdir()) == [".lesionseg.json", "case_002_seg.nii.gz"]
    assert (
        main(
            [
                "predict",
                "-m",
                model,
                "-i",
                str(msd_dataset),
                "-o",
                str(out),
                "--all",
                "--overwrite",
                "--tta",
                "--tile",
                "9",
            ]
        )
        == 0
    )
    assert len(list(out.glob("*_seg.nii.gz"))) == 3
    assert (
        main(["predict", "-m", model, "-i", str(msd_dataset), "-o", str(out), "--device", "cuda:7"])
        == 2
    )


def test_recipe_tile_is_used_unless_tile_is_given(tmp_path, lps_subject, monkeypatch):
    import json

    import lesionseg.inference.method as method

    subject, _, _ = lps_subject
    folder = threshold_model(tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    config["recipe"]["predict"]["tile"] = 6
    (folder / "config.json").write_text(json.dumps(config))
    seen = []
    real = method.predict_volume

    def spy(model, image, **kwargs):
        seen.append(kwargs["tile_size"])
        return real(model, image, **kwargs)

    monkeypatch.setattr(method, "predict_volume", spy)
    models = load_models([folder])
    predict_subject(models, subject, tmp_path / "a")
    predict_subject(models, subject, tmp_path / "b", tile_size=9)
    assert seen == [6, 9]


def test_a_model_reading_some_of_its_data_sets_channels(tmp_path, lps_subject, msd_dataset):
    # Trained with `channels: [FLAIR]` on T1 + FLAIR data: `_0001` still means FLAIR, T1 is
    # ignored wherever it comes from, an unknown channel is still an error.
    subject, lesion, _ = lps_subject
    options = {"context": 5, "channel": 0, "threshold": 3.0}
    config = {
        "recipe": {"model": {"name": "test-centre-threshold", **options}, "predict": {}},
        "channel_names": ["FLAIR"],
        "data_channel_names": ["T1", "FLAIR"],
        "labels": {"0": "background", "1": "lesion"},
        "preprocess": {},
    }
    save_model(CentreThreshold(1, 2, **options), config, tmp_path / "m")
    model = str(tmp_path / "m")
    folder = tmp_path / "folder"
    folder.mkdir()
    for i, name in enumerate(("T1", "FLAIR")):
        (folder / f"case7_{i:04d}.nii.gz").write_bytes(subject.channels[name].read_bytes())
    assert main(["predict", "-m", model, "-i", str(folder), "-o", str(tmp_path / "o")]) == 0
    seg = np.asarray(nib.load(str(tmp_path / "o" / "case7_seg.nii.gz")).dataobj)
    np.testing.assert_array_equal(seg, lesion)
    assert main(["predict", "-m", model, "-i", str(msd_dataset), "-o", str(tmp_path / "d")]) == 0
    models = load_models([tmp_path / "m"])
    extra = Subject("s1", {**subject.channels, "T2": subject.channels["T1"]})
    with pytest.raises(LesionsegError, match="T2.*does not use"):
        predict_subject(models, extra, tmp_path / "out")


def test_nnunet_naming_and_device_auto(tmp_path, msd_dataset, capsys):
    model = str(threshold_model(tmp_path / "m"))
    out = tmp_path / "out"
    argv = ["predict", "-m", model, "-i", str(msd_dataset), "-o", str(out), "--all"]
    assert main([*argv, "--naming", "nnunet", "--device", "auto", "--quiet"]) == 0
    assert capsys.readouterr().err == ""  # --quiet: no progress
    names = sorted(p.name for p in out.glob("*.nii.gz"))
    assert names == ["case_000.nii.gz", "case_001.nii.gz", "case_002.nii.gz"]
    # nnU-Net reads every .nii.gz of the folder as a case: no probability maps there
    assert main([*argv, "--naming", "nnunet", "--save-probabilities", "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "--naming nnunet" in err and len(err.strip().splitlines()) == 1
