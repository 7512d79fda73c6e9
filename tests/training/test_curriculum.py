"""Stages on one network: ``optimizer: continue`` keeps Adam's state; ``select`` per stage."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file

from lesionseg.training import load_recipe, train
from tests.training.conftest import (
    assert_equal_states,
    kill_when_checkpointed,
    record_slots,
    resume_in_subprocess,
)

TINY_MODEL = {"name": "deepmedic", "widths": [4, 4, 4, 4], "hidden": [8]}


def _recipe_data(second: dict, validation: dict | None = None) -> dict:
    return {
        "name": "curriculum",
        "model": TINY_MODEL,
        "sampler": {"name": "segments", "output_size": 6},
        "optimizer": {"name": "adam", "lr": 1e-3},
        "train": {"epochs": 2, "batch_size": 2, "batches_per_epoch": 3, "workers": 0},
        "validation": validation or {"every": 1, "cases": 1},
        "stages": [{"name": "easy", "epochs": 2}, {"name": "hard", "epochs": 2, **second}],
    }


def _recipe(tmp_path, second: dict, validation: dict | None = None):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(_recipe_data(second, validation)))
    return load_recipe(path)


def test_continue_keeps_adam_state_and_the_model_comes_from_the_last_stage(
    toy_dataset, tmp_path, monkeypatch
):
    seen = record_slots(monkeypatch)
    recipe = _recipe(tmp_path, {"optimizer": "continue", "loss": {"name": "focal"}})
    assert recipe.stages()[1]["continue_optimizer"] is True
    out = tmp_path / "m"
    train(recipe, toy_dataset, out, device="cpu", progress=False, cache=tmp_path / "c")
    end, start = seen["end:easy"], seen["start:hard"]
    assert end["optimizer"]["state"], "Adam has moments after stage 1"
    assert_equal_states(start, end)
    assert start["epochs_done"] == 2  # the schedule goes on where it was
    # selection is per stage: the kept model is the best of stage 2 (epochs 3-4)
    config = json.loads((out / "config.json").read_text())
    assert config["epoch"] in (3, 4)


def test_without_continue_a_stage_starts_a_fresh_optimiser(toy_dataset, tmp_path, monkeypatch):
    seen = record_slots(monkeypatch)
    recipe = _recipe(tmp_path, {"loss": {"name": "focal"}}, validation={"cases": 0})
    out = tmp_path / "m"
    train(recipe, toy_dataset, out, device="cpu", progress=False, cache=tmp_path / "c")
    assert seen["end:easy"]["optimizer"]["state"]
    assert seen["start:hard"]["optimizer"]["state"] == {}
    assert seen["start:hard"]["epochs_done"] == 0


def test_select_last_keeps_the_last_weights(toy_dataset, tmp_path):
    recipe = _recipe(tmp_path, {"select": "last"})
    out = tmp_path / "m"
    train(recipe, toy_dataset, out, device="cpu", progress=False, cache=tmp_path / "c")
    config = json.loads((out / "config.json").read_text())
    assert config["epoch"] == 4
    model, last = (load_file(str(f / "model.safetensors")) for f in (out, out / "last"))
    assert all(torch.equal(model[k], last[k]) for k in model)


def test_continue_needs_an_earlier_stage_of_the_network(tmp_path):
    data = _recipe_data({"network": "other", "optimizer": "continue"})
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(data))
    from lesionseg.errors import LesionsegError

    with pytest.raises(LesionsegError, match="stages\\[1\\].optimizer"):
        load_recipe(path)


def test_sigkill_in_a_continued_stage_then_resume_is_exact(toy_dataset, tmp_path):
    data = _recipe_data({"optimizer": "continue", "epochs": 3, "loss": {"name": "focal"}})
    data["train"]["batches_per_epoch"] = 12
    data["stages"][0]["epochs"] = 1
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(data))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    base = [sys.executable, "-m", "lesionseg", "train", str(recipe), "-d", str(toy_dataset)]
    common = ["--device", "cpu", "--quiet", "--cache", str(tmp_path / "cache")]
    full = subprocess.run(
        [*base, "-o", str(tmp_path / "full"), *common], env=env, capture_output=True, text=True
    )
    assert full.returncode == 0, full.stderr[-2000:]
    out = tmp_path / "killed"
    # stage 2 has done one epoch
    kill_when_checkpointed([*base, "-o", str(out), *common], env, out, 1, 1, settle=0.3)
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["stage"] == 1 and 1 <= state["epoch"] < 3
    # what a kill during a write leaves behind; the resumed run removes it
    stale = out / "last" / ".lesionseg-tmp-model.k1ll.safetensors"
    stale.parent.mkdir(exist_ok=True)
    stale.write_bytes(b"half-written")
    resume_in_subprocess(out, env)
    assert not stale.exists()
    for name in ("model.safetensors", "last/model.safetensors"):
        a, b = load_file(str(tmp_path / "full" / name)), load_file(str(out / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


def test_a_continued_poly_schedule_decays_over_the_whole_curriculum(toy_dataset, tmp_path):
    data = _recipe_data({"optimizer": "continue"}, validation={"cases": 0})
    data["schedule"] = {"name": "poly", "power": 1.0}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(data))
    result = train(path, toy_dataset, tmp_path / "m", device="cpu", progress=False)
    lrs = [row["lr"] for row in result.history]
    assert lrs == pytest.approx([1e-3 * (1 - e / 4) for e in range(4)])  # 4 epochs in all
    assert lrs[-1] > 0


@pytest.mark.parametrize("name", ["/tmp/x", "../up", ".hidden", "a/b", ""])
def test_stage_and_network_names_cannot_reach_outside(tmp_path, name):
    from lesionseg.errors import LesionsegError

    for key in ("network", "name"):
        data = _recipe_data({key: name})
        path = tmp_path / "r.yaml"
        path.write_text(yaml.safe_dump(data))
        with pytest.raises(LesionsegError, match="not a usable name"):
            load_recipe(path)


def test_a_recipe_may_give_in_channels():
    recipe = load_recipe("deepmedic-tiny").with_overrides({"model.in_channels": 2})
    assert recipe.stages()[0]["model"]["options"]["in_channels"] == 2
