"""The chaining contract, command-line overrides and recipe checks of post-processing steps."""

from __future__ import annotations

import numpy as np
import pytest

from lesionseg.errors import LesionsegError
from lesionseg.inference.pipeline import postprocess_steps, run_postprocess
from lesionseg.postprocess.chain import apply_step, parse_steps
from lesionseg.postprocess.overrides import PostprocessOverrides
from lesionseg.training.recipe import recipe_from_dict

SHAPE = (4, 5, 6)


def case():
    fg = np.linspace(0, 1, np.prod(SHAPE), dtype=np.float32).reshape(SHAPE)
    return np.stack([1 - fg, fg]), np.zeros((1, *SHAPE), np.float32)


def run(step, labels=None, **options):
    probs, image = case()
    return apply_step(
        "s", step, probs, labels, options=options, image=image, mask=None, spacing=(1, 1, 1)
    )


def test_a_step_gets_the_context_it_names_only():
    seen = {}

    def step(probabilities, *, spacing, labels=None, factor=1):
        seen.update(spacing=spacing, labels=labels, factor=factor)
        return probabilities

    given = np.ones(SHAPE, np.uint8)
    run(step, labels=given, factor=3)
    assert seen["spacing"] == (1, 1, 1) and seen["labels"] is given and seen["factor"] == 3
    with pytest.raises(LesionsegError, match="'s'.*bogus"):
        run(step, bogus=1)


def test_what_each_kind_of_result_leaves():
    probs, _ = case()
    labels = np.ones(SHAPE, np.uint8)
    flipped = probs[::-1].copy()
    # new probabilities drop the label map
    p, lab = run(lambda probabilities: flipped, labels=labels)
    np.testing.assert_array_equal(p, flipped)
    assert lab is None
    # a label map leaves the probabilities
    p, lab = run(lambda probabilities: np.zeros(SHAPE, bool), labels=labels)
    np.testing.assert_array_equal(p, probs)
    assert lab.dtype == np.uint8 and not lab.any()
    # both
    p, lab = run(lambda probabilities: (flipped, labels))
    np.testing.assert_array_equal(p, flipped)
    np.testing.assert_array_equal(lab, labels)
    p, lab = run(lambda probabilities: (flipped, None), labels=labels)
    assert lab is None


@pytest.mark.parametrize(
    "result, message",
    [
        (lambda p: p[:1], "probabilities of shape"),
        (lambda p: np.zeros((4, 5, 7), np.uint8), "labels of shape"),
        (lambda p: np.full(SHAPE, 2, np.uint8), r"outside 0\.\.1"),
        (lambda p: (p, p[0], p[1]), "3 values"),
    ],
)
def test_bad_results_are_named(result, message):
    with pytest.raises(LesionsegError, match=f"'s'.*{message}"):
        run(result)


def test_chained_steps_in_the_pipeline():
    probs, image = case()
    steps = [
        ("threshold", {"threshold": 0.75}),
        ("min-lesion-size", {"size": 10, "unit": "voxels"}),
    ]
    p, labels = run_postprocess(steps, probs, image, np.ones(SHAPE, np.uint8), (1, 1, 1))
    np.testing.assert_array_equal(p, probs)
    np.testing.assert_array_equal(labels, probs[1] >= 0.75)
    steps.append(("keep-largest", {}))
    assert run_postprocess(steps, probs, image, None, (1, 1, 1))[1].sum() == labels.sum()
    assert run_postprocess([], probs, image, None, (1, 1, 1)) == (probs, None)


def test_parse_steps_forms_and_errors():
    raw = ["crf", {"name": "threshold", "threshold": 0.6}, {"min-lesion-size": {"size": 3}}]
    assert parse_steps(raw) == [
        ("crf", {}),
        ("threshold", {"threshold": 0.6}),
        ("min-lesion-size", {"size": 3}),
    ]
    assert parse_steps(None) == [] and parse_steps("crf") == [("crf", {})]
    assert parse_steps([{"keep-largest": None}]) == [("keep-largest", {})]
    with pytest.raises(LesionsegError, match=r"predict.postprocess\[1\]: cannot read"):
        parse_steps(["crf", 3])
    with pytest.raises(LesionsegError, match=r"predict.postprocess\[0\].threshold: .*mapping"):
        parse_steps([{"threshold": 0.6}])


def names(steps):
    return [name for name, _ in steps]


