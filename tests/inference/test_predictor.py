"""predict_volume: tiled = whole, masks, flips, 2D slices, patch classifiers, ensembles."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lesionseg.errors import LesionsegError
from lesionseg.inference import predict_ensemble, predict_volume, stack_slices
from lesionseg.inference.tiling import plan_valid
from tests.inference.conftest import CentreThreshold, PatchModel, Pointwise, SliceModel


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(0).normal(size=(2, 31, 40, 26)).astype(np.float32)


def test_tiled_equals_whole_volume(deepmedic, image):
    whole = predict_volume(deepmedic, image, tile_size=(33, 42, 27))
    assert len(plan_valid(image.shape[1:], deepmedic.geometry, (33, 42, 27)).starts) == 1
    assert whole.shape == (3, 31, 40, 26) and whole.dtype == np.float32
    np.testing.assert_allclose(whole.sum(0), 1.0, atol=1e-5)
    for tile in ((18, 21, 15), (12, 42, 27)):
        assert len(plan_valid(image.shape[1:], deepmedic.geometry, tile).starts) >= 3
        tiled = predict_volume(deepmedic, image, tile_size=tile, batch_size=3)
        np.testing.assert_allclose(tiled, whole, rtol=0, atol=1e-5)
        assert (tiled.argmax(0) == whole.argmax(0)).all()


def test_tiles_off_the_phase_lattice_would_differ(deepmedic, image):
    """Negative control: the equality above depends on tiles starting on multiples of 3."""
    padded = np.pad(image, [(0, 0), (24, 26), (24, 26), (24, 26)], mode="reflect")
    with torch.no_grad():
        full = deepmedic(torch.from_numpy(np.ascontiguousarray(padded[:, :57, :57, :57]))[None])
        shifted = deepmedic(torch.from_numpy(np.ascontiguousarray(padded[:, 1:58, :57, :57]))[None])
    # Output voxel x+1 of the first pass and voxel x of the shifted pass are the same place.
    assert (full[0, :, 1:, :, :] - shifted[0, :, :-1, :, :]).abs().max() > 1e-3


def test_valid_model_matches_direct_computation(image):
    model = CentreThreshold(2, 2, context=5, channel=1, threshold=0.5)
    probs = predict_volume(model, image, tile_size=7)
    expected = 1 / (1 + np.exp(-10 * (image[1] - 0.5)))
    np.testing.assert_allclose(probs[1], expected, atol=1e-5)


def test_mask_skips_tiles_and_zeroes_foreground(deepmedic, image):
    mask = np.zeros(image.shape[1:], np.uint8)
    mask[3:12, 5:20, 4:10] = 1
    whole = predict_volume(deepmedic, image, tile_size=(33, 42, 27))
    masked = predict_volume(deepmedic, image, mask=mask, tile_size=(9, 21, 27))
    inside = mask > 0
    np.testing.assert_allclose(masked[:, inside], whole[:, inside], atol=1e-5)
    assert (masked[1:, ~inside] == 0).all() and (masked[0, ~inside] == 1).all()


def test_flip_tta_averages_flipped_predictions(image):
    model = CentreThreshold(2, 2, context=5, channel=0, threshold=0.0)
    torch.manual_seed(0)
    with torch.no_grad():  # an asymmetric kernel, so that flips change the result
        model.conv.weight[1, 0] += torch.randn(5, 5, 5)
    plain = predict_volume(model, image, tile_size=8)
    flipped_in = np.ascontiguousarray(np.flip(image, 1))
    mirror = np.flip(predict_volume(model, flipped_in, tile_size=8), 1)
    tta = predict_volume(model, image, tile_size=8, flip_axes=(0,))
    np.testing.assert_allclose(tta, (plain + mirror) / 2, atol=1e-6)
    assert np.abs(plain - mirror).max() > 1e-2
    # Two axes: the mean over the four flip combinations.
    assert np.isfinite(predict_volume(model, image, tile_size=8, flip_axes=(0, 2))).all()


def test_same_padded_model_whole_and_tiled_and_sigmoid(image):
    torch.manual_seed(0)
    model = Pointwise(2, 3)
    whole = predict_volume(model, image)
    tiled = predict_volume(model, image, tile_size=16)
    np.testing.assert_allclose(tiled, whole, atol=1e-5)  # pointwise: blending changes nothing
    with torch.no_grad():
        expected = torch.softmax(model.conv(torch.from_numpy(image)[None]), 1)[0].numpy()
    np.testing.assert_allclose(whole, expected, atol=1e-5)
    sig = Pointwise(2, 1, sigmoid=True)
    probs = predict_volume(sig, image)
    assert probs.shape == (2, *image.shape[1:])
    with torch.no_grad():
        p = torch.sigmoid(sig.conv(torch.from_numpy(image)[None]))[0, 0].numpy()
    np.testing.assert_allclose(probs[1], p, atol=1e-6)
    np.testing.assert_allclose(probs[0], 1 - p, atol=1e-6)


def test_stack_slices_is_channel_major_with_zeros_outside():
    vol = np.arange(2 * 4 * 1 * 1, dtype=np.float32).reshape(2, 4, 1, 1) + 1
    out = stack_slices(vol, 0, (2, 1))
    assert out[:, 0, 0].tolist() == [0, 0, 1, 2, 0, 0, 5, 6]


@pytest.mark.parametrize("axis", [0, 2])
def test_slice_model_along_axis(image, axis):
    model = SliceModel(2, 2, slice_context=(2, 1))
    probs = predict_volume(model, image, axis=axis)
    vol = np.moveaxis(image, axis + 1, 1)
    expected = []
    for i in range(vol.shape[1]):
        stacked = stack_slices(vol, i, (2, 1))
        fg = (stacked * np.arange(1, 9)[:, None, None]).sum(0)
        expected.append(1 / (1 + np.exp(-fg)))
    expected = np.moveaxis(np.stack(expected), 0, axis)
    np.testing.assert_allclose(probs[1], expected, atol=1e-5)


def test_patch_classifier_on_mask_voxels(image):
    model = PatchModel(2, 2)
    mask = np.zeros(image.shape[1:], np.uint8)
    mask[0:3, 10:14, 20:26] = 1
    probs = predict_volume(model, image, mask=mask)
    padded = np.pad(image[0], 1)
    for x, y, z in np.argwhere(mask):
        fg = padded[x : x + 3, y : y + 3, z : z + 3].mean()
        assert abs(probs[1, x, y, z] - 1 / (1 + np.exp(-fg))) < 1e-5
    assert (probs[1][mask == 0] == 0).all()


def test_ensemble_is_the_mean(image):
    a = CentreThreshold(2, 2, context=3, channel=0, threshold=0.0)
    b = CentreThreshold(2, 2, context=5, channel=1, threshold=1.0)
    mean = predict_ensemble([a, b], image, tile_size=9)
    expected = (predict_volume(a, image) + predict_volume(b, image)) / 2
    np.testing.assert_allclose(mean, expected, atol=1e-6)
    weighted = predict_ensemble([a, b], image, weights=[3, 1], tile_size=9)
    np.testing.assert_allclose(
        weighted, 0.75 * predict_volume(a, image) + 0.25 * predict_volume(b, image), atol=1e-6
    )
    with pytest.raises(LesionsegError):
        predict_ensemble([a, Pointwise(2, 3)], image)


def test_wrong_channels_is_a_clear_error(deepmedic, image):
    with pytest.raises(LesionsegError, match="2 channel"):
        predict_volume(deepmedic, image[:1])


def test_model_state_restored(deepmedic, image):
    deepmedic.train()
    predict_volume(deepmedic, image[:, :10, :10, :10], tile_size=6)
    assert deepmedic.training
    assert deepmedic.normal.layers[1].conv.weight.is_contiguous()
    deepmedic.eval()
