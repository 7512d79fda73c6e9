"""Per-tile padding: the same values as padding the whole volume, and memory bounded by the tile."""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest
import torch
from torch import nn

from lesionseg.inference import predict_volume
from lesionseg.inference.padding import PaddedVolume, source_index
from lesionseg.inference.tiling import plan_same, plan_valid
from lesionseg.models import ModelGeometry

#: The tiny DeepMedic's geometry: margins 18, size multiple 3.
DEEPMEDIC_LIKE = ModelGeometry(3, 2, 2, context=(37, 37, 37), size_multiple=(3, 3, 3))
UNET_LIKE = ModelGeometry(3, 2, 2, size_multiple=(8, 8, 8))
#: Shapes with borders of every kind: margins wider than the axis (reflect mirrors
#: again and again), one-voxel axes (the predictor pads those with "edge"), odd sizes,
#: and (same-padded) tiles that lie inside the volume.
SHAPES = [(9, 7, 2), (20, 23, 1), (1, 5, 1), (11, 4, 6), (20, 17, 9)]


def valid_widths(plan) -> list[tuple[int, int]]:
    return [(0, 0), *zip(plan.pad_before, plan.pad_after)]


def assert_boxes_match_np_pad(image, widths, mode, starts, size):
    original = image.copy()
    reference = np.pad(image, widths, mode=mode)  # the whole-volume padding of old
    padded = PaddedVolume(image, widths, mode)
    assert padded.shape == reference.shape[1:]
    stacked = padded.boxes(starts, size)
    assert stacked.shape == (len(starts), image.shape[0], *size) and stacked.dtype == image.dtype
    for start, from_stack in zip(starts, stacked):
        expected = reference[(slice(None), *(slice(s, s + t) for s, t in zip(start, size)))]
        np.testing.assert_array_equal(padded.box(start, size), expected)
        np.testing.assert_array_equal(from_stack, expected)
    np.testing.assert_array_equal(image, original)  # nothing written through a view


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("mode", ["reflect", "edge", "constant"])
@pytest.mark.parametrize("tile", [3, 6, None])
def test_valid_tiles_equal_whole_volume_padding(shape, mode, tile):
    image = np.random.default_rng(0).normal(size=(2, *shape)).astype(np.float32)
    plan = plan_valid(shape, DEEPMEDIC_LIKE, tile)
    # The plan's tiles include both corners of the padded volume on every axis.
    padded_shape = tuple(s + b + a for s, b, a in zip(shape, plan.pad_before, plan.pad_after))
    assert plan.starts[0] == (0, 0, 0)
    assert tuple(s + t for s, t in zip(plan.starts[-1], plan.tile_in)) == padded_shape
    assert_boxes_match_np_pad(image, valid_widths(plan), mode, plan.starts, plan.tile_in)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("tile", [8, None])
def test_same_padded_tiles_equal_whole_volume_padding(shape, tile):
    image = np.random.default_rng(1).normal(size=(2, *shape)).astype(np.float32)
    plan = plan_same(shape, UNET_LIKE, tile)
    widths = [(0, 0)] + [(0, p - s) for p, s in zip(plan.padded_shape, shape)]
    assert_boxes_match_np_pad(image, widths, "constant", plan.starts, plan.tile)


def test_patches_at_every_voxel_equal_whole_volume_padding():
    image = np.random.default_rng(2).normal(size=(1, 4, 3, 5)).astype(np.float32)
    voxels = np.argwhere(np.ones(image.shape[1:], bool))  # the patch of v starts at v
    assert_boxes_match_np_pad(
        image, [(0, 0), (2, 2), (3, 3), (1, 1)], "constant", voxels, (5, 7, 3)
    )


def test_source_index_is_np_pad_of_the_positions():
    # Mirrored about the end voxels again and again (period 2·(3 − 1) = 4).
    assert source_index(3, 4, 2, "reflect").tolist() == [0, 1, 2, 1, 0, 1, 2, 1, 0]
    assert source_index(2, 2, 1, "edge").tolist() == [0, 0, 0, 1, 1]
    assert source_index(2, 1, 2, "constant").tolist() == [-1, 0, 1, -1, -1]
    with pytest.raises(ValueError, match="mode"):
        source_index(3, 1, 1, "mean")


def test_padded_volume_rejects_channel_padding_and_boxes_outside():
    image = np.zeros((2, 4, 4, 4), np.float32)
    with pytest.raises(ValueError, match="channels"):
        PaddedVolume(image, [(1, 1), (0, 0), (0, 0), (0, 0)], "edge")
    padded = PaddedVolume(image, [(0, 0), (1, 1), (1, 1), (1, 1)], "edge")
    with pytest.raises(ValueError, match="outside"):
        padded.boxes([(2, 0, 0)], (5, 5, 5))
    with pytest.raises(ValueError, match="outside"):
        padded.box((0, -1, 0), (2, 2, 2))


