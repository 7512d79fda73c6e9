"""Safety cases of ``lesionseg evaluate`` (point 9): bad inputs give one line and exit 2.

Missing, unreadable or mismatched predictions and references, a reference case without
a prediction (an error unless --missing-as-empty or --allow-missing), predictions that
pair with no reference case, and outputs in the way. Warnings that still evaluate (BraTS
label numbering, missing predictions with --allow-missing) are tested in
``tests/evaluation/test_eval_no_hidden_problems.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.conftest import write_nifti
from tests.safety.builders import AFFINE
from tests.safety.harness import Case

SHAPE = (10, 10, 8)
QUIET = ["--preset", "none", "--no-surface", "--quiet"]


def _lesion(shape=SHAPE, dtype=np.uint8) -> np.ndarray:
    data = np.zeros(shape, dtype)
    data[2:6, 3:7, 2:5] = 1
    return data


def _labels(folder: Path, cases=("c0", "c1"), suffix="", data=None, affine=AFFINE) -> Path:
    """Label maps ``<case><suffix>.nii.gz`` in ``folder`` (a box lesion unless ``data``)."""
    for case in cases:
        write_nifti(folder / f"{case}{suffix}.nii.gz", _lesion() if data is None else data, affine)
    return folder


def _evaluate(pred, ref, *extra) -> list[str]:
    return ["evaluate", "--pred", str(pred), "--ref", str(ref), *QUIET, *extra]


def _pred_folder_missing(work: Path, mp):
    return _evaluate(work / "nope", _labels(work / "ref")), None


def _ref_not_nifti(work: Path, mp):
    notes = work / "notes.txt"
    notes.write_text("not an image")
    return _evaluate(_labels(work / "pred", suffix="_seg"), notes), None


def _ref_corrupt(work: Path, mp):
    ref = work / "ref"
    ref.mkdir()
    (ref / "c0.nii.gz").write_bytes(b"this is no gzip stream")
    return _evaluate(_labels(work / "pred", cases=("c0",)), ref), None


def _ref_4d(work: Path, mp):
    ref = _labels(work / "ref", cases=("c0",), data=np.zeros((*SHAPE, 2), np.uint8))
    return _evaluate(_labels(work / "pred", cases=("c0",)), ref), None


def _ref_folder_empty(work: Path, mp):
    (work / "ref").mkdir()
    (work / "ref" / "readme.txt").write_text("labels go here")
    return _evaluate(_labels(work / "pred"), work / "ref"), None


def _pred_other_shape(work: Path, mp):
    pred = _labels(work / "pred", data=_lesion((10, 10, 6)))
    return _evaluate(pred, _labels(work / "ref")), None


def _pred_other_spacing(work: Path, mp):
    pred = _labels(work / "pred", affine=np.diag([2.0, 1.2, 2.0, 1.0]))
    return _evaluate(pred, _labels(work / "ref")), None


def _no_case_in_common(work: Path, mp):
    pred = _labels(work / "pred", suffix="_pred")  # c0_pred: case id "c0_pred"
    return _evaluate(pred, _labels(work / "ref")), None


def _missing_prediction(work: Path, mp):
    pred = _labels(work / "pred", cases=("c0",))
    return _evaluate(pred, _labels(work / "ref", cases=("c0", "c1", "c2"))), None


def _missing_prediction_second_method(work: Path, mp):
    ref = _labels(work / "ref")
    a, b = _labels(work / "a"), _labels(work / "b", cases=("c1",))
    argv = _evaluate(f"A={a}", ref, "--pred", f"B={b}")
    return argv, None


def _prediction_without_reference(work: Path, mp):
    pred = _labels(work / "pred", cases=("c0", "c1", "c9"))
    return _evaluate(pred, _labels(work / "ref")), None


def _probability_map(work: Path, mp):
    pred = _labels(work / "pred", data=np.full(SHAPE, 0.4, np.float32))
    return _evaluate(pred, _labels(work / "ref")), None


def _outputs_exist(work: Path, mp):
    out = work / "eval"
    out.mkdir()
    (out / "summary.md").write_text("an earlier evaluation")
    return _evaluate(_labels(work / "pred"), _labels(work / "ref"), "-o", str(out)), out


def _compare_unknown_method(work: Path, mp):
    argv = _evaluate(f"A={_labels(work / 'pred')}", _labels(work / "ref"), "--compare", "A", "Z")
    return argv, None


CASES: list[Case] = [
    Case("eval-pred-folder-missing", 9, _pred_folder_missing, ("nope", "prediction not found")),
    Case("eval-ref-not-nifti", 9, _ref_not_nifti, ("notes.txt", "not a NIfTI file")),
    Case("eval-ref-corrupt", 9, _ref_corrupt, ("c0.nii.gz", "corrupt")),
    Case("eval-ref-4d", 9, _ref_4d, ("c0.nii.gz", "3D")),
    Case("eval-ref-folder-empty", 9, _ref_folder_empty, ("ref", "no NIfTI reference files")),
    Case("eval-pred-other-shape", 9, _pred_other_shape, ("c0.nii.gz", "grid", "--resample")),
    Case("eval-pred-other-spacing", 9, _pred_other_spacing, ("c0.nii.gz", "grid", "--resample")),
    Case("eval-no-case-in-common", 9, _no_case_in_common, ("no case in common", "c0_pred")),
    Case(
        "eval-missing-prediction",
        9,
        _missing_prediction,
        ("c1, c2", "2 of 3 reference cases", "--missing-as-empty", "--allow-missing"),
    ),
    Case(
        "eval-missing-prediction-second-method",
        9,
        _missing_prediction_second_method,
        ("'B'", "c0", "--missing-as-empty"),
    ),
    Case(
        "eval-prediction-without-reference",
        9,
        _prediction_without_reference,
        ("c9", "without a reference"),
    ),
    Case("eval-probability-map", 9, _probability_map, ("c0.nii.gz", "non-integer")),
    Case("eval-outputs-exist", 9, _outputs_exist, ("summary.md", "--overwrite")),
    Case("eval-compare-unknown-method", 9, _compare_unknown_method, ("--compare", "'Z'")),
]
