"""Contract tests over every registered model, sampler and loss: a new part is tested here.

Models: the output shape follows the declared geometry, every parameter gets a gradient,
and tiled prediction equals whole-volume prediction where tiling is exact (valid
convolutions). Samplers: the
examples have the shapes they declare and follow the seed. Losses: a finite scalar with
gradients, lower for better logits.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lesionseg.inference.predictor import predict_volume
from lesionseg.losses import LOSSES, build_loss
from lesionseg.models import MODELS, ModelGeometry
from lesionseg.models.builder import ModelSpec, build_model
from lesionseg.models.protocol import SegmentationModel
from lesionseg.sampling import SAMPLERS, ArraySubject
from lesionseg.training.recipe import import_parts

import_parts()

#: Small widths so that every model runs in a second; a model not listed uses its defaults.
SMALL = {
    "brainsegnet": {"widths": [4, 8, 8, 16], "refine_channels": 8},
    "deepmedic": {"widths": [4, 4, 4, 4], "hidden": [8], "subsample_factors": [3]},
    "dunet": {"features": [4, 8, 16, 32], "se_ratio": 2, "slice_context": [2, 1]},
    "edd": {"widths": [4, 4, 8], "refine_width": 4},
    "muscle": {"widths": [4, 8], "hidden": [8, 8]},
    "patch-cnn": {"widths": [4, 8], "hidden": 8},
    "unet": {"spatial_dims": 3, "features": [4, 8]},
    "unet2d-original": {"features": [4, 8, 16]},
    "unet2d-transform": {"features": [4, 8, 16]},
    "unet3d-transform": {"features": [4, 8, 16]},
}


def _build(name: str):
    return build_model(ModelSpec(name, SMALL.get(name, {})), 2, 2, seed=0).eval()


def _input_size(geometry: ModelGeometry) -> tuple[int, ...]:
    if geometry.patch_size is not None:
        return tuple(geometry.patch_size)
    wanted = tuple(2 * m for m in geometry.size_multiple)
    return geometry.input_size(wanted)


@pytest.mark.parametrize("name", MODELS.names())
def test_model_output_follows_its_geometry_and_learns(name):
    model = _build(name).train()
    assert isinstance(model, SegmentationModel)
    geometry = model.geometry
    size = _input_size(geometry)
    x = torch.randn(2, geometry.input_channels_total, *size)
    out = model(x)
    logits = out if isinstance(out, torch.Tensor) else out[0]
    if geometry.patch_size is not None:
        assert logits.shape == (2, geometry.num_classes)
    else:
        assert logits.shape == (2, geometry.num_classes, *geometry.output_size(size))
    logits.float().square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == [], missing


def _image_input(name: str) -> bool:
    """Whether the model's input is cut from the image alone (not MUSCLE Net's built input)."""
    geometry = _build(name).geometry
    return geometry.input_channels_total == geometry.in_channels * (1 + sum(geometry.slice_context))


@pytest.mark.parametrize("name", [n for n in MODELS.names() if _image_input(n)])
def test_tiled_prediction_equals_whole(name):
    model = _build(name)
    geometry = model.geometry
    rng = np.random.default_rng(0)
    shape = (2, 23, 21, 19) if geometry.spatial_dims == 3 else (2, 20, 24, 7)
    image = rng.normal(0, 1, shape).astype(np.float32)
    whole = predict_volume(model, image, tile_size=shape[1:])
    assert whole.shape == (2, *shape[1:])
    np.testing.assert_allclose(whole.sum(0), 1.0, atol=1e-5)
    # exact only for valid convolutions: a same-padded network sees zeros at tile borders,
    # so overlapping tiles are blended (as MONAI and nnU-Net do) and differ slightly
    if geometry.is_valid_convolution:
        tiled = predict_volume(model, image, tile_size=geometry.size_multiple[0] * 2)
        np.testing.assert_allclose(tiled, whole, atol=1e-5)


@pytest.mark.parametrize("name", [n for n in MODELS.names() if _image_input(n)])
def test_both_memory_layouts_predict_the_same(name):
    """``layout: auto`` may pick either; both must give the same probabilities."""
    model = _build(name)
    rng = np.random.default_rng(0)
    shape = (2, 23, 21, 19) if model.geometry.spatial_dims == 3 else (2, 20, 24, 7)
    image = rng.normal(0, 1, shape).astype(np.float32)
    results = [
        predict_volume(model, image, tile_size=shape[1:], layout=layout)
        for layout in ("contiguous", "channels_last", "auto")
    ]
    np.testing.assert_allclose(results[1], results[0], atol=1e-5)
    np.testing.assert_allclose(results[2], results[0], atol=1e-5)
    assert all(p.is_contiguous() for p in model.parameters())  # put back afterwards


def _sampler_case(name: str):
    """A geometry and options each sampler is built with (new samplers: defaults)."""
    patch = ModelGeometry(3, 2, 2, patch_size=(5, 5, 5))
    dense = ModelGeometry(3, 2, 2, context=(5, 5, 5))
    flat = ModelGeometry(2, 2, 2, size_multiple=(4, 4), slice_context=(1, 1))
    return {
        "segments": (dense, {"output_size": 4}),
        "candidates": (patch, {"negatives": "A > 0.5 and not lesion"}),
        "slices": (flat, {}),
        "slabs": (ModelGeometry(3, 2, 2, size_multiple=(8, 8, 1)), {"depth": 5, "size": 8}),
        "components": (_build("muscle").geometry, {"source": "A", "threshold": 1.5}),
    }.get(name, (dense, {}))


def _subjects():
    rng = np.random.default_rng(1)
    subjects = []
    for i in range(2):
        image = rng.normal(0, 1, (2, 16, 16, 12)).astype(np.float32)
        label = np.zeros((16, 16, 12), np.uint8)
        label[5:9, 6:10, 4:7] = 1
        image[0][label > 0] += 2.0
        mask = np.ones_like(label)
        subjects.append(ArraySubject(f"s{i}", image, label, mask, channel_names=["A", "B"]))
    return subjects


@pytest.mark.parametrize("name", SAMPLERS.names())
def test_sampler_examples_have_their_declared_shapes_and_follow_the_seed(name):
    geometry, options = _sampler_case(name)
    sampler = SAMPLERS.build(name, subjects=_subjects(), geometry=geometry, **options)
    shapes = sampler.example_shapes()
    batch = sampler.batch(3, np.random.default_rng(5))
    assert batch["image"].shape == (3, *shapes["image"])
    assert batch["target"].shape == (3, *shapes["target"])
    again = sampler.batch(3, np.random.default_rng(5))
    for key in batch:
        np.testing.assert_array_equal(batch[key], again[key])


def _loss_spec(name: str) -> dict:
    return {
        "combined": {"name": "combined", "terms": [{"name": "dice"}, {"name": "cross_entropy"}]},
        "deep_supervision": {"name": "deep_supervision", "loss": "cross_entropy"},
    }.get(name, {"name": name})


@pytest.mark.parametrize("name", LOSSES.names())
def test_loss_is_a_finite_scalar_lower_for_better_logits(name):
    loss = build_loss(_loss_spec(name))
    target = torch.zeros(2, 6, 6, 6, dtype=torch.long)
    target[:, 2:4, 2:4, 2:4] = 1
    good = torch.stack([1 - target, target], 1).float() * 8 - 4
    bad = -good
    deep = name == "deep_supervision"
    values = []
    for logits in (good, bad):
        logits = logits.clone().requires_grad_(True)
        value = loss([logits, logits[:, :, ::2, ::2, ::2]] if deep else logits, target)
        assert value.dim() == 0 and torch.isfinite(value)
        value.backward()
        assert logits.grad is not None and torch.isfinite(logits.grad).all()
        values.append(float(value.detach()))
    assert values[0] < values[1]


def test_one_spec_shape_whatever_the_form():
    flat = ModelSpec.parse({"name": "deepmedic", "widths": [4, 4]})
    nested = ModelSpec.parse({"name": "deepmedic", "options": {"widths": [4, 4]}})
    assert flat == nested == ModelSpec("deepmedic", {"widths": [4, 4]})
    assert ModelSpec.parse(flat.flat()) == flat  # config.json's form reads back the same
    from lesionseg.errors import LesionsegError

    with pytest.raises(LesionsegError, match="not both"):
        ModelSpec.parse({"name": "deepmedic", "options": {}, "widths": [4]})
    with pytest.raises(LesionsegError, match="in_channels is 3"):
        build_model(ModelSpec("deepmedic", {"in_channels": 3}), 2, 2)
    # the same seed, the same initial weights
    a, b = (build_model(ModelSpec("deepmedic", SMALL["deepmedic"]), 2, 2, seed=7) for _ in "ab")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
