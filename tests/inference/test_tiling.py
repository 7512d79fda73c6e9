"""Tile plans: coverage, phase, skipping, memory-based size."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from lesionseg.inference.tiling import (
    activation_bytes,
    axis_starts,
    choose_tile_size,
    gaussian_weight,
    plan_same,
    plan_valid,
    tiles_with_brain,
)
from lesionseg.models import ModelGeometry
from lesionseg.models.deepmedic import DeepMedic

DM = ModelGeometry(3, 1, 2, context=(49, 49, 49), size_multiple=(3, 3, 3))


def test_axis_starts_abut_and_last_tile_ends_at_border():
    assert axis_starts(30, 9, 3) == [0, 9, 18, 21]
    assert axis_starts(9, 9) == [0]
    with pytest.raises(ValueError):
        axis_starts(31, 9, 3)


@pytest.mark.parametrize(
    "shape,tile", [((31, 40, 26), 9), ((50, 17, 33), (12, 6, 30)), ((10, 10, 10), None)]
)
def test_valid_plan_covers_every_voxel_once_on_the_phase_lattice(shape, tile):
    plan = plan_valid(shape, DM, tile)
    assert all(o % 3 == 0 and o >= s for o, s in zip(plan.out_shape, shape))
    assert plan.pad_before == (24, 24, 24)
    # Padded input = volume + margins + rounding, a multiple of 3.
    assert all((s + b + a) % 3 == 0 for s, b, a in zip(shape, plan.pad_before, plan.pad_after))
    assert plan.tile_in == tuple(t + 48 for t in plan.tile_out)
    covered = np.zeros(plan.out_shape, int)
    for start in plan.starts:
        assert all(s % 3 == 0 for s in start)
        covered[tuple(slice(s, s + t) for s, t in zip(start, plan.tile_out))] += 1
    assert (covered >= 1).all()
    # Overlap only where the last tile was shifted back.
    assert covered.sum() == np.prod(plan.tile_out) * len(plan.starts)


def test_tile_size_is_evened_out():
    plan = plan_valid((140, 140, 140), DM, 72)
    assert plan.tile_out == (72, 72, 72) and len(plan.starts) == 8
    plan = plan_valid((100, 100, 100), DM, 60)  # 2 tiles of 51 rather than 60 + 42
    assert plan.tile_out == (51, 51, 51)


def test_skip_tiles_without_brain():
    mask = np.zeros((30, 30, 30), bool)
    mask[2, 2, 2] = True
    starts = list(itertools.product([0, 15], repeat=3))
    assert tiles_with_brain(starts, (15, 15, 15), mask) == [(0, 0, 0)]
    assert len(tiles_with_brain(starts, (15, 15, 15), None)) == 8


def test_same_plan_overlaps_and_weights():
    g = ModelGeometry(3, 1, 2, size_multiple=(8, 8, 8))
    whole = plan_same((30, 20, 9), g, None)
    assert whole.padded_shape == (32, 24, 16) and whole.starts == ((0, 0, 0),)
    tiled = plan_same((70, 20, 9), g, 32)
    assert tiled.tile == (32, 24, 16)
    xs = sorted({s[0] for s in tiled.starts})
    assert xs[0] == 0 and xs[-1] + 32 == tiled.padded_shape[0]
    assert max(np.diff(xs)) <= 16  # at least half overlap
    w = gaussian_weight((9, 9))
    assert w[4, 4] == 1.0 and w.min() > 0 and np.allclose(w, w[::-1, ::-1])


def test_activation_estimate_and_tile_choice():
    model = DeepMedic(4, 2, widths=[30, 30, 40, 40, 40, 40, 50, 50])
    small = activation_bytes(model, (1, 4, 57, 57, 57))
    # Largest layer output: 30 maps of 23³ (the normal pathway's first layer on its 25³ input).
    assert small == 4 * (4 * 57**3 + 3 * 30 * 23**3)
    preferred = model.geometry.inference_tile
    big = choose_tile_size(model, (150, 150, 150), budget_bytes=1 << 40)
    assert big == (preferred,) * 3  # the model's preferred tile, not more
    tight = choose_tile_size(model, (150, 150, 150), budget_bytes=small * 2)
    assert (
        tight[0] % 3 == 0 and activation_bytes(model, (1, 4, *(t + 48 for t in tight))) <= small * 2
    )
    with pytest.raises(Exception, match="memory"):
        choose_tile_size(model, (150, 150, 150), budget_bytes=1000)
    assert next(model.parameters()).device.type == "cpu"
