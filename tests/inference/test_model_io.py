"""Saving and loading trained models: safetensors + JSON, never pickle."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from lesionseg.errors import LesionsegError
from lesionseg.models.deepmedic import DeepMedic
from lesionseg.models.io import load_model, save_model

OPTIONS = {"widths": [2, 2, 3, 3, 3, 3, 4, 4], "hidden": [5, 5], "residual": True}


def config():
    return {
        "recipe": {"model": {"name": "deepmedic", **OPTIONS}, "predict": {"postprocess": []}},
        "channel_names": ["T1", "FLAIR"],
        "labels": {0: "background", 1: "lesion", 2: "edema"},
        "preprocess": {"crop_margin": 4},
    }


def trained_model():
    torch.manual_seed(0)
    model = DeepMedic(2, 3, **OPTIONS)
    model.train()
    model(torch.randn(2, 2, 57, 57, 57))  # update BN running statistics
    return model.eval()


def test_round_trip_gives_identical_outputs(tmp_path):
    model = trained_model()
    folder = save_model(model, config(), tmp_path / "m")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    saved = json.loads((folder / "config.json").read_text())
    assert saved["lesionseg_version"] and saved["labels"] == {
        "0": "background",
        "1": "lesion",
        "2": "edema",
    }
    # A plain safetensors file holding the state dict (BN statistics included).
    assert "normal.layers.1.norm.running_var" in load_file(str(folder / "model.safetensors"))
    loaded, cfg = load_model(folder)
    assert not loaded.training and cfg["channel_names"] == ["T1", "FLAIR"]
    x = torch.randn(1, 2, 60, 60, 60)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_no_silent_overwrite(tmp_path):
    model = trained_model()
    save_model(model, config(), tmp_path / "m")
    with pytest.raises(LesionsegError, match="overwrite"):
        save_model(model, config(), tmp_path / "m")
    save_model(model, config(), tmp_path / "m", overwrite=True)


def test_clear_errors_for_bad_folders(tmp_path):
    with pytest.raises(LesionsegError, match="not found"):
        load_model(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LesionsegError, match="config.json"):
        load_model(tmp_path / "empty")
    folder = save_model(trained_model(), config(), tmp_path / "m")
    (folder / "model.safetensors").write_bytes(b"\x80\x04 not a safetensors file")
    with pytest.raises(LesionsegError, match="weights"):
        load_model(folder)
    (folder / "config.json").write_text("{broken")
    with pytest.raises(LesionsegError, match="JSON"):
        load_model(folder)


def test_weights_that_do_not_fit_the_config(tmp_path):
    folder = save_model(trained_model(), config(), tmp_path / "m")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["recipe"]["model"]["hidden"] = [7, 7]
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(LesionsegError, match="do not match"):
        load_model(folder)
    cfg["recipe"]["model"] = {"name": "no-such-net"}
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(LesionsegError, match="unknown model"):
        load_model(folder)
