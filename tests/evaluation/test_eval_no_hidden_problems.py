"""Evaluation hides no problem: missing predictions, BraTS label numbers, --empty-distance."""

import csv
import json

import nibabel as nib
import numpy as np
import pytest

from lesionseg.cli.main import main
from lesionseg.errors import LesionsegError
from lesionseg.evaluation import evaluate, evaluate_masks
from lesionseg.evaluation.api import MISSING_EMPTY
from lesionseg.evaluation.outputs import summary_markdown

AFFINE = np.diag([1.0, 1.2, 2.0, 1.0])
FAST = ["--preset", "none", "--no-surface", "--quiet"]


def _save(path, data, affine=AFFINE):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data), affine), str(path))
    return path


def _tumour(labels=(2, 1, 3), shift=0):
    """Nested boxes with the given outer-to-inner label values (BraTS-like)."""
    data = np.zeros((12, 12, 10), np.uint8)
    for i, value in enumerate(labels):
        lo = 2 + i + shift
        data[lo : 10 - i, lo : 10 - i, lo : 8 - i] = value
    return data


@pytest.fixture
def partial(tmp_path):
    """Three reference cases; method A predicts all of them, method B misses case c1."""
    for i, case in enumerate(("c0", "c1", "c2")):
        ref = _tumour((1,), shift=i % 2)
        _save(tmp_path / "ref" / f"{case}.nii.gz", ref)
        _save(tmp_path / "a" / f"{case}_seg.nii.gz", ref)
        if case != "c1":
            _save(tmp_path / "b" / f"{case}_seg.nii.gz", ref)
    return tmp_path


def _err_lines(text, kind):
    return [ln for ln in text.splitlines() if f"lesionseg evaluate: {kind}:" in ln]


# ------------------------------------------------------------------ 1. missing predictions


def test_missing_prediction_is_an_error_by_default(partial, capsys):
    with pytest.raises(
        LesionsegError, match=r"'b'.*1 of 3 reference cases.*c1.*--missing-as-empty"
    ):
        evaluate({"A": partial / "a", "b": partial / "b"}, partial / "ref", presets=())
    assert (
        main(["evaluate", "--pred", str(partial / "b"), "--ref", str(partial / "ref"), *FAST]) == 2
    )
    err = capsys.readouterr().err
    (line,) = _err_lines(err, "error")
    assert "c1" in line and "--missing-as-empty" in line and "--allow-missing" in line
    assert "Traceback" not in err


def test_allow_missing_reports_the_cases_everywhere(partial, capsys):
    out = partial / "eval"
    argv = ["evaluate", "--pred", f"A={partial / 'a'}", "--pred", f"B={partial / 'b'}"]
    argv += ["--ref", str(partial / "ref"), "--allow-missing", "-o", str(out), *FAST]
    assert main(argv) == 0
    captured = capsys.readouterr()
    (warning,) = _err_lines(captured.err, "warning")
    assert "missing predictions: 1 of 3 reference cases for 'B' (c1)" in warning
    assert "left out of every mean" in warning
    assert "- missing predictions: 1 of 3 reference cases for 'B' (c1)" in captured.out
    record = json.loads((out / "evaluation.json").read_text())
    assert record["missing_predictions"] == {"A": [], "B": ["c1"]}
    assert record["missing_policy"] == "skip"
    assert record["reference_cases"] == 3
    with (out / "summary.csv").open() as stream:
        summary = list(csv.DictReader(stream))
    dice = {r["method"]: r for r in summary if r["metric"] == "dice"}
    assert (dice["A"]["missing_predictions"], dice["A"]["n_total"]) == ("0", "3")
    assert (dice["B"]["missing_predictions"], dice["B"]["n_total"]) == ("1", "2")
    assert "missing predictions: 1" in (out / "summary.md").read_text()


def test_no_missing_prediction_is_said_too(partial):
    result = evaluate(partial / "a", partial / "ref", presets=(), surface=False)
    assert result.warnings == []
    assert result.settings["missing_predictions"] == {"a": []}
    assert "- missing predictions: 0" in summary_markdown(result)


def test_missing_as_empty_scores_an_all_background_prediction(partial):
    # the same case with an explicit all-zero prediction file must give the same numbers
    _save(partial / "zeros" / "c0_seg.nii.gz", np.zeros((12, 12, 10), np.uint8))
    _save(partial / "zeros" / "c1_seg.nii.gz", np.zeros((12, 12, 10), np.uint8))
    _save(partial / "zeros" / "c2_seg.nii.gz", np.zeros((12, 12, 10), np.uint8))
    options = dict(presets=("isles22", "msseg"), empty_distance=374.0)
    result = evaluate(
        {"A": partial / "a", "B": partial / "b"}, partial / "ref", missing="empty", **options
    )
    explicit = evaluate(partial / "zeros", partial / "ref", **options)
    stand_in = next(r for r in result.rows if r["method"] == "B" and r["case"] == "c1")
    zeros = next(r for r in explicit.rows if r["case"] == "c1")
    assert stand_in["prediction"] == MISSING_EMPTY and zeros["prediction"] == "c1_seg.nii.gz"
    for key, value in zeros.items():
        if key not in ("method", "prediction"):
            assert stand_in[key] == pytest.approx(value, nan_ok=True), key
    assert stand_in["dice"] == 0.0 and stand_in["pred_vox"] == 0 and stand_in["hd_mm"] == 374.0
    assert sum(r["method"] == "B" for r in result.rows) == 3
    assert result.settings["missing_predictions"] == {"A": [], "B": ["c1"]}
    (warning,) = result.warnings
    assert "for 'B' (c1); scored as empty predictions (--missing-as-empty)" in warning


