"""Sub-volume prediction along an exact-halo axis equals whole-volume prediction (Brain SegNet)."""

from __future__ import annotations

import numpy as np
import torch

from lesionseg.inference.predictor import predict_volume
from lesionseg.inference.tiling import activation_bytes, choose_tile_size, plan_same
from lesionseg.models.brainsegnet import BrainSegNet


def _model(slice_axis=2):
    torch.manual_seed(0)
    model = BrainSegNet(2, 3, widths=(4, 4, 8), refine_channels=4, slice_axis=slice_axis)
    for m in model.modules():  # non-trivial running statistics for eval mode
        if isinstance(m, torch.nn.BatchNorm3d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def test_declared_halo_bounds_how_far_a_slice_reaches():
    model = _model()
    halo = model.geometry.exact_halo
    assert halo[0] is None and halo[1] is None and halo[2] == 2 + 5 + 5 + 2  # 14 3x3x3 convs
    x = torch.randn(1, 2, 8, 8, 40, dtype=torch.float64)
    model.double()
    with torch.no_grad():
        base = model(x)
        moved = x.clone()
        moved[..., 20] += 1.0
        changed = (model(moved) - base).abs().amax(dim=(0, 1, 2, 3)) > 1e-12
    reach = np.flatnonzero(changed.numpy())
    assert reach.min() >= 20 - halo[2] and reach.max() <= 20 + halo[2]
    assert reach.max() - 20 == halo[2]  # the bound is tight for this network


def test_tiles_along_the_slice_axis_equal_the_whole_volume():
    model = _model()
    rng = np.random.default_rng(0)
    image = rng.normal(0, 1, (2, 16, 24, 70)).astype(np.float32)
    mask = np.ones(image.shape[1:], np.uint8)
    whole = predict_volume(model, image, mask=mask)
    plan = plan_same(image.shape[1:], model.geometry, (16, 24, 33))
    assert len(plan.starts) > 2  # several sub-volumes along the slices
    tiled = predict_volume(model, image, mask=mask, tile_size=(16, 24, 33))
    np.testing.assert_allclose(tiled, whole, atol=1e-5)


def test_memory_limited_tiles_are_cut_along_the_slice_axis_only():
    model = _model()
    whole = (32, 32, 200)
    budget = activation_bytes(model, (1, 2, *whole)) // 3
    tile = choose_tile_size(model, whole, budget_bytes=budget)
    assert tile is not None and tile[:2] == (32, 32) and 2 * 14 < tile[2] < 200
