"""Each bad input gives one clear line naming the file and the problem, exit 2, no output."""

import gzip
import json

import numpy as np
import pytest

from lesionseg.cli.main import main
from tests.conftest import write_nifti


def run_preprocess(dataset, out, capsys):
    code = main(["preprocess", str(dataset), "-o", str(out)])
    err = capsys.readouterr().err.strip()
    return code, err


def assert_clean_failure(code, err, out, *words):
    assert code == 2
    assert "Traceback" not in err
    # progress bars may precede it on stderr; the error itself is exactly one line
    errors = [line for line in err.replace("\r", "\n").splitlines() if "error:" in line]
    assert len(errors) == 1, err
    assert errors[0].lstrip().startswith("lesionseg preprocess: error:"), errors[0]
    for word in words:
        assert word in errors[0], (word, errors[0])
    # the output folder may hold only the marker that says lesionseg made it
    written = [p for p in out.rglob("*") if p.is_file()] if out.exists() else []
    assert [p.name for p in written] in ([], [".lesionseg.json"]), written


def image_path(root, case=0, channel=0, split="Tr"):
    return root / f"images{split}" / f"case_{case:03d}_{channel:04d}.nii.gz"


def only_case(root, case=0):
    """Keep one training case so that a failure is the first thing the run meets."""
    for path in list((root / "imagesTr").iterdir()) + list((root / "labelsTr").iterdir()):
        if f"case_{case:03d}" not in path.name:
            path.unlink()
    for path in (root / "imagesTs").iterdir():
        path.unlink()
    spec = json.loads((root / "dataset.json").read_text())
    spec["numTraining"] = 1
    (root / "dataset.json").write_text(json.dumps(spec))


def test_missing_file(msd_dataset, tmp_path, capsys):
    code = main(["info", str(tmp_path / "nope.nii.gz")])
    err = capsys.readouterr().err
    assert code == 2 and "nope.nii.gz" in err and "not found" in err


def test_not_nifti_garbage(msd_dataset, tmp_path, capsys):
    only_case(msd_dataset)
    path = image_path(msd_dataset)
    path.write_bytes(gzip.compress(b"this is not a nifti header" * 20))
    code, err = run_preprocess(msd_dataset, tmp_path / "out", capsys)
    assert_clean_failure(code, err, tmp_path / "out", path.name, "cannot read as NIfTI")


def test_truncated_gzip(msd_dataset, tmp_path, capsys):
    only_case(msd_dataset)
    path = image_path(msd_dataset)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    code, err = run_preprocess(msd_dataset, tmp_path / "out", capsys)
    assert_clean_failure(code, err, tmp_path / "out", path.name, "truncated")


def test_channels_differ_in_shape(msd_dataset, tmp_path, capsys):
    only_case(msd_dataset)
    path = image_path(msd_dataset, channel=1)
    write_nifti(path, np.ones((20, 24, 15), np.float32), np.diag([1.0, 1.2, 2.0, 1.0]))
    code, err = run_preprocess(msd_dataset, tmp_path / "out", capsys)
    assert_clean_failure(code, err, tmp_path / "out", path.name, "FLAIR image has shape")


def test_channels_differ_in_affine(msd_dataset, tmp_path, capsys):
    only_case(msd_dataset)
    path = image_path(msd_dataset, channel=1)
    write_nifti(path, np.ones((20, 24, 16), np.float32), np.diag([1.0, 1.2, 2.1, 1.0]))
    code, err = run_preprocess(msd_dataset, tmp_path / "out", capsys)
    assert_clean_failure(code, err, tmp_path / "out", path.name, "affine differs")


def test_label_on_another_grid(msd_dataset, tmp_path, capsys):
    only_case(msd_dataset)
    path = msd_dataset / "labelsTr" / "case_000.nii.gz"
    write_nifti(path, np.zeros((10, 12, 8), np.uint8), np.diag([2.0, 2.4, 4.0, 1.0]))
    code, err = run_preprocess(msd_dataset, tmp_path / "out", capsys)
    assert_clean_failure(code, err, tmp_path / "out", path.name, "label map has shape")