@pytest.mark.parametrize("shape", [(20, 23, 1), (13, 11, 7)])
def test_tiled_deepmedic_equals_the_model_on_the_whole_padded_volume(deepmedic, shape):
    """End to end: the model on the whole volume zero-padded (as the samplers pad)."""
    mode = "constant"
    image = np.random.default_rng(3).normal(size=(2, *shape)).astype(np.float32)
    plan = plan_valid(shape, deepmedic.geometry, None)
    with torch.no_grad():
        padded = torch.from_numpy(np.pad(image, valid_widths(plan), mode=mode))[None]
        expected = torch.softmax(deepmedic(padded), 1)[0].numpy()
    expected = expected[(slice(None), *(slice(0, s) for s in shape))]
    tiled = predict_volume(deepmedic, image, tile_size=6, batch_size=2)
    assert len(plan_valid(shape, deepmedic.geometry, 6).starts) >= 4
    np.testing.assert_allclose(tiled, expected, rtol=0, atol=1e-5)


class SameConv(nn.Module):
    """Same-padded 3×3×3 convolution (size multiple 8): the padding's values matter."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv3d(2, 2, 3, padding=1)
        self.geometry = UNET_LIKE

    def forward(self, x):
        assert all(s % 8 == 0 for s in x.shape[2:])
        return self.conv(x)


def test_same_padded_whole_volume_pass_equals_the_model_on_the_zero_padded_volume():
    shape = (10, 9, 1)
    image = np.random.default_rng(4).normal(size=(2, *shape)).astype(np.float32)
    model = SameConv()
    with torch.no_grad():
        padded = torch.from_numpy(np.pad(image, [(0, 0), (0, 6), (0, 7), (0, 7)]))[None]
        expected = torch.softmax(model(padded), 1)[0, :, :10, :9, :1].numpy()
    np.testing.assert_allclose(predict_volume(model, image), expected, rtol=0, atol=1e-6)


class CentreVoxel(nn.Module):
    """DeepMedic's geometry (margins 18, size multiple 3) at no cost: logit = centre voxel."""

    margin = 18

    def __init__(self):
        super().__init__()
        self.geometry = ModelGeometry(3, 1, 2, context=(37, 37, 37), size_multiple=(3, 3, 3))

    def forward(self, x):
        m = self.margin
        assert all(s % 3 == 0 for s in x.shape[2:])
        fg = x[:, :1, m:-m, m:-m, m:-m]
        return torch.cat([torch.zeros_like(fg), fg], 1)


def peak_numpy_bytes(function) -> int:
    """Peak of the memory traced while ``function()`` runs (numpy arrays are traced)."""
    tracemalloc.start()
    try:
        function()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_of_a_thin_volume_follows_the_tile_not_the_padded_volume():
    shape, tile = (400, 400, 1), 30
    image = np.random.default_rng(5).normal(size=(1, *shape)).astype(np.float32)
    model = CentreVoxel()
    plan = plan_valid(shape, model.geometry, tile)
    padded_bytes = 4 * math.prod(
        s + b + a for s, b, a in zip(shape, plan.pad_before, plan.pad_after)
    )
    tile_bytes = 4 * math.prod(plan.tile_in)
    output_bytes = 4 * 2 * math.prod(shape)
    assert padded_bytes > 10 * (tile_bytes + output_bytes)  # 438×438×39 voxels: 30 MB
    # Positive control: padding the whole volume shows in the measure.
    assert peak_numpy_bytes(lambda: np.pad(image, valid_widths(plan), mode="edge")) >= padded_bytes
    probs = []
    peak = peak_numpy_bytes(lambda: probs.append(predict_volume(model, image, tile_size=tile)))
    assert peak < output_bytes + 8 * tile_bytes, (peak, output_bytes, tile_bytes)
    np.testing.assert_allclose(probs[0][1], 1 / (1 + np.exp(-image[0])), atol=1e-6)


@pytest.mark.slow
def test_slab_5000_predicts_in_under_2_gib():
    """The benchmark's prediction (benchmarks/bench_slab.py): about half an hour on 2 cores."""
    from benchmarks.bench_slab import PEAK_GOAL_BYTES, SHAPE, measure_slab

    result = measure_slab(SHAPE)
    assert result["shape"] == list(SHAPE)
    assert result["peak_rss"] < PEAK_GOAL_BYTES, result
