"""``lesionseg crf`` and ``lesionseg crf-tune`` on small NIfTI files."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage as ndi

from lesionseg.cli.main import main
from lesionseg.postprocess.crf import CRFParams
from tests.conftest import phantom_arrays, write_nifti

AFFINE = np.diag([1.0, 1.2, 2.0, 1.0])


def _probability(label: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    logit = 4 * (label - 0.5) + 2 * ndi.gaussian_filter(rng.normal(size=label.shape), 0.7) / 0.3
    return (1 / (1 + np.exp(-logit))).astype(np.float32)


@pytest.fixture
def inputs(tmp_path):
    images, label, _ = phantom_arrays(seed=0)
    paths = [write_nifti(tmp_path / f"img{c}.nii.gz", img, AFFINE) for c, img in enumerate(images)]
    fg = _probability(label, 0)
    prob3 = write_nifti(tmp_path / "fg.nii.gz", fg, AFFINE)
    prob4 = write_nifti(tmp_path / "prob.nii.gz", np.stack([1 - fg, fg], -1), AFFINE)
    return tmp_path, paths, prob3, prob4


def test_crf_writes_labels_and_probabilities_on_the_input_grid(inputs, capsys):
    folder, images, prob3, prob4 = inputs
    out, refined = folder / "seg.nii.gz", folder / "refined.nii.gz"
    image_args = [a for p in images for a in ("--image", str(p))]
    argv = ["crf", "--prob", str(prob4), "-o", str(out), "--save-probabilities", str(refined)]
    argv += image_args
    assert main(argv) == 0
    assert "labels changed" in capsys.readouterr().out
    seg, probs = nib.load(str(out)), nib.load(str(refined))
    assert seg.shape == nib.load(str(images[0])).shape
    np.testing.assert_allclose(seg.affine, AFFINE)
    assert probs.shape == (*seg.shape, 2)
    labels = np.asarray(seg.dataobj)
    np.testing.assert_array_equal(labels, np.asarray(probs.dataobj).argmax(-1))
    # a 3D foreground probability is the same binary problem
    out3 = folder / "seg3.nii.gz"
    assert main(["crf", "--prob", str(prob3), "-o", str(out3), *image_args]) == 0
    np.testing.assert_array_equal(np.asarray(nib.load(str(out3)).dataobj), labels)
    # outputs are not replaced without --overwrite; with it and other parameters, they are
    assert main(argv) == 2
    assert "--overwrite" in capsys.readouterr().err
    params = folder / "crf.yaml"
    CRFParams(smoothness_weight=0, appearance_weight=0).save(params)
    assert main([*argv, "--overwrite", "--params", str(params)]) == 0
    fg = np.asarray(nib.load(str(prob3)).dataobj)
    np.testing.assert_array_equal(
        np.asarray(nib.load(str(out)).dataobj), (fg > 0.5).astype(np.uint8)
    )


def _one_line_error(capsys, argv, fragment):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert fragment in err, err


def test_crf_bad_inputs_give_one_line_errors(inputs, tmp_path, capsys):
    folder, images, prob3, prob4 = inputs
    out = str(folder / "o.nii.gz")
    img = ["--image", str(images[0])]
    _one_line_error(
        capsys, ["crf", "--prob", str(folder / "nope.nii.gz"), *img, "-o", out], "not found"
    )
    other = write_nifti(folder / "small.nii.gz", np.zeros((5, 5, 5), np.float32), AFFINE)
    _one_line_error(
        capsys, ["crf", "--prob", str(prob4), "--image", str(other), "-o", out], "different grid"
    )
    bad = write_nifti(folder / "bad.nii.gz", np.full((20, 24, 16), 3.0, np.float32), AFFINE)
    _one_line_error(capsys, ["crf", "--prob", str(bad), *img, "-o", out], "[0, 1]")
    one = write_nifti(folder / "one.nii.gz", np.zeros((20, 24, 16, 1, 3), np.float32), AFFINE)
    _one_line_error(capsys, ["crf", "--prob", str(one), *img, "-o", out], "3D or 4D")
    _one_line_error(
        capsys, ["crf", "--prob", str(prob4), *img, "-o", str(folder / "o.png")], ".nii"
    )
    params = folder / "p.json"
    params.write_text(json.dumps({"appearance_weight": -2}))
    _one_line_error(
        capsys,
        ["crf", "--prob", str(prob4), *img, "-o", out, "--params", str(params)],
        "appearance_weight",
    )
    params.write_text(json.dumps({"intensity_sigma": [1, 2, 3]}))
    _one_line_error(
        capsys, ["crf", "--prob", str(prob4), *img, "-o", out, "--params", str(params)], "channels"
    )


def test_crf_tune_cli(msd_dataset, tmp_path, capsys):
    preds = tmp_path / "preds"
    for i in range(2):  # the two training cases have references
        label = nib.load(str(msd_dataset / "labelsTr" / f"case_{i:03d}.nii.gz"))
        fg = _probability(np.asarray(label.dataobj), i)
        write_nifti(preds / f"case_{i:03d}_prob.nii.gz", np.stack([1 - fg, fg], -1), label.affine)
    out = tmp_path / "crf.json"
    argv = ["crf-tune", "--prob-dir", str(preds), "--dataset", str(msd_dataset), "-o", str(out)]
    assert main([*argv, "--trials", "3", "--seed", "1"]) == 0
    printed = capsys.readouterr().out
    assert "mean Dice" in printed and "best: trial" in printed
    saved = json.loads(out.read_text())
    assert saved["tuning"]["cases"] == ["case_000", "case_001"] and saved["tuning"]["trials"] == 3
    assert CRFParams.load(out) == CRFParams.from_dict(saved["crf"])
    _one_line_error(capsys, [*argv, "--trials", "3"], "--overwrite")
    _one_line_error(capsys, [*argv[:-1], str(tmp_path / "x.json"), "--trials", "1"], "--trials")
    (preds / "case_002_prob.nii.gz").write_bytes((preds / "case_000_prob.nii.gz").read_bytes())
    _one_line_error(capsys, [*argv[:-1], str(tmp_path / "y.json")], "no reference")


def test_crf_tune_reads_a_predict_folder_with_labels_beside_probabilities(msd_dataset, tmp_path):
    # `lesionseg predict --save-probabilities` writes <case>_seg.nii.gz beside <case>_prob
    preds = tmp_path / "preds"
    for i in range(2):
        label = nib.load(str(msd_dataset / "labelsTr" / f"case_{i:03d}.nii.gz"))
        fg = _probability(np.asarray(label.dataobj), i)
        write_nifti(preds / f"case_{i:03d}_prob.nii.gz", np.stack([1 - fg, fg], -1), label.affine)
        write_nifti(preds / f"case_{i:03d}_seg.nii.gz", (fg > 0.5).astype(np.uint8), label.affine)
    out = tmp_path / "crf.json"
    argv = ["crf-tune", "--prob-dir", str(preds), "-d", str(msd_dataset), "-o", str(out)]
    assert main([*argv, "--trials", "2", "--seed", "1"]) == 0
    assert json.loads(out.read_text())["tuning"]["cases"] == ["case_000", "case_001"]


def test_crf_refines_a_folder_of_predictions(msd_dataset, tmp_path, capsys):
    # what `lesionseg predict --save-probabilities` writes: <case>_prob beside <case>_seg
    preds, out = tmp_path / "preds", tmp_path / "crf"
    for i in range(2):
        label = nib.load(str(msd_dataset / "labelsTr" / f"case_{i:03d}.nii.gz"))
        fg = _probability(np.asarray(label.dataobj), i)
        write_nifti(preds / f"case_{i:03d}_prob.nii.gz", np.stack([1 - fg, fg], -1), label.affine)
        write_nifti(preds / f"case_{i:03d}_seg.nii.gz", (fg > 0.5).astype(np.uint8), label.affine)
    argv = ["crf", "--prob-dir", str(preds), "-d", str(msd_dataset), "-o", str(out)]
    assert main([*argv, "--save-probabilities", "--quiet"]) == 0
    assert "CRF: 2 case(s)" in capsys.readouterr().out
    names = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert names == [f"case_00{i}_{k}.nii.gz" for i in range(2) for k in ("prob", "seg")]
    # each case as `crf --prob` alone gives it
    case = msd_dataset / "imagesTr"
    images = [a for c in sorted(case.glob("case_001_*")) for a in ("--image", str(c))]
    single = tmp_path / "one_seg.nii.gz"
    assert main(["crf", "--prob", str(preds / "case_001_prob.nii.gz"), "-o", str(single), *images,
                 "--save-probabilities", "--quiet"]) == 0  # fmt: skip
    np.testing.assert_array_equal(
        np.asarray(nib.load(str(single)).dataobj),
        np.asarray(nib.load(str(out / "case_001_seg.nii.gz")).dataobj),
    )
    assert (tmp_path / "one_prob.nii.gz").is_file()  # the flag alone: beside the labels
    _one_line_error(capsys, argv, "--overwrite")
    _one_line_error(capsys, [*argv[:-2], "-o", str(tmp_path / "x"), "--image", "a.nii"], "--image")


def test_crf_tune_on_what_predict_writes(tmp_path, capsys):
    from tests.safety.builders import model_folder, msd

    data = msd(tmp_path / "data", n_train=2, n_test=0)  # every case has a reference
    model = model_folder(tmp_path / "model")
    preds = tmp_path / "preds"
    argv = ["predict", "-m", str(model), "-i", str(data), "--all", "-o", str(preds)]
    assert main([*argv, "--save-probabilities", "--quiet"]) == 0
    assert {p.name for p in preds.glob("*.nii.gz")} == {
        f"case_00{i}_{k}.nii.gz" for i in range(2) for k in ("prob", "seg")
    }
    capsys.readouterr()
    out = tmp_path / "crf.json"
    tune = ["crf-tune", "--prob-dir", str(preds), "-d", str(data), "-o", str(out)]
    assert main([*tune, "--trials", "2", "--quiet"]) == 0
    printed, errors = capsys.readouterr()
    assert errors == "" and printed.strip().startswith("best: trial")  # only the summary
    assert json.loads(out.read_text())["tuning"]["cases"] == ["case_000", "case_001"]
