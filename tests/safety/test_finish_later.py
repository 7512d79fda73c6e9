"""Interrupted work can be finished (point 7 of the safety issue)."""

from __future__ import annotations

import json

from lesionseg.cli.main import main
from lesionseg.data.ownership import TEMP_PREFIX
from tests.safety.builders import model_folder, msd


def test_predict_skip_existing_does_only_what_is_missing(tmp_path, capsys):
    ds = msd(tmp_path / "ds", n_train=1, n_test=3)
    model = model_folder(tmp_path / "model")
    out = tmp_path / "out"
    argv = ["predict", "-m", str(model), "-i", str(ds), "-o", str(out)]
    assert main(argv) == 0
    done = sorted(out.glob("*_seg.nii.gz"))
    assert len(done) == 3
    # a kill leaves one subject unwritten and a temporary file behind
    done[1].unlink()
    stale = out / f"{TEMP_PREFIX}case_002_seg.x1y2.nii.gz"
    stale.write_bytes(b"half-written")
    kept = {p: p.stat().st_mtime_ns for p in (done[0], done[2])}
    capsys.readouterr()
    assert main(argv) == 2  # without an option, existing outputs are not replaced
    assert "--skip-existing" in capsys.readouterr().err
    assert main(argv + ["--skip-existing"]) == 0
    assert "2 subject(s) done already" in capsys.readouterr().err
    assert done[1].is_file() and not stale.exists()
    assert {p: p.stat().st_mtime_ns for p in kept} == kept
    assert main(argv + ["--overwrite"]) == 0  # our own folder: replacing is allowed
    assert all(p.stat().st_mtime_ns != t for p, t in kept.items())


def test_train_that_failed_before_its_first_epoch_does_not_block_the_rerun(tmp_path, capsys):
    ds = msd(tmp_path / "ds", n_train=3, n_test=0)
    out = tmp_path / "model"
    base = ["train", "deepmedic-tiny", "-d", str(ds), "-o", str(out), "--quiet"]
    # a wrong device fails before anything is written
    assert main(base + ["--device", "cuda:7"]) == 2
    assert not out.exists()
    # a failure during the run (a bad data file) leaves a folder, but no checkpoint
    label = ds / "labelsTr" / "case_001.nii.gz"
    good = label.read_bytes()
    label.write_bytes(b"garbage")
    assert main(base + ["--device", "cpu"]) == 2
    assert "case_001" in capsys.readouterr().err
    assert out.is_dir() and not (out / "checkpoint.pt").exists()
    # the corrected rerun needs no --overwrite
    label.write_bytes(good)
    fast = ["--set", "train.epochs=1", "--set", "train.batches_per_epoch=1"]
    assert main(base + ["--device", "cpu", *fast]) == 0
    assert (out / "model.safetensors").is_file()
    assert json.loads((out / ".lesionseg.json").read_text())["kind"] == "model"
    # a finished model is never replaced without --overwrite
    assert main(base + ["--device", "cpu", *fast]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_skip_existing_redoes_a_case_a_kill_left_half_written(tmp_path, capsys):
    ds = msd(tmp_path / "ds", n_train=1, n_test=2)
    model = model_folder(tmp_path / "model")
    out = tmp_path / "out"
    argv = ["predict", "-m", str(model), "-i", str(ds), "-o", str(out), "--save-probabilities"]
    assert main(argv) == 0
    (out / "case_002_prob.nii.gz").unlink()  # killed between the label map and the maps
    assert main(argv + ["--skip-existing"]) == 0
    assert (out / "case_002_prob.nii.gz").is_file()
    assert "1 subject(s) done already" in capsys.readouterr().err
