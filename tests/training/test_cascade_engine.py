"""A toy two-network cascade through the engine: train, store, mine negatives, predict p1·p2."""

from __future__ import annotations

import hashlib
import json

import nibabel as nib
import numpy as np
import pytest
import yaml

from lesionseg.cli.main import main
from lesionseg.data.dataset import load_dataset
from lesionseg.inference.predictor import predict_volume
from lesionseg.models.io import load_model
from lesionseg.preprocess import PreprocessConfig, open_cache, preprocess_subject
from lesionseg.sampling import CandidateSampler

TINY_MODEL = {"name": "deepmedic", "widths": [4, 4, 4, 4], "hidden": [8]}
NEGATIVES = "first-maps > 0.5 and not lesion"

RECIPE = {
    "name": "toy-cascade",
    "model": TINY_MODEL,
    "sampler": {"name": "segments", "output_size": 6},
    "optimizer": {"name": "adam", "lr": 3e-3},
    "train": {"epochs": 2, "batch_size": 4, "batches_per_epoch": 4, "workers": 0},
    "validation": {"every": 1, "cases": 1},
    "stages": [
        # min_delta 1: only the first validation counts as an improvement, so the selected
        # weights (epoch 1) differ from the last ones (epoch 2, then early stopping)
        {
            "name": "first",
            "network": "first",
            "epochs": 3,
            "early_stopping": {"patience": 1, "min_delta": 1.0},
        },
        {"name": "first-maps", "predict": "first"},
        {
            "name": "second",
            "network": "second",
            "sampler": {
                "name": "candidates",
                "output_size": 6,
                "positives": "lesion",
                "negatives": NEGATIVES,
            },
        },
    ],
    "predict": {"graph": {"combine": "product", "inputs": ["first", "second"]}},
}


@pytest.fixture(scope="module")
def cascade(toy_dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("cascade")
    recipe = root / "toy-cascade.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE))
    out, cache = root / "model", root / "cache"
    argv = ["train", str(recipe), "-d", str(toy_dataset), "-o", str(out), "--cache", str(cache)]
    assert main([*argv, "--device", "cpu", "--quiet"]) == 0
    return out, cache


def test_model_folder_holds_the_method(cascade):
    out, _ = cascade
    method = json.loads((out / "method.json").read_text())
    assert method["graph"] == {"combine": "product", "inputs": ["first", "second"]}
    assert method["networks"] == {"first": "networks/first", "second": "."}
    assert json.loads((out / "config.json").read_text())["network"] == "second"


def test_predict_is_p1_times_p2_of_the_saved_networks(cascade, toy_dataset, tmp_path):
    out, _ = cascade
    preds = tmp_path / "preds"
    argv = ["predict", "-m", str(out), "-i", str(toy_dataset), "--all", "-o", str(preds)]
    assert main([*argv, "--save-probabilities"]) == 0
    first, _ = load_model(out / "networks" / "first")
    second, config = load_model(out)
    subject = load_dataset(toy_dataset).subjects[0]
    pre = preprocess_subject(
        subject, config["channel_names"], PreprocessConfig.from_dict(config["preprocess"])
    )
    p1 = predict_volume(first, pre.image, mask=pre.mask)
    p2 = predict_volume(second, pre.image, mask=pre.mask)
    fg = p1[1] * p2[1]
    expected = pre.record.invert(np.stack([1 - fg, fg]), is_label=False, fill=[1.0, 0.0])
    written = nib.load(str(preds / f"{subject.id}_prob.nii.gz")).get_fdata()
    np.testing.assert_allclose(written, expected, atol=1e-5)
    labels = nib.load(str(preds / f"{subject.id}_seg.nii.gz")).get_fdata()
    np.testing.assert_array_equal(labels, expected[..., 1] > expected[..., 0])


def test_stage_two_negatives_come_from_the_selected_first_network(cascade):
    out, cache_dir = cascade
    history = (out / "log.csv").read_text().splitlines()
    assert sum(",first," in row for row in history) == 2  # early stopping after epoch 2
    selected, _ = load_model(out / "networks" / "first")
    last, _ = load_model(out / "networks" / "first" / "last")
    assert json.loads((out / "networks" / "first" / "config.json").read_text())["epoch"] == 1
    run = hashlib.sha256(str(out.resolve()).encode()).hexdigest()[:10]
    train_ids = json.loads((out / "splits.json").read_text())["split"]["train"]
    cache = open_cache(cache_dir)
    subjects = [cache.subject(i) for i in train_ids]
    differs = False
    for subject in subjects:
        stored = np.load(subject.folder / "outputs" / f"{run}-first-maps.npy")
        image, mask = np.asarray(subject.image), np.asarray(subject.mask)
        np.testing.assert_allclose(stored, predict_volume(selected, image, mask=mask), atol=1e-6)
        differs |= bool(np.abs(stored - predict_volume(last, image, mask=mask)).max() > 1e-4)
        subject.outputs["first-maps"] = subject.folder / "outputs" / f"{run}-first-maps.npy"
    assert differs, "the last weights would have given other maps"
    # every negative the stage-2 sampler draws lies where p1 > 0.5 and there is no lesion
    sampler = CandidateSampler(
        subjects, selected.geometry, output_size=6, positives="lesion", negatives=NEGATIVES
    )
    assert sampler.counts()["negatives"] > 0
    rng = np.random.default_rng(0)
    for _ in range(200):
        s, centre, k = sampler.draw_centre(rng)
        subject = subjects[s]
        if k == 0:
            p1 = 1 - np.load(subject.outputs["first-maps"])[0][centre]
            assert p1 > 0.5 and subject.label[centre] == 0
        else:
            assert subject.label[centre] > 0


def test_interrupted_predict_stage_resumes_to_the_same_weights(toy_dataset, tmp_path, monkeypatch):
    """Killed half-way through the predict stage (one map written): --resume redoes it."""
    from safetensors.torch import load_file

    import lesionseg.training.trainer as trainer_module
    from lesionseg.training import resume, train

    data = dict(RECIPE, train={**RECIPE["train"], "batches_per_epoch": 2})
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(data))
    kwargs = dict(device="cpu", progress=False, cache=tmp_path / "cache")
    train(recipe, toy_dataset, tmp_path / "full", **kwargs)

    real = np.save
    calls = []

    def killed_after_one(stream, array, *args, **kw):
        calls.append(1)
        if len(calls) > 1:
            raise KeyboardInterrupt  # the kill: one map written, the next not
        return real(stream, array, *args, **kw)

    monkeypatch.setattr(trainer_module.np, "save", killed_after_one)
    with pytest.raises(KeyboardInterrupt):
        train(recipe, toy_dataset, tmp_path / "killed", **kwargs)
    monkeypatch.setattr(trainer_module.np, "save", real)
    state = trainer_module.load_checkpoint(tmp_path / "killed" / "checkpoint.pt")
    assert (state["stage"], state["epoch"]) == (1, 0)  # stage 1 is the predict stage
    resume(tmp_path / "killed", progress=False)
    for name in ("model.safetensors", "networks/first/model.safetensors"):
        a = load_file(str(tmp_path / "full" / name))
        b = load_file(str(tmp_path / "killed" / name))
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a), name
