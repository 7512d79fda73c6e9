import pytest
import yaml

from lesionseg.errors import LesionsegError
from lesionseg.training.recipe import available_recipes, load_recipe, recipe_from_dict


def _write(tmp_path, data):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


BASE = {
    "model": {"name": "deepmedic", "widths": [4, 4], "hidden": [8]},
    "sampler": {"name": "segments", "output_size": 3},
}


def test_packaged_recipes_keep_paper_values():
    assert {"deepmedic-paper", "deepmedic-tiny"} <= set(available_recipes())
    r = load_recipe("deepmedic-paper")
    stage = r.stages()[0]
    assert r.data["model"]["options"]["widths"] == [30, 30, 40, 40, 40, 40, 50, 50]
    assert stage["optimizer"] == {
        "name": "rmsprop-nesterov",
        "lr": 1e-3,
        "rho": 0.9,
        "eps": 1e-4,
        "momentum": 0.6,
        "nesterov": True,
        "normalized": True,
    }
    assert (stage["batch_size"], stage["l1"], stage["l2"]) == (10, 1e-6, 1e-4)
    assert stage["sampler"]["output_size"] == [9, 9, 9]
    assert r.data["validation"]["every"] == 5


def test_defaults_stages_and_overrides(tmp_path):
    data = dict(
        BASE,
        stages=[
            {"name": "a", "epochs": 2},
            {"name": "b", "sampler": {"augment_probability": 0.5}, "loss": {"name": "focal"}},
            {"name": "c", "network": "second", "optimizer": {"name": "sgd", "lr": 0.1}},
        ],
    )
    r = load_recipe(_write(tmp_path, data))
    a, b, c = r.stages()
    assert a["epochs"] == 2 and b["epochs"] == 10  # train default
    assert b["sampler"]["output_size"] == 3 and b["sampler"]["augment_probability"] == 0.5
    assert b["loss"] == {"name": "focal"} and a["loss"] == {"name": "cross_entropy"}
    assert c["network"] == "second" and c["optimizer"] == {"name": "sgd", "lr": 0.1}
    again = recipe_from_dict(r.resolved())  # resolving is idempotent
    assert again.data == r.data
    more = r.with_overrides({"train.epochs": 1, "sampler.output_size": 6})
    assert [s["epochs"] for s in more.stages()] == [1, 1, 1]
    assert [s["sampler"]["output_size"] for s in more.stages()] == [6, 6, 6]


@pytest.mark.parametrize(
    "change, key",
    [
        ({"sampler": None}, "sampler"),
        ({"modle": {}}, "modle"),
        ({"train": {"epoch": 3}}, "train.epoch"),
        ({"stages": [{"name": "x", "epochs": 0}]}, "stages[0].epochs"),
        (
            {"stages": [{"name": "x", "optimizer": {"name": "adam", "lrr": 1}}]},
            "stages[0].optimizer.lrr",
        ),
        ({"optimizer": {"name": "adamm"}}, "adamm"),
        (
            {"sampler": {"name": "segments", "output_size": 3, "foreground": 0.5}},
            "stages[0].sampler.foreground",
        ),
        (
            {"sampler": {"name": "segments", "output_size": 3, "augment": [{"name": "flipp"}]}},
            "flipp",
        ),
        ({"model": {"name": "deepmedic", "widths": "wide"}}, "model"),
        ({"validation": {"every": 0}}, "validation.every"),
        ({"validation": {"metric": "accuracy"}}, "validation.metric"),
        ({"validation": {"everyy": 2}}, "validation.everyy"),
        ({"validation": {"examples": 0}}, "validation.examples"),
        ({"predict": {"grpah": "main"}}, "predict.grpah"),
        ({"predict": {"variants": {"v": {"graph": "nope"}}}}, "predict.variants.v.graph"),
        ({"predict": {"variants": {"v": {"tile": 3}}}}, "predict.variants.v.tile"),
        (
            {"predict": {"variants": {"v": {"postprocess": [{"name": "thresh"}]}}}},
            "predict.variants.v.postprocess[0]",
        ),
        (
            {"predict": {"graph": {"combine": "within", "rule": "lesion", "inputs": ["main"]}}},
            "predict.graph",
        ),
        (
            {"predict": {"graph": {"combine": "gate", "inputs": ["main"]}}},
            "predict.graph.inputs",
        ),
        ({"stages": [{"name": "x", "sampler": {"subjects": []}}]}, "stages[0].sampler.subjects"),
        ({"channels": []}, "channels"),
        ({"channels": ["DWI", "DWI"]}, "channels"),
        ({"channels": {"DWI": 0}}, "channels"),
        ({"expects": {"channels": 0}}, "expects.channels"),
        ({"expects": {"classes": 1}}, "expects.classes"),
        ({"expects": {"modalities": 4}}, "expects"),
    ],
)
def test_errors_name_the_key(tmp_path, change, key):
    data = {**BASE, **change}
    data = {k: v for k, v in data.items() if v is not None}
    with pytest.raises(LesionsegError) as err:
        load_recipe(_write(tmp_path, data))
    assert key in str(err.value)
    assert "\n" not in str(err.value)