@pytest.mark.parametrize(
    "shape,words", [((20, 24, 16, 3), "expected a 3D volume"), ((20, 24), "2D")]
)
def test_wrong_dimensionality(msd_dataset, tmp_path, capsys, shape, words):
    only_case(msd_dataset)
    path = image_path(msd_dataset)
    write_nifti(path, np.ones(shape, np.float32))
    code, err = run_preprocess(msd_dataset, tmp_path / "out", capsys)
    assert_clean_failure(code, err, tmp_path / "out", path.name, words)


def test_nan_voxels(msd_dataset, tmp_path, capsys):
    only_case(msd_dataset)
    path = image_path(msd_dataset)
    data = np.ones((20, 24, 16), np.float32)
    data[3, 4, 5] = np.nan
    data[1, 1, 1] = np.inf
    write_nifti(path, data, np.diag([1.0, 1.2, 2.0, 1.0]))
    code, err = run_preprocess(msd_dataset, tmp_path / "out", capsys)
    assert_clean_failure(code, err, tmp_path / "out", path.name, "2 NaN or Inf")


def test_all_zero_image(msd_dataset, tmp_path, capsys):
    only_case(msd_dataset)
    path = image_path(msd_dataset)
    write_nifti(path, np.zeros((20, 24, 16), np.float32), np.diag([1.0, 1.2, 2.0, 1.0]))
    code, err = run_preprocess(msd_dataset, tmp_path / "out", capsys)
    assert_clean_failure(code, err, tmp_path / "out", path.name, "all zeros")


def test_empty_brain_mask(msd_dataset, tmp_path, capsys):
    only_case(msd_dataset)
    path = msd_dataset / "masksTr" / "case_000.nii.gz"
    write_nifti(path, np.zeros((20, 24, 16), np.uint8), np.diag([1.0, 1.2, 2.0, 1.0]))
    code, err = run_preprocess(msd_dataset, tmp_path / "out", capsys)
    assert_clean_failure(code, err, tmp_path / "out", path.name, "brain mask is empty")


def test_labels_outside_declared_set(msd_dataset, tmp_path, capsys):
    only_case(msd_dataset)
    path = msd_dataset / "labelsTr" / "case_000.nii.gz"
    label = np.zeros((20, 24, 16), np.uint8)
    label[5, 5, 5] = 3
    write_nifti(path, label, np.diag([1.0, 1.2, 2.0, 1.0]))
    code, err = run_preprocess(msd_dataset, tmp_path / "out", capsys)
    assert_clean_failure(code, err, tmp_path / "out", path.name, "outside the declared labels")


@pytest.mark.parametrize(
    "change,words",
    [
        ("missing_channel", "lacks channel file(s) 0001"),
        ("num_training", "numTraining is 5"),
        ("orphan_label", "label map has no images"),
        ("bad_json", "invalid JSON"),
        ("extra_channel", "declares only 2 channel(s)"),
    ],
)
def test_dataset_json_not_matching_files(msd_dataset, tmp_path, capsys, change, words):
    spec_path = msd_dataset / "dataset.json"
    spec = json.loads(spec_path.read_text())
    if change == "missing_channel":
        image_path(msd_dataset, case=1, channel=1).unlink()
    elif change == "num_training":
        spec["numTraining"] = 5
        spec_path.write_text(json.dumps(spec))
    elif change == "orphan_label":
        write_nifti(msd_dataset / "labelsTr" / "case_009.nii.gz", np.zeros((2, 2, 2), np.uint8))
    elif change == "bad_json":
        spec_path.write_text("{not json")
    elif change == "extra_channel":
        write_nifti(image_path(msd_dataset, case=0, channel=2), np.ones((2, 2, 2), np.float32))
    code, err = run_preprocess(msd_dataset, tmp_path / "out", capsys)
    assert_clean_failure(code, err, tmp_path / "out", words)


def test_internal_errors_are_one_line_unless_debug(msd_dataset, tmp_path, capsys, monkeypatch):
    import lesionseg.cli.commands.info as info

    def boom(args):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(info, "run", boom)
    code = main(["info", str(msd_dataset)])
    err = capsys.readouterr().err
    assert code == 1 and "kaboom" in err and "Traceback" not in err
    with pytest.raises(RuntimeError):
        main(["--debug", "info", str(msd_dataset)])
