"""``lesionseg report`` end to end on phantoms, and its errors."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest

from lesionseg.cli.main import main


@pytest.fixture(scope="module")
def predictions(tmp_path_factory):
    """Two ``ms`` phantoms at 3 mm and "predictions" that are their reference labels."""
    root = tmp_path_factory.mktemp("report")
    data = root / "data"
    argv = ["synth", "ms", "-o", str(data), "--subjects", "4", "--spacing", "3", "--quiet"]
    assert main([*argv, "--test-fraction", "0.5"]) == 0
    pred = root / "pred"
    pred.mkdir()
    for label in sorted((data / "labelsTs").glob("*.nii.gz")):
        shutil.copy(label, pred / label.name.replace(".nii.gz", "_seg.nii.gz"))
    return root, data, pred


def test_report_writes_tables_pages_and_summary(predictions, capsys):
    import nibabel as nib
    from scipy import ndimage

    root, data, pred = predictions
    out = root / "rep"
    argv = ["report", str(pred), "-i", str(data), "-o", str(out), "--registration", "affine"]
    assert main([*argv, "--no-viewer"]) == 0
    assert "2 case(s)" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cases"] == 2
    total = 0
    for row in summary["per_case"]:
        label = np.asarray(nib.load(str(data / "labelsTs" / f"{row['case']}.nii.gz")).dataobj)
        _, count = ndimage.label(label > 0, np.ones((3, 3, 3)))
        assert row["lesions"] == count
        counted = sum(
            row[f"{c}_count"]
            for c in ("periventricular", "juxtacortical", "infratentorial", "subcortical")
        )
        assert counted == count
        lines = (out / f"{row['case']}_lesions.csv").read_text().splitlines()
        assert len(list(csv.DictReader(lines[1:]))) == count
        assert (out / f"{row['case']}.html").is_file()
        total += count
    every = list(csv.DictReader((out / "lesions.csv").read_text().splitlines()))
    assert len(every) == total == summary["lesions"]
    index = (out / "index.html").read_text()
    assert all(f'href="{row["case"]}.html"' in index for row in summary["per_case"])


def test_registration_is_reproducible(predictions):
    root, data, pred = predictions
    outputs = []
    for name in ("a", "b"):
        out = root / f"again-{name}"
        argv = ["report", str(pred), "-i", str(data), "-o", str(out), "--registration", "affine"]
        assert main([*argv, "--no-viewer", "--quiet"]) == 0
        outputs.append(sorted(out.glob("*_lesions.json")))
    for first, second in zip(*outputs):
        a, b = (json.loads(p.read_text()) for p in (first, second))
        assert [les["location"] for les in a["lesions"]] == [
            les["location"] for les in b["lesions"]
        ]
        # one thread, a fixed sampling seed: bit-identical, not just close
        for key in ("brain_dice", "metric"):
            assert a["locations"]["registration"][key] == b["locations"]["registration"][key]


def test_without_images_no_locations(predictions):
    root, _, pred = predictions
    out = root / "plain"
    assert main(["report", str(pred), "-o", str(out), "--no-viewer", "--quiet"]) == 0
    table = json.loads(next(out.glob("*_lesions.json")).read_text())
    assert table["locations"] is None
    assert all(les["location"] is None for les in table["lesions"])
    assert "by_location" not in table["totals"]


@pytest.mark.parametrize(
    "options, message",
    [
        (["--channel", "DWI"], "--channel DWI: subject"),
        (["--min-size", "0"], "--min-size must be at least 1"),
    ],
)
def test_bad_options_are_one_line(predictions, capsys, options, message):
    root, data, pred = predictions
    out = root / "bad"
    code = main(["report", str(pred), "-i", str(data), "-o", str(out), *options])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_a_missing_folder_and_an_output_in_the_way(predictions, capsys, tmp_path):
    root, _, pred = predictions
    assert main(["report", str(tmp_path / "none"), "-o", str(tmp_path / "r")]) == 2
    assert "not a folder of predictions" in capsys.readouterr().err
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    assert main(["report", str(pred), "-o", str(busy), "--no-viewer"]) == 2
    assert (busy / "notes.txt").read_text() == "mine"
    # the predictions themselves can never be the output
    assert main(["report", str(pred), "-o", str(pred), "--overwrite"]) == 2