def test_msseg_recipes_keep_the_papers_values():
    r = load_recipe("msseg-paper")
    first, maps, second = r.stages()
    assert r.data["model"]["options"]["widths"] == [32, 64]
    assert (first["epochs"], second["epochs"]) == (50, 2000)
    assert second["early_stopping"]["patience"] == 50
    assert first["optimizer"] == {"name": "adam", "lr": 1e-4}
    assert first["batch_size"] == 4096 and first["sampler"]["holdout"] == 0.25
    assert second["sampler"]["negatives"] == "first-maps > 0.5 and brain and not lesion"
    assert maps["kind"] == "predict" and r.data["validation"]["metric"] == "loss"
    assert set(r.data["predict"]["variants"]) == {"gated", "first-only"}
    assert load_recipe("msseg-tiny").data["predict"]["graph"] == r.data["predict"]["graph"]


@pytest.mark.parametrize(
    "name, depth, size",
    [
        ("brainsegnet-brats", 12, 128),
        ("brainsegnet-isles", 7, 96),
        ("brainsegnet-brats-tiny", 6, 48),
        ("brainsegnet-isles-tiny", 7, 48),
    ],
)
def test_brainsegnet_recipes_are_the_three_stage_curriculum(name, depth, size):
    r = load_recipe(name)
    stages = r.stages()
    assert [s["sampler"]["augment_probability"] for s in stages] == [0.0, 0.5, 0.75]
    assert [s["loss"]["name"] for s in stages] == ["cross_entropy", "cross_entropy", "focal"]
    assert [s["continue_optimizer"] for s in stages] == [False, True, True]
    assert {s["select"] for s in stages} == {"last"}
    assert len({s["epochs"] for s in stages}) == 1  # stages of equal length
    assert (stages[0]["sampler"]["depth"], stages[0]["sampler"]["size"]) == (depth, size)
    if not name.endswith("tiny"):
        assert stages[0]["optimizer"] == {"name": "adam", "lr": 1e-4}
        assert stages[0]["batch_size"] == 40 and stages[0]["epochs"] == 500


def test_missing_recipe_lists_packaged_ones():
    with pytest.raises(LesionsegError, match="deepmedic-tiny"):
        load_recipe("no-such-recipe")


def test_recipe_channels_select_and_order_the_data_sets_channels(tmp_path):
    from lesionseg.data.dataset import Dataset, Subject

    assert load_recipe(_write(tmp_path, BASE)).data["channels"] is None
    assert load_recipe(_write(tmp_path, {**BASE, "channels": "DWI"})).data["channels"] == ["DWI"]
    files = {n: tmp_path / f"s_{n}.nii.gz" for n in ("DWI", "ADC")}
    data = Dataset("d", ["DWI", "ADC"], {0: "bg", 1: "lesion"}, [Subject("s", files)], tmp_path)
    picked = data.select_channels(["ADC", "DWI"])
    assert picked.channel_names == ["ADC", "DWI"]
    assert list(picked.subjects[0].channels) == ["ADC", "DWI"]
    assert data.select_channels(["DWI"]).subjects[0].channels == {"DWI": files["DWI"]}
    assert data.channel_names == ["DWI", "ADC"]  # the data set itself is unchanged
    with pytest.raises(LesionsegError, match="no channel 'T2'.*has DWI, ADC"):
        data.select_channels(["T2"])
