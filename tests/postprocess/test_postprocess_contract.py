"""Every registered post-processing step keeps the chaining contract of postprocess.chain."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from lesionseg.postprocess import POSTPROCESS
from lesionseg.postprocess.chain import CONTEXT, apply_step, current_labels
from lesionseg.training.recipe import ENGINE_ARGS, recipe_from_dict

K, SHAPE = 2, (12, 12, 12)

#: Options a step needs to run (a new step with required options adds its example here).
EXAMPLE_OPTIONS = {
    "crf": {"iterations": 2},
    "min-lesion-size": {"size": 3, "unit": "voxels"},
    "threshold": {"threshold": 0.6},
}

STEPS = POSTPROCESS.names()


def random_case(seed=0):
    rng = np.random.default_rng(seed)
    fg = rng.random(SHAPE).astype(np.float32)
    probabilities = np.stack([1 - fg, fg])
    image = rng.normal(size=(1, *SHAPE)).astype(np.float32)
    return probabilities, image, np.ones(SHAPE, np.uint8)


def run(name, probabilities, image, mask, labels=None, spacing=(1.0, 1.0, 1.0)):
    return apply_step(
        name,
        POSTPROCESS.get(name),
        probabilities,
        labels,
        options=EXAMPLE_OPTIONS.get(name, {}),
        image=image,
        mask=mask,
        spacing=spacing,
    )


def check_pair(probabilities, labels, num_classes=K):
    assert probabilities.shape == (num_classes, *SHAPE) and probabilities.dtype == np.float32
    assert labels is None or (labels.shape == SHAPE and labels.dtype == np.uint8)
    final = current_labels(probabilities, labels)
    assert final.shape == SHAPE and final.dtype == np.uint8
    assert final.min() >= 0 and final.max() <= num_classes - 1
    return final


def test_the_registry_has_the_documented_steps():
    assert {"crf", "threshold", "min-lesion-size", "keep-largest"} <= set(STEPS)


@pytest.mark.parametrize("name", STEPS)
def test_step_returns_a_valid_pair_and_leaves_its_inputs(name):
    probabilities, image, mask = random_case()
    before = probabilities.copy()
    check_pair(*run(name, probabilities, image, mask))
    np.testing.assert_array_equal(probabilities, before)
    # given a label map by an earlier step
    labels = (probabilities[1] > 0.7).astype(np.uint8)
    given = labels.copy()
    check_pair(*run(name, probabilities, image, mask, labels=labels, spacing=(2.0, 1.0, 1.5)))
    np.testing.assert_array_equal(labels, given)


@pytest.mark.parametrize("name", STEPS)
def test_step_leaves_all_background_background(name):
    _, image, mask = random_case(1)
    probabilities = np.zeros((K, *SHAPE), np.float32)
    probabilities[0] = 1
    final = check_pair(*run(name, probabilities, image, mask))
    assert not final.any()
    final = check_pair(*run(name, probabilities, image, mask, labels=np.zeros(SHAPE, np.uint8)))
    assert not final.any()


@pytest.mark.parametrize("name", STEPS)
def test_step_is_documented_and_takes_only_the_context_it_names(name):
    step = POSTPROCESS.get(name)
    assert inspect.getdoc(step) and "Args:" in inspect.getdoc(step)
    params = list(inspect.signature(step).parameters)
    assert params[0] == "probabilities"
    assert set(ENGINE_ARGS["postprocess"]) == {"probabilities", *CONTEXT}


@pytest.mark.parametrize("name", STEPS)
def test_recipe_accepts_each_step_with_its_options(name):
    base = {
        "model": {"name": "deepmedic", "widths": [4, 4], "hidden": [8]},
        "sampler": {"name": "segments", "output_size": 3},
    }
    step = {"name": name, **EXAMPLE_OPTIONS.get(name, {})}
    recipe = recipe_from_dict({**base, "predict": {"postprocess": [step]}})
    assert recipe.data["predict"]["postprocess"] == [step]
