"""Safety cases about outputs: what --overwrite may replace, where outputs may go, model folders.

Points 2 (--overwrite never replaces what lesionseg did not write), 3 (a model folder never
runs code), 4 (NaN weights), 5 (outputs in the way, bad config.json, checkpoint and recipe
files) and 8 (outputs never inside the inputs).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.safety.builders import model_folder, msd, run_folder
from tests.safety.harness import Case

EVIL = "from pathlib import Path\nPath(__file__).with_name('PWNED').write_text('ran')\n"


def _train_over_dataset(work: Path, mp):
    ds = msd(work / "ds")
    return ["train", "deepmedic-tiny", "-d", str(ds), "-o", str(ds), "--overwrite"], None


def _train_over_dataset_parent(work: Path, mp):
    ds = msd(work / "data" / "ds")
    return ["train", "deepmedic-tiny", "-d", str(ds), "-o", str(work / "data"), "--overwrite"], None


def _train_over_user_folder(work: Path, mp):
    ds = msd(work / "ds")
    mine = work / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my thesis")
    return ["train", "deepmedic-tiny", "-d", str(ds), "-o", str(mine), "--overwrite"], None


def _train_over_cache(work: Path, mp):
    ds = msd(work / "ds")
    cache = work / "cache"
    cache.mkdir()
    (cache / "cache.json").write_text(json.dumps({"format": 1}))
    argv = ["train", "deepmedic-tiny", "-d", str(ds), "-o", str(cache), "--overwrite"]
    return argv + ["--cache", str(cache)], None


def _synth_over_user_data(work: Path, mp):
    ds = msd(work / "ds")
    return ["synth", "ms", "-o", str(ds), "--subjects", "1", "--overwrite"], None


def _preprocess_into_dataset(work: Path, mp):
    ds = msd(work / "ds")
    return ["preprocess", str(ds), "-o", str(ds)], None


def _preprocess_into_images(work: Path, mp):
    ds = msd(work / "ds")
    return ["preprocess", str(ds), "-o", str(ds / "imagesTr" / "cache")], None


def _predict_into(sub: str):
    def setup(work: Path, mp):
        ds = msd(work / "ds")
        model = model_folder(work / "model")
        return ["predict", "-m", str(model), "-i", str(ds), "-o", str(ds / sub)], None

    return setup


def _predict_into_case_folder(work: Path, mp):
    ds = msd(work / "ds")
    model = model_folder(work / "model")
    folder = ds / "imagesTs"
    return ["predict", "-m", str(model), "-i", str(folder), "-o", str(folder)], None


def _predict_overwrite_foreign(work: Path, mp):
    ds = msd(work / "ds")
    model = model_folder(work / "model")
    out = work / "results"
    out.mkdir()
    (out / "case_002_seg.nii.gz").write_bytes(b"the user's own segmentation")
    argv = ["predict", "-m", str(model), "-i", str(ds), "-o", str(out), "--overwrite"]
    return argv, None


def _output_is_file(command: str):
    def setup(work: Path, mp):
        ds = msd(work / "ds")
        target = work / "a_file"
        target.write_text("not a folder")
        argv = {
            "train": ["train", "deepmedic-tiny", "-d", str(ds), "-o", str(target)],
            "preprocess": ["preprocess", str(ds), "-o", str(target)],
            "synth": ["synth", "ms", "-o", str(target), "--subjects", "1"],
            "predict": ["predict", "-m", str(model_folder(work / "m")), "-i", str(ds)]
            + ["-o", str(target)],
        }[command]
        return argv, None

    return setup


def _describe_evil(work: Path, mp):
    (work / "evilmod.py").write_text(EVIL)
    mp.syspath_prepend(str(work))

    def add_import(config):
        config["recipe"]["imports"] = ["evilmod"]
        return config

    model = model_folder(work / "model", config_edit=add_import)
    return ["describe", str(model)], None


def _resume_evil(work: Path, mp):
    from lesionseg.training.recipe import load_recipe

    (work / "evilmod.py").write_text(EVIL)
    mp.syspath_prepend(str(work))
    ds = msd(work / "ds")
    text = "imports: [evilmod]\n" + load_recipe("deepmedic-tiny").to_yaml()
    folder = run_folder(work / "run", ds, recipe_text=text)
    return ["train", "--resume", str(folder)], None


def _recipe_with_evil_import(work: Path, mp):
    from lesionseg.training.recipe import load_recipe

    (work / "evilmod.py").write_text(EVIL)
    mp.syspath_prepend(str(work))
    ds = msd(work / "ds")
    recipe = work / "r.yaml"
    recipe.write_text("imports: [evilmod]\n" + load_recipe("deepmedic-tiny").to_yaml())
    return ["train", str(recipe), "-d", str(ds), "-o", str(work / "out")], work / "out"


def _predict_with_config(edit):
    def setup(work: Path, mp):
        ds = msd(work / "ds")
        model = model_folder(work / "model", config_edit=edit)
        return ["predict", "-m", str(model), "-i", str(ds), "-o", str(work / "out")], work / "out"

    return setup


def _set(key, value):
    def edit(config):
        config[key] = value
        return config

    return edit


def _nan_weights(work: Path, mp):
    import torch

    def poison(state):
        name = next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 1)
        state[name] = state[name].clone()
        state[name].view(-1)[0] = float("nan")
        return state

    ds = msd(work / "ds")
    model = model_folder(work / "model", weights_edit=poison)
    assert torch.is_tensor(next(iter(poison({"w": torch.ones(2)}).values())))
    return ["predict", "-m", str(model), "-i", str(ds), "-o", str(work / "out")], work / "out"


def _resume_with(recipe_text=None, checkpoint=None, run_json=None):
    def setup(work: Path, mp):
        ds = msd(work / "ds")
        folder = run_folder(work / "run", ds, recipe_text=recipe_text, checkpoint=checkpoint)
        if run_json is not None:
            (folder / "run.json").write_text(run_json)
        return ["train", "--resume", str(folder)], None

    return setup


def _checkpoint_of_wrong_kind() -> bytes:
    import io

    import torch

    stream = io.BytesIO()
    torch.save({"format": 1, "stage": "x"}, stream)
    return stream.getvalue()


def _mount(where: Path, options: str) -> None:
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], check=True)


def _on_small_disk(command: str, name: str, options: str):
    """A command whose output goes to a tmpfs mounted with ``options`` (full, read-only)."""

    def setup(work: Path, mp):
        ds = msd(work / "ds")
        disk = work / name
        _mount(disk, options)
        argv = {
            "preprocess": ["preprocess", str(ds), "-o", str(disk / "cache")],
            "predict": ["predict", "-m", str(model_folder(work / "m")), "-i", str(ds)]
            + ["-o", str(disk / "out"), "--save-probabilities"],
            "train": ["train", "deepmedic-tiny", "-d", str(ds), "-o", str(disk / "model")],
            "synth": ["synth", "ms", "-o", str(disk / "ph"), "--subjects", "1"],
        }[command]
        return argv, disk

    return setup


def _train_bad_device(work: Path, mp):
    ds = msd(work / "ds")
    return [
        "train",
        "deepmedic-tiny",
        "-d",
        str(ds),
        "-o",
        str(work / "m"),
        "--device",
        "cuda:7",
    ], None


def _predict_both_modes(work: Path, mp):
    ds = msd(work / "ds")
    model = model_folder(work / "model")
    argv = ["predict", "-m", str(model), "-i", str(ds), "-o", str(work / "out")]
    return argv + ["--overwrite", "--skip-existing"], None


CASES = [
    Case("out-train-bad-device-writes-nothing", 7, _train_bad_device, ("--device cuda:7",)),
    Case("out-predict-overwrite-and-skip", 7, _predict_both_modes, ("--skip-existing",)),
    Case("out-train-over-dataset", 2, _train_over_dataset, ("-o", "holds the input")),
    Case("out-train-over-dataset-parent", 2, _train_over_dataset_parent, ("holds the input",)),
    Case("out-train-over-user-folder", 2, _train_over_user_folder, ("not written by lesionseg",)),
    Case("out-train-over-cache", 2, _train_over_cache, ("holds the input",)),
    Case("out-synth-over-user-data", 2, _synth_over_user_data, ("not written by lesionseg",)),
    Case("out-preprocess-into-dataset", 2, _preprocess_into_dataset, ("holds the input",)),
    Case("out-preprocess-into-images", 8, _preprocess_into_images, ("imagesTr", "read as an")),
    Case("out-predict-into-imagesTs", 8, _predict_into("imagesTs"), ("imagesTs", "read as an")),
    Case("out-predict-into-imagesTr", 8, _predict_into("imagesTr/x"), ("imagesTr", "read as")),
    Case("out-predict-into-case-folder", 8, _predict_into_case_folder, ("holds the input",)),
    Case("out-predict-overwrite-foreign", 2, _predict_overwrite_foreign, ("case_002_seg", "did")),
    *[
        Case(f"out-{cmd}-output-is-file", 5, _output_is_file(cmd), ("a_file", "existing file"))
        for cmd in ("train", "preprocess", "synth", "predict")
    ],
    Case("out-describe-model-imports", 3, _describe_evil, ("config.json", "imports")),
    Case("out-resume-recipe-imports", 3, _resume_evil, ("recipe.yaml", "imports")),
    Case("out-train-recipe-imports", 3, _recipe_with_evil_import, ("imports", "entry-point")),
    Case(
        "out-config-channels-string",
        5,
        _predict_with_config(_set("channel_names", "T1")),
        ("config.json", "channel_names"),
    ),  # fmt: skip
    Case(
        "out-config-labels-list",
        5,
        _predict_with_config(_set("labels", ["bg", "lesion"])),
        ("config.json", "labels"),
    ),  # fmt: skip
    Case(
        "out-config-slice-axis",
        5,
        _predict_with_config(_set("slice_axis", "z")),
        ("config.json", "slice_axis"),
    ),  # fmt: skip
    Case(
        "out-config-duplicate-channels",
        5,
        _predict_with_config(_set("channel_names", ["T1", "T1"])),
        ("config.json", "twice"),
    ),  # fmt: skip
    Case(
        "out-config-recipe-model",
        5,
        _predict_with_config(_set("recipe", {"model": 3})),
        ("config.json", "model"),
    ),  # fmt: skip
    Case("out-nan-weights", 4, _nan_weights, ("model.safetensors", "NaN")),
    Case(
        "out-resume-garbage-checkpoint",
        5,
        _resume_with(checkpoint=b"\x00garbage" * 50),
        ("checkpoint.pt", "cannot read"),
    ),  # fmt: skip
    Case(
        "out-resume-wrong-checkpoint",
        5,
        _resume_with(checkpoint=_checkpoint_of_wrong_kind()),
        ("checkpoint.pt",),
    ),  # fmt: skip
    Case(
        "out-resume-recipe-not-yaml",
        5,
        _resume_with(recipe_text="model: [unclosed\n"),
        ("recipe.yaml", "cannot read"),
    ),  # fmt: skip
    Case(
        "out-resume-recipe-list",
        5,
        _resume_with(recipe_text="- 1\n- 2\n"),
        ("recipe.yaml", "mapping"),
    ),  # fmt: skip
    Case(
        "out-resume-recipe-unknown",
        5,
        _resume_with(recipe_text="bogus: 1\nmodel: {}\n"),
        ("recipe.yaml", "bogus"),
    ),  # fmt: skip
    Case(
        "out-resume-run-json", 5, _resume_with(run_json='{"dataset": 1, "nope": 2}'), ("run.json",)
    ),  # fmt: skip
    *[
        Case(
            f"out-{cmd}-read-only-disk",
            5,
            _on_small_disk(cmd, "ro", "size=1m,ro"),
            ("ro", "read-only"),
        )
        for cmd in ("preprocess", "predict", "train", "synth")
    ],
    *[
        Case(
            f"out-{cmd}-full-disk",
            5,
            _on_small_disk(cmd, "disk", "size=12k"),
            ("no space left", "needs about"),
        )
        for cmd in ("preprocess", "predict")
    ],
]
