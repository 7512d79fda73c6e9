"""The evaluate() API on NIfTI folders and data sets, and the ``lesionseg evaluate`` command."""

import csv
import json
import math

import nibabel as nib
import numpy as np
import pytest
from eval_masks import lesion_masks

from lesionseg.cli.main import main
from lesionseg.errors import LesionsegError
from lesionseg.evaluation import evaluate, evaluate_case, evaluate_masks
from lesionseg.evaluation.api import find_cases

AFFINE = np.diag([1.0, 1.2, 2.0, 1.0])


def _save(path, data, affine=AFFINE):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data), affine), str(path))
    return path


@pytest.fixture
def folders(tmp_path):
    """Reference labels of 3 cases and two prediction sets (the second one worse)."""
    refs, preds = {}, {}
    for i in range(3):
        pred, ref = lesion_masks((24, 22, 20), 5, seed=i)
        case = f"case{i}"
        refs[case] = ref.astype(np.uint8)
        preds[case] = pred.astype(np.uint8)
        _save(tmp_path / "ref" / f"{case}.nii.gz", refs[case])
        _save(tmp_path / "a" / f"{case}_seg.nii.gz", preds[case])
        worse = preds[case].copy()
        worse[:, :, ::3] = 0
        _save(tmp_path / "b" / f"{case}_seg.nii.gz", worse)
    _save(tmp_path / "a" / "case0_prob.nii.gz", np.zeros((2, 2, 2), np.float32))  # skipped
    return tmp_path, refs, preds


def test_evaluate_folders_matches_array_api(folders):
    root, refs, preds = folders
    result = evaluate({"A": root / "a", "B": root / "b"}, root / "ref", presets=("isles22", "edd"))
    assert result.methods == ["A", "B"]
    assert len(result.rows) == 6 and {r["region"] for r in result.rows} == {"label1"}
    row = next(r for r in result.rows if r["method"] == "A" and r["case"] == "case1")
    expected = evaluate_masks(
        preds["case1"], refs["case1"], (1.0, 1.2, 2.0), presets=("isles22", "edd")
    )
    for key, value in expected.items():
        assert row[key] == pytest.approx(value, nan_ok=True), key
    dice = {r["method"]: r["mean"] for r in result.summary() if r["metric"] == "dice"}
    assert dice["A"] > dice["B"]
    region, test = result.compare("A", "B")[0]
    assert region == "label1" and test.n == 3
    assert result.settings["hd95"] == "monai"
    assert result.settings["lesion_presets"][0]["preset"] == "isles22"


def test_dataset_reference_and_label_names(msd_dataset, tmp_path):
    for case in ("case_000", "case_001"):
        label = nib.load(str(msd_dataset / "labelsTr" / f"{case}.nii.gz"))
        _save(tmp_path / "pred" / f"{case}.nii.gz", np.asarray(label.dataobj), label.affine)
    result = evaluate(tmp_path / "pred", msd_dataset)
    assert {r["region"] for r in result.rows} == {"lesion"}  # name from dataset.json
    assert all(r["dice"] == 1.0 for r in result.rows)
    assert result.settings["reference_cases_without_prediction"] == 0


def test_labels_absent_from_a_case_get_both_empty_rows(tmp_path):
    ref0 = np.zeros((10, 10, 10), np.uint8)
    ref0[2:5, 2:5, 2:5] = 2
    ref1 = np.zeros((10, 10, 10), np.uint8)
    ref1[5:8, 5:8, 5:8] = 1
    for name, data in (("c0", ref0), ("c1", ref1)):
        _save(tmp_path / "ref" / f"{name}.nii.gz", data)
        _save(tmp_path / "pred" / f"{name}.nii.gz", data)
    result = evaluate(tmp_path / "pred", tmp_path / "ref", presets=())
    regions = {(r["case"], r["region"]): r for r in result.rows}
    assert set(regions) == {("c0", "label1"), ("c0", "label2"), ("c1", "label1"), ("c1", "label2")}
    absent = regions[("c0", "label1")]
    assert absent["dice"] == 1.0 and absent["hd_mm"] == 0.0 and absent["ref_vox"] == 0


def test_brats_regions_per_case():
    ref = np.zeros((12, 12, 12), np.int16)
    ref[2:8, 2:8, 2:8] = 2
    ref[3:6, 3:6, 3:6] = 1
    ref[4, 4, 4] = 4
    rows = evaluate_case(ref, ref, 1.0, regions="brats", presets=())
    assert [r["region"] for r in rows] == ["whole", "core", "enhancing"]
    assert [r["ref_vox"] for r in rows] == [216, 27, 1]


