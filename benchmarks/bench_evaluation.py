"""Evaluation speed on one 1 mm brain-size case (182×218×182) with a few dozen lesions.

Rows: time of all metrics with the default settings (voxel, surface with MONAI HD95,
ISLES'22 lesion-wise), of every preset and every HD95 definition, and the speed of
the surface distances against MONAI 1.6 (and DeepMind's surface-distance) on the
same masks, as ratios measured in the same run (> 1: lesionseg is faster).
"""

from __future__ import annotations

import time

import numpy as np

from lesionseg.evaluation import PRESETS, evaluate_masks
from lesionseg.evaluation.surface import corner_surface_distances, surface_metrics

SHAPE = (182, 218, 182)
SPACING = (1.0, 1.0, 1.0)


def _ball(mask: np.ndarray, centre: np.ndarray, radius: float) -> None:
    lo = np.maximum(np.floor(centre - radius).astype(int), 0)
    hi = np.minimum(np.ceil(centre + radius).astype(int) + 1, mask.shape)
    grid = np.indices(tuple(hi - lo)).reshape(3, -1).T + lo
    inside = ((grid - centre) ** 2).sum(1) <= radius**2
    mask[tuple(grid[inside].T)] = True


def make_case(shape=SHAPE, n_lesions: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A reference with ``n_lesions`` balls in a brain-sized region and a perturbed prediction."""
    rng = np.random.default_rng(seed)
    ref = np.zeros(shape, bool)
    pred = np.zeros(shape, bool)
    centre = np.array(shape) / 2
    for _ in range(n_lesions):
        c = centre + rng.uniform(-0.35, 0.35, 3) * np.array(shape)
        r = rng.uniform(1.5, 9.0)
        _ball(ref, c, r)
        if rng.random() < 0.15:
            continue  # missed lesion
        _ball(pred, c + rng.normal(0, 1.0, 3), r * rng.uniform(0.7, 1.2))
    for _ in range(n_lesions // 4):  # false positives
        _ball(pred, centre + rng.uniform(-0.35, 0.35, 3) * np.array(shape), rng.uniform(1, 3))
    return pred, ref


def _best(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _monai_surface(pred: np.ndarray, ref: np.ndarray):
    """MONAI's calls for the same three numbers (HD, HD95, symmetric ASSD)."""
    import torch
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance

    p = torch.as_tensor(pred[None, None])
    r = torch.as_tensor(ref[None, None])

    def hd95():
        return compute_hausdorff_distance(p, r, percentile=95, spacing=SPACING)

    def all_three():
        compute_hausdorff_distance(p, r, spacing=SPACING)
        hd95()
        compute_average_surface_distance(p, r, symmetric=True, spacing=SPACING)

    return hd95, all_three


def run(quick: bool = False) -> list[dict]:
    """Measure; ``quick`` uses a smaller volume and fewer repeats."""
    shape = (91, 109, 91) if quick else SHAPE
    repeat = 1 if quick else 3
    pred, ref = make_case(shape, n_lesions=20 if quick else 40)
    info = {
        "shape": "x".join(map(str, shape)),
        "ref_voxels": int(ref.sum()),
        "pred_voxels": int(pred.sum()),
    }
    rows = []
    evaluate_masks(pred, ref, SPACING)  # warm-up (imports, table caches)
    t_default = _best(lambda: evaluate_masks(pred, ref, SPACING), repeat)
    rows.append(
        {
            "benchmark": "evaluation",
            "metric": "all metrics, default settings",
            "value": t_default,
            "unit": "s",
            **info,
            "settings": "voxel + HD/HD95(monai)/ASSD + isles22",
        }
    )
    every = PRESETS.names()
    t_all = _best(
        lambda: evaluate_masks(
            pred, ref, SPACING, presets=every, hd95=("monai", "medpy", "deepmind")
        ),
        repeat,
    )
    rows.append(
        {
            "benchmark": "evaluation",
            "metric": "all metrics, every preset and HD95",
            "value": t_all,
            "unit": "s",
            **info,
            "presets": len(every),
        }
    )
    t_ours = _best(lambda: surface_metrics(pred, ref, SPACING, hd95="monai"), repeat)
    rows.append(
        {
            "benchmark": "evaluation",
            "metric": "surface HD+HD95+ASSD (lesionseg)",
            "value": t_ours,
            "unit": "s",
            **info,
        }
    )
    try:
        monai_hd95, monai_all = _monai_surface(pred, ref)
    except ImportError:
        monai_hd95 = None
    if monai_hd95 is not None:
        monai_hd95()  # warm-up
        t_m95 = _best(monai_hd95, repeat)
        t_mall = _best(monai_all, repeat)
        rows.append(
            {
                "benchmark": "evaluation",
                "metric": "surface HD95 (MONAI 1.6)",
                "value": t_m95,
                "unit": "s",
                **info,
            }
        )
        rows.append(
            {
                "benchmark": "evaluation",
                "metric": "surface HD+HD95+ASSD (MONAI 1.6)",
                "value": t_mall,
                "unit": "s",
                **info,
            }
        )
        rows.append(
            {
                "benchmark": "evaluation",
                "metric": "speed-up vs MONAI, HD95 alone (MONAI time / ours for all 3)",
                "value": t_m95 / t_ours,
                "unit": "x",
                **info,
            }
        )
        rows.append(
            {
                "benchmark": "evaluation",
                "metric": "speed-up vs MONAI, HD+HD95+ASSD",
                "value": t_mall / t_ours,
                "unit": "x",
                **info,
            }
        )
    t_corner = _best(
        lambda: corner_surface_distances(pred, ref, SPACING).percentile_area_weighted(95), repeat
    )
    rows.append(
        {
            "benchmark": "evaluation",
            "metric": "surface HD95 deepmind (lesionseg)",
            "value": t_corner,
            "unit": "s",
            **info,
        }
    )
    try:
        if not hasattr(np, "Inf"):
            np.Inf = np.inf  # the package predates numpy 2
        import surface_distance as sd

        def deepmind():
            sd.compute_robust_hausdorff(sd.compute_surface_distances(ref, pred, SPACING), 95)

        t_dm = _best(deepmind, repeat)
        rows.append(
            {
                "benchmark": "evaluation",
                "metric": "surface HD95 (DeepMind surface-distance)",
                "value": t_dm,
                "unit": "s",
                **info,
            }
        )
        rows.append(
            {
                "benchmark": "evaluation",
                "metric": "speed-up vs DeepMind, HD95",
                "value": t_dm / t_corner,
                "unit": "x",
                **info,
            }
        )
    except ImportError:
        pass
    return rows