def test_missing_options_exclude_each_other(partial, capsys):
    argv = ["evaluate", "--pred", str(partial / "b"), "--ref", str(partial / "ref")]
    with pytest.raises(SystemExit) as stop:
        main([*argv, "--allow-missing", "--missing-as-empty"])
    assert stop.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


# ------------------------------------------------------------------ 2. BraTS label numbering


def _brats_folders(root, labels_of_case):
    for case, labels in labels_of_case.items():
        _save(root / "ref" / f"{case}.nii.gz", _tumour(labels))
        _save(root / "pred" / f"{case}.nii.gz", _tumour(labels, shift=1))
    return root


def test_brats_regions_on_2023_labels_warn(tmp_path, capsys):
    root = _brats_folders(tmp_path, {"c0": (2, 1, 3), "c1": (2, 3)})
    argv = ["evaluate", "--pred", str(root / "pred"), "--ref", str(root / "ref"), *FAST]
    assert main([*argv, "--regions", "brats"]) == 0
    captured = capsys.readouterr()
    (warning,) = _err_lines(captured.err, "warning")
    assert (
        "--regions brats:" in warning and "label 3 but no file of their set has label 4" in warning
    )
    assert "c0.nii.gz" in warning and "use --regions brats2023" in warning
    assert "- warning: --regions brats:" in captured.out
    assert main([*argv, "--regions", "brats2023"]) == 0
    assert _err_lines(capsys.readouterr().err, "warning") == []


def test_brats_regions_on_2015_labels_do_not_warn(tmp_path):
    # a BRATS 2015 LGG case has no enhancing tumour: its set still holds a 4 elsewhere
    root = _brats_folders(tmp_path, {"hgg": (2, 1, 4), "lgg": (2, 3)})
    result = evaluate(root / "pred", root / "ref", regions="brats", presets=(), surface=False)
    assert result.warnings == [] and result.settings["label_warnings"] == []


def test_brats2023_regions_on_labels_with_4_warn(tmp_path):
    root = _brats_folders(tmp_path, {"c0": (2, 1, 4)})
    result = evaluate(root / "pred", root / "ref", regions="brats2023", presets=(), surface=False)
    (warning,) = result.warnings
    assert warning.startswith("--regions brats2023: label(s) 4 belong to no region")
    assert "2 file(s)" in warning and "use --regions brats" in warning


# ------------------------------------------------------------------ 3. --empty-distance


def test_empty_distance_help_names_exactly_the_distances_it_sets(capsys):
    ref = np.zeros((8, 8, 8), bool)
    ref[2:5, 2:5, 2:5] = True
    metrics = evaluate_masks(
        np.zeros_like(ref), ref, 1.0, presets=("brats2023-metastases",), empty_distance=7.5
    )
    set_by_option = {k for k, v in metrics.items() if v == 7.5}
    assert set_by_option == {"hd_mm", "hd95_monai_mm", "assd_mm"}
    assert metrics["brats2023_metastases_lesion_hd95_mm"] == 374.0
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    help_text = text[text.rindex("--empty-distance MM") :][:500]  # not the usage line
    for name in ("hd_mm", "hd95_<variant>_mm", "assd_mm", "exactly one", "374"):
        assert name in help_text, name


# ------------------------------------------------------------------ 4. bad input


def test_no_case_in_common_says_how_files_pair(partial):
    _save(partial / "renamed" / "c0_pred.nii.gz", _tumour((1,)))
    with pytest.raises(LesionsegError, match="no case in common.*c0_pred.*c0, c1, c2"):
        evaluate(partial / "renamed", partial / "ref")


def test_help_of_missing_options(capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--missing-as-empty" in text and "--allow-missing" in text and "nnU-Net" in text


def test_dataset_reference_expects_the_split_that_was_predicted(msd_dataset, tmp_path):
    # `lesionseg predict` on a data set predicts its test split: training cases are not missing
    label = nib.load(str(msd_dataset / "labelsTr" / "case_000.nii.gz"))
    _save(msd_dataset / "labelsTs" / "case_002.nii.gz", np.asarray(label.dataobj), label.affine)
    _save(tmp_path / "test" / "case_002_seg.nii.gz", np.asarray(label.dataobj), label.affine)
    result = evaluate(tmp_path / "test", msd_dataset, presets=(), surface=False)
    assert result.settings["reference"].endswith("(test split)")
    assert result.settings["missing_predictions"] == {"test": []}
    assert result.settings["reference_cases"] == 1
    # predictions from both splits: every labelled case is expected
    _save(tmp_path / "test" / "case_000_seg.nii.gz", np.asarray(label.dataobj), label.affine)
    with pytest.raises(LesionsegError, match="1 of 3 reference cases have no prediction: case_001"):
        evaluate(tmp_path / "test", msd_dataset, presets=(), surface=False)