def test_grid_mismatch_needs_resample(tmp_path):
    ref = np.zeros((12, 10, 8), np.uint8)
    ref[3:7, 2:6, 2:5] = 1
    _save(tmp_path / "ref" / "c.nii.gz", ref)
    # the same image stored flipped along axis 0: same world positions, other grid
    flip = AFFINE.copy()
    flip[0, 0] = -1.0
    flip[0, 3] = 11.0
    _save(tmp_path / "pred" / "c.nii.gz", ref[::-1], flip)
    with pytest.raises(LesionsegError, match="--resample"):
        evaluate(tmp_path / "pred", tmp_path / "ref")
    result = evaluate(tmp_path / "pred", tmp_path / "ref", resample=True)
    assert result.rows[0]["dice"] == 1.0


def test_input_errors(tmp_path, folders):
    root, _, _ = folders
    with pytest.raises(LesionsegError, match="without a reference"):
        evaluate(root / "a", root / "b" / "case0_seg.nii.gz")
    _save(tmp_path / "soft" / "case0.nii.gz", np.full((4, 4, 4), 0.3, np.float32))
    with pytest.raises(LesionsegError, match="non-integer"):
        evaluate(tmp_path / "soft", root / "ref", missing="skip")
    with pytest.raises(LesionsegError, match="--hd95"):
        evaluate(root / "a", root / "ref", hd95="max")
    files = find_cases([root / "a" / "case0_seg.nii.gz", root / "a" / "case2_seg.nii.gz"])
    assert sorted(files.files) == ["case0", "case2"]


def test_cli_writes_outputs_and_compares(folders, capsys):
    root, _, _ = folders
    out = root / "eval"
    argv = [
        "evaluate",
        "--pred",
        f"A={root / 'a'}",
        "--pred",
        f"B={root / 'b'}",
        "--ref",
        str(root / "ref"),
        "-o",
        str(out),
        "--preset",
        "isles22",
        "edd",
        "--groups",
        "--compare",
        "A",
        "B",
        "--hd95",
        "deepmind",
        "--quiet",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "Paired tests" in printed and "m#FP" in printed and "hd95_deepmind_mm" in printed
    for name in ("cases.csv", "summary.csv", "summary.md", "evaluation.json", "dice_boxplot.png"):
        assert (out / name).is_file(), name
    with (out / "cases.csv").open() as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == 6 and {"isles22_f1", "edd_fp_mean_vox", "size_group"} <= set(rows[0])
    record = json.loads((out / "evaluation.json").read_text())
    assert record["paired_tests"][0]["n"] == 3
    assert record["hd95"] == "deepmind"
    # refuse to overwrite, as one line with exit status 2
    assert main(argv) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0


def test_cli_single_method_prints_summary(folders, capsys):
    root, _, _ = folders
    assert (
        main(
            [
                "evaluate",
                "--pred",
                str(root / "a"),
                "--ref",
                str(root / "ref"),
                "--no-surface",
                "--preset",
                "none",
                "--quiet",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "| dice (DSC) |" in text and "hd_mm" not in text
    assert (
        main(
            [
                "evaluate",
                "--pred",
                str(root / "a"),
                "--ref",
                str(root / "ref"),
                "--preset",
                "isles2022",
                "--quiet",
            ]
        )
        == 2
    )
    assert "did you mean" in capsys.readouterr().err


def test_empty_distance_is_explicit_in_summary(tmp_path):
    ref = np.zeros((8, 8, 8), np.uint8)
    ref[2:4, 2:4, 2:4] = 1
    _save(tmp_path / "ref" / "c0.nii.gz", ref)
    _save(tmp_path / "ref" / "c1.nii.gz", ref)
    _save(tmp_path / "pred" / "c0.nii.gz", ref)
    _save(tmp_path / "pred" / "c1.nii.gz", np.zeros_like(ref))  # missed: distance undefined
    result = evaluate(tmp_path / "pred", tmp_path / "ref", labels=[1])
    hd = next(r for r in result.summary() if r["metric"] == "hd_mm")
    assert (hd["n"], hd["n_total"], hd["mean"]) == (1, 2, 0.0)
    assert hd["text"].endswith("[n=1/2]")
    brats = evaluate(tmp_path / "pred", tmp_path / "ref", labels=[1], empty_distance=374.0)
    hd = next(r for r in brats.summary() if r["metric"] == "hd_mm")
    assert hd["mean"] == pytest.approx(187.0) and not math.isnan(hd["mean"])
