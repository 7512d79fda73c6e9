"""Stages, validation, best/last models and early stopping through the Python API."""

import json

import yaml
from safetensors.torch import load_file

from lesionseg.training import load_recipe, train

TINY_MODEL = {"name": "deepmedic", "widths": [4, 4, 4, 4], "hidden": [8]}


def _recipe(tmp_path, **extra):
    data = {
        "name": "t",
        "model": TINY_MODEL,
        "sampler": {"name": "segments", "output_size": 6},
        "train": {"epochs": 2, "batch_size": 2, "batches_per_epoch": 2, "workers": 0},
        "validation": {"every": 1, "cases": 1},
        **extra,
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_recipe(path)


def test_validation_best_model_and_early_stopping(toy_dataset, tmp_path):
    recipe = _recipe(
        tmp_path,
        stages=[{"name": "only", "epochs": 6, "early_stopping": {"patience": 1, "min_delta": 1.0}}],
    )
    out = tmp_path / "m"
    result = train(recipe, toy_dataset, out, device="cpu", progress=False, cache=tmp_path / "c")
    # min_delta 1 makes every validation after the first "no improvement": stop after epoch 2
    assert result.epochs == 2
    assert [r["val_dice"] is not None for r in result.history] == [True, True]
    config = json.loads((out / "config.json").read_text())
    assert config["epoch"] == 1 and config["validation_dice"] == result.history[0]["val_dice"]
    assert result.best_dice == result.history[0]["val_dice"]
    assert (out / "last" / "model.safetensors").is_file()
    split = json.loads((out / "splits.json").read_text())["split"]
    assert len(split["validation"]) == 1 and len(split["train"]) == 3


def test_stages_share_or_build_networks(toy_dataset, tmp_path):
    recipe = _recipe(
        tmp_path,
        validation={"cases": 0},
        stages=[
            {"name": "first", "epochs": 1},
            {
                "name": "second",
                "epochs": 1,
                "sampler": {"augment_probability": 0.5, "augment": [{"name": "flip"}]},
                "loss": {"name": "focal"},
            },
            {
                "name": "other",
                "network": "b",
                "epochs": 1,
                "optimizer": {"name": "sgd", "lr": 0.01},
                "model": {**TINY_MODEL, "widths": [4, 4]},
            },
        ],
    )
    out = tmp_path / "s"
    result = train(
        recipe,
        toy_dataset,
        out,
        device="cpu",
        progress=False,
        cache=tmp_path / "c",
        fold=1,
        folds=2,
    )
    assert [r["stage"] for r in result.history] == ["first", "second", "other"]
    assert [r["network"] for r in result.history] == ["main", "main", "b"]
    # the final stage's network is the folder's model; the other one sits in networks/
    assert "normal.layers.3.conv.weight" not in load_file(str(out / "model.safetensors"))
    main = load_file(str(out / "networks" / "main" / "model.safetensors"))
    assert "normal.layers.3.conv.weight" in main
    split = json.loads((out / "splits.json").read_text())
    assert split["fold"] == 1 and len(split["all_folds"]) == 2
    assert split["split"] == split["all_folds"][1]
