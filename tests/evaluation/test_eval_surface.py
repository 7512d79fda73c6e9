"""Surface distances against MONAI 1.6, MedPy 0.5 and DeepMind's surface-distance."""

import math

import numpy as np
import pytest
import torch
from eval_masks import blob_mask
from medpy.metric import binary as medpy_binary
from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance

from lesionseg.evaluation.surface import (
    corner_surface_distances,
    surface_metrics,
    surfel_area_table,
    voxel_surface_distances,
)

SPACINGS = [(1.0, 1.0, 1.0), (0.7, 1.3, 2.9), (3.0, 0.5, 1.0)]


def _t(a):
    return torch.as_tensor(a[None, None].astype(np.float32))


def _cases():
    """Random blobs, a prediction touching the image border, and a near-perfect prediction."""
    out = []
    for seed in range(3):
        out.append((blob_mask((22, 26, 18), 0.08, seed), blob_mask((22, 26, 18), 0.1, seed + 50)))
    ref = blob_mask((20, 20, 20), 0.15, 7)
    pred = ref.copy()
    pred[0, :, :] = True  # touches the image border: the edge must count as background
    out.append((pred, ref))
    near = ref.copy()
    near[10, 10, 10] = ~near[10, 10, 10]
    out.append((near, ref))
    return out


@pytest.mark.parametrize("spacing", SPACINGS)
def test_distances_match_monai_and_medpy(spacing):
    for pred, ref in _cases():
        m = surface_metrics(pred, ref, spacing, hd95=("monai", "medpy"))
        monai_hd = compute_hausdorff_distance(_t(pred), _t(ref), spacing=spacing).item()
        monai_hd95 = compute_hausdorff_distance(
            _t(pred), _t(ref), percentile=95, spacing=spacing
        ).item()
        monai_assd = compute_average_surface_distance(
            _t(pred), _t(ref), symmetric=True, spacing=spacing
        ).item()
        assert m["hd_mm"] == pytest.approx(monai_hd, abs=1e-3)
        assert m["hd_mm"] == pytest.approx(medpy_binary.hd(pred, ref, spacing), abs=1e-3)
        assert m["hd95_monai_mm"] == pytest.approx(monai_hd95, abs=1e-3)
        assert m["hd95_medpy_mm"] == pytest.approx(medpy_binary.hd95(pred, ref, spacing), abs=1e-3)
        assert m["assd_mm"] == pytest.approx(monai_assd, abs=1e-3)
        assert m["assd_mm"] == pytest.approx(medpy_binary.assd(pred, ref, spacing), abs=1e-3)


@pytest.mark.parametrize("spacing", SPACINGS)
def test_area_weighted_hd95_matches_deepmind(spacing, deepmind_numpy2):
    sd = deepmind_numpy2
    for pred, ref in _cases():
        ours = corner_surface_distances(pred, ref, spacing)
        theirs = sd.compute_surface_distances(ref, pred, spacing)
        assert ours.percentile_area_weighted(95) == pytest.approx(
            sd.compute_robust_hausdorff(theirs, 95), abs=1e-3
        )
        assert ours.ref_areas.sum() == pytest.approx(theirs["surfel_areas_gt"].sum(), rel=1e-9)
        assert ours.pred_areas.sum() == pytest.approx(theirs["surfel_areas_pred"].sum(), rel=1e-9)
        assert np.sort(ours.ref_to_pred) == pytest.approx(theirs["distances_gt_to_pred"], abs=1e-6)
        m = surface_metrics(pred, ref, spacing, hd95="deepmind")
        assert m["hd95_deepmind_mm"] == pytest.approx(
            sd.compute_robust_hausdorff(theirs, 95), abs=1e-3
        )


@pytest.mark.parametrize("spacing", SPACINGS)
def test_surfel_area_table_equals_deepmind_lookup(spacing, deepmind_numpy2):
    from surface_distance import lookup_tables

    theirs = lookup_tables.create_table_neighbour_code_to_surface_area(spacing)
    ours = surfel_area_table(spacing)
    # DeepMind's bit 7 - b is our bit b (their kernel weights voxel (0,0,0) by 128)
    reversed_bits = [int(f"{c:08b}"[::-1], 2) for c in range(256)]
    assert ours[reversed_bits] == pytest.approx(theirs, abs=1e-12)


def test_the_three_hd95_definitions_differ_on_the_same_masks():
    pred, ref = _cases()[0]
    m = surface_metrics(pred, ref, (0.7, 1.3, 2.9), hd95=("monai", "medpy", "deepmind"))
    values = {m["hd95_monai_mm"], m["hd95_medpy_mm"], m["hd95_deepmind_mm"]}
    assert len(values) == 3
    assert m["hd95_medpy_mm"] <= m["hd95_monai_mm"] <= m["hd_mm"]


def test_hand_computed_distances_with_anisotropic_spacing():
    ref = np.zeros((5, 5, 9), bool)
    pred = np.zeros((5, 5, 9), bool)
    ref[2, 2, 2] = True
    pred[2, 2, 6] = True  # 4 voxels apart along axis 2 of 2.5 mm
    m = surface_metrics(pred, ref, (1.0, 1.0, 2.5), hd95=("monai", "medpy", "deepmind"))
    assert m["hd_mm"] == pytest.approx(10.0)
    assert m["hd95_monai_mm"] == pytest.approx(10.0)
    assert m["assd_mm"] == pytest.approx(10.0)
    # corner surfaces: the 8 corners of each voxel lie at 3 or 4 voxels (7.5 or 10 mm) from
    # the other voxel's nearest corner, with equal areas: the area-weighted 95th is 10 mm
    corners = corner_surface_distances(pred, ref, (1.0, 1.0, 2.5))
    assert sorted(corners.ref_to_pred) == pytest.approx([7.5] * 4 + [10.0] * 4)
    assert corners.ref_areas == pytest.approx(np.full(8, corners.ref_areas[0]))
    assert m["hd95_deepmind_mm"] == pytest.approx(10.0)


def test_empty_masks():
    empty = np.zeros((6, 6, 6), bool)
    some = empty.copy()
    some[2:4, 2:4, 2:4] = True
    both = surface_metrics(empty, empty, 1.0, hd95=("monai", "deepmind"))
    assert set(both.values()) == {0.0}
    one = surface_metrics(some, empty, 1.0)
    assert all(math.isnan(v) for v in one.values())
    brats = surface_metrics(empty, some, 1.0, hd95="deepmind", empty_distance=374.0)
    assert set(brats.values()) == {374.0}
    sd = voxel_surface_distances(empty, some, 1.0)
    assert sd.empty and np.all(np.isinf(sd.ref_to_pred))