def test_overrides_order_replace_and_clear():
    all_three = PostprocessOverrides(crf=True, threshold=0.6, min_lesion_size=10)
    assert all_three.apply([]) == [
        ("crf", {}),
        ("threshold", {"threshold": 0.6}),
        ("min-lesion-size", {"size": 10, "unit": "mm3"}),
    ]
    recipe = [("crf", {"params": "crf.json"}), ("keep-largest", {"connectivity": 6})]
    # a missing step goes to its place; --postprocess crf keeps the recipe's CRF settings
    assert all_three.apply(recipe) == [
        ("crf", {"params": "crf.json"}),
        ("threshold", {"threshold": 0.6}),
        ("min-lesion-size", {"size": 10, "unit": "mm3"}),
        ("keep-largest", {"connectivity": 6}),
    ]
    # a step the recipe has is replaced in place, its other options kept
    recipe = [
        ("min-lesion-size", {"size": 5, "unit": "voxels", "connectivity": 6}),
        ("threshold", {"threshold": {1: 0.3}}),
    ]
    out = PostprocessOverrides(threshold=0.6, min_lesion_size=12).apply(recipe)
    assert out == [
        ("min-lesion-size", {"size": 12, "unit": "mm3", "connectivity": 6}),
        ("threshold", {"threshold": 0.6}),
    ]
    # other steps count as last; none clears the recipe's steps first
    assert names(PostprocessOverrides(threshold=0.5).apply([("my-step", {})])) == [
        "threshold",
        "my-step",
    ]
    assert PostprocessOverrides(clear=True).apply(recipe) == []
    out = PostprocessOverrides(clear=True, min_lesion_size=3, min_lesion_unit="voxels")
    assert out.apply(recipe) == [("min-lesion-size", {"size": 3, "unit": "voxels"})]
    assert PostprocessOverrides().apply(recipe) == recipe


def test_pipeline_steps_check_names_before_predicting():
    config = {"recipe": {"predict": {"postprocess": ["crf", {"name": "treshold"}]}}}
    with pytest.raises(LesionsegError, match="unknown post-processing step 'treshold'"):
        postprocess_steps(config)
    assert names(postprocess_steps(config, PostprocessOverrides(clear=True))) == []
    assert postprocess_steps({"recipe": {}}) == []


BASE = {
    "model": {"name": "deepmedic", "widths": [4, 4], "hidden": [8]},
    "sampler": {"name": "segments", "output_size": 3},
}


def recipe_with(*steps):
    return recipe_from_dict({**BASE, "predict": {"postprocess": list(steps)}})


@pytest.mark.parametrize(
    "steps, message",
    [
        (["crf", "treshold"], r"recipe predict.postprocess\[1\]: unknown post-processing step"),
        (
            ["threshold", {"name": "keep-largest", "unit": "mm3"}],
            r"recipe predict.postprocess\[1\].unit: unknown option .*connectivity",
        ),
        (
            [{"name": "min-lesion-size", "size": 3, "units": "mm3"}],
            r"recipe predict.postprocess\[0\].units: unknown option",
        ),
        (
            [{"crf": {"iteratons": 2}}],
            r"recipe predict.postprocess\[0\].iteratons: unknown option .*iterations",
        ),
        ([{"min-lesion-size": {"unit": "mm3"}}], r"predict.postprocess\[0\].size: is required"),
        (
            [{"name": "threshold", "spacing": [1, 1, 1]}],
            r"predict.postprocess\[0\].spacing: is set by lesionseg",
        ),
        ([{"threshold": 0.6}], r"recipe predict.postprocess\[0\].threshold: .*mapping"),
        ([7], r"recipe predict.postprocess\[0\]: cannot read"),
    ],
)
def test_recipe_rejects_bad_steps_naming_the_key(steps, message):
    with pytest.raises(LesionsegError, match=message):
        recipe_with(*steps)


def test_recipe_accepts_every_form():
    steps = [
        {"crf": {"params": "crf.json", "iterations": 2, "threads": 1}},
        {"name": "threshold", "threshold": {1: 0.6}},
        {"min-lesion-size": {"size": 10, "unit": "voxels", "connectivity": 6}},
        "keep-largest",
    ]
    assert recipe_with(*steps).data["predict"]["postprocess"] == steps
    with pytest.raises(LesionsegError, match="must be a list"):
        recipe_from_dict({**BASE, "predict": {"postprocess": "crf"}})


def test_the_crf_through_the_chain_gives_the_crf_results():
    from lesionseg.postprocess.crf import CRFParams, dense_crf

    rng = np.random.default_rng(0)
    fg = rng.random(SHAPE).astype(np.float32)
    probs, image = np.stack([1 - fg, fg]), rng.normal(size=(2, *SHAPE)).astype(np.float32)
    mask = np.ones(SHAPE, np.uint8)
    mask[0] = 0
    steps = [("threshold", {"threshold": 0.9}), ("crf", {"iterations": 3})]
    refined, labels = run_postprocess(steps, probs, image, mask, (1, 1.5, 2))
    expected = dense_crf(probs, image, (1, 1.5, 2), CRFParams(iterations=3))
    expected[:, 0] = probs[:, 0]  # outside the mask
    np.testing.assert_array_equal(refined, expected)
    assert labels is None  # the threshold's labels described the old probabilities
