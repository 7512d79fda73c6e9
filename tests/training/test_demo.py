"""The demo's data set: extra training phantoms leave the held-out split as it was."""

import json

import nibabel as nib
import numpy as np

from lesionseg.data.dataset import load_dataset
from lesionseg.data.phantoms import synthesize
from lesionseg.training import load_recipe
from lesionseg.training.demo import METHODS, SPACING_MM, _add_training_phantoms, _has_data

TASK = "stroke-chronic"


def test_extra_training_phantoms_keep_the_held_out_subjects(tmp_path):
    data = synthesize(
        TASK, tmp_path / "data", subjects=2, seed=0, spacing=SPACING_MM, test_fraction=0.5
    )
    held_out = [s.id for s in load_dataset(data).split("test")]
    _add_training_phantoms(data, TASK, first=2, count=1, seed=0)
    dataset = load_dataset(data)
    assert [s.id for s in dataset.split("test")] == held_out == ["stroke_chronic_001"]
    assert [s.id for s in dataset.split("train")] == ["stroke_chronic_000", "stroke_chronic_002"]
    assert _has_data(data, 2) and not _has_data(data, 1)
    cases = json.loads((data / "phantoms.json").read_text())["cases"]
    assert [(c["case"], c["split"]) for c in cases][-1] == ("stroke_chronic_002", "train")
    # the added phantom is the one `lesionseg synth` writes with more subjects
    more = synthesize(
        TASK, tmp_path / "more", subjects=3, seed=0, spacing=SPACING_MM, test_fraction=0.0
    )
    for name in ("imagesTr/stroke_chronic_002_0000", "labelsTr/stroke_chronic_002"):
        added = nib.load(data / f"{name}.nii.gz")
        reference = nib.load(more / f"{name}.nii.gz")
        np.testing.assert_array_equal(np.asarray(added.dataobj), np.asarray(reference.dataobj))
        np.testing.assert_allclose(added.affine, reference.affine)


def test_every_demo_recipe_is_packaged_and_valid():
    for task, recipe in METHODS.values():
        assert load_recipe(recipe).name == recipe, task
