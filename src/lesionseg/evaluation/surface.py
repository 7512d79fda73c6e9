"""Surface distances in millimetres: Hausdorff, HD95 (three definitions) and ASSD.

Two kinds of surface are in use by the reference tools:

* **Voxel surfaces** (MONAI 1.6 ``get_mask_edges`` without sub-voxels, MedPy 0.5
  ``__surface_distances``): the foreground voxels with a background 6-neighbour
  (the mask XOR its erosion by the 6-connected cross, outside the image counting
  as background). Distances are Euclidean between voxel centres, scaled by the
  voxel spacing. The Hausdorff distance, ASSD and the MONAI and MedPy HD95 use them.
* **Corner surfaces** (DeepMind ``surface_distance.compute_surface_distances``,
  used by the BraTS 2023 tools): the corners of the voxel grid whose 2×2×2
  neighbourhood is neither all foreground nor all background, each weighted by
  the area of the marching-cubes surface element inside that neighbourhood.

HD95 definitions: ``monai`` = the larger of the two directed 95th percentiles;
``medpy`` = the 95th percentile of both directions pooled; ``deepmind`` = the
larger of the two directed area-weighted 95th percentiles on corner surfaces.

Speed: the masks are cropped to the bounding box of their union (plus a
one-voxel zero border) and the nearest-surface distances come from k-d trees on
the surface points, as MONAI does on CPU; points lying on both surfaces are
given distance 0 without a query. Both directions and every metric come from
one pass; on a 182×218×182 case with 40 lesions this is several times faster than
the MONAI calls for the same numbers (benchmarks/bench_evaluation.py).
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

HD95_VARIANTS = ("monai", "medpy", "deepmind")


@dataclass
class SurfaceDistances:
    """Distances from each surface element of one mask to the other mask's surface.

    Attributes:
        pred_to_ref: Distance in mm from every predicted surface element to the
            reference surface (unsorted).
        ref_to_pred: Distance in mm from every reference surface element to the
            predicted surface.
        pred_areas: Area in mm² of each predicted surface element (corner surfaces
            only; None for voxel surfaces, where every element counts once).
        ref_areas: Area in mm² of each reference surface element, or None.
    """

    pred_to_ref: np.ndarray
    ref_to_pred: np.ndarray
    pred_areas: np.ndarray | None = None
    ref_areas: np.ndarray | None = None

    @property
    def empty(self) -> bool:
        """True if at least one of the two surfaces has no element."""
        return self.pred_to_ref.size == 0 or self.ref_to_pred.size == 0

    def hausdorff(self) -> float:
        """Maximum of both directed maxima."""
        return float(max(self.pred_to_ref.max(), self.ref_to_pred.max()))

    def assd(self) -> float:
        """Average symmetric surface distance: mean of both directions pooled."""
        total = self.pred_to_ref.sum() + self.ref_to_pred.sum()
        return float(total / (self.pred_to_ref.size + self.ref_to_pred.size))

    def percentile_max_directed(self, q: float = 95.0) -> float:
        """MONAI's HD95: the larger of the two directed ``q``-th percentiles."""
        return float(max(np.percentile(self.pred_to_ref, q), np.percentile(self.ref_to_pred, q)))

    def percentile_pooled(self, q: float = 95.0) -> float:
        """MedPy's HD95: the ``q``-th percentile of both directions pooled."""
        return float(np.percentile(np.concatenate([self.pred_to_ref, self.ref_to_pred]), q))

    def percentile_area_weighted(self, q: float = 95.0) -> float:
        """DeepMind's robust Hausdorff: larger of the directed area-weighted percentiles."""
        if self.pred_areas is None or self.ref_areas is None:
            raise ValueError("area-weighted percentiles need corner surfaces (with areas)")
        return float(
            max(
                _area_weighted_percentile(self.ref_to_pred, self.ref_areas, q),
                _area_weighted_percentile(self.pred_to_ref, self.pred_areas, q),
            )
        )


def _area_weighted_percentile(distances: np.ndarray, areas: np.ndarray, q: float) -> float:
    """Smallest distance whose cumulative area share reaches ``q`` percent.

    Sorted by (distance, area) like the reference code so that the cumulative sums,
    and hence the chosen element at a tie of the 95% level, are the same.
    """
    order = np.lexsort((areas, distances))
    cum = np.cumsum(areas[order]) / np.sum(areas[order])
    idx = int(np.searchsorted(cum, q / 100.0))
    return float(distances[order][min(idx, distances.size - 1)])


def union_crop(
    pred: np.ndarray, ref: np.ndarray, margin: int = 1
) -> tuple[np.ndarray, np.ndarray] | None:
    """Crop both masks to their union's bounding box with a zero border of ``margin`` voxels.

    Returns None if both masks are empty. A border of one voxel makes the image edge
    count as background, as scipy's erosion with ``border_value=0`` does.
    """
    union = pred | ref
    box = []
    for axis in range(union.ndim):
        others = tuple(a for a in range(union.ndim) if a != axis)
        hits = np.flatnonzero(union.any(axis=others))
        if hits.size == 0:
            return None
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    box = tuple(box)
    shape = tuple(s.stop - s.start + 2 * margin for s in box)
    inner = tuple(slice(margin, n - margin) for n in shape)
    out = []
    for mask in (pred, ref):
        padded = np.zeros(shape, dtype=bool)
        padded[inner] = mask[box]
        out.append(padded)
    return out[0], out[1]


def _voxel_edges(padded: np.ndarray) -> np.ndarray:
    """Foreground voxels with a background 6-neighbour, on the padded array's interior."""
    ndim = padded.ndim
    centre = tuple(slice(1, -1) for _ in range(ndim))
    core = padded[centre]
    interior = core.copy()
    for axis in range(ndim):
        for start in (0, 2):
            shifted = tuple(
                slice(start, start + n - 2) if a == axis else slice(1, -1)
                for a, n in enumerate(padded.shape)
            )
            interior &= padded[shifted]
    return core & ~interior


def _directed_distances(
    from_edge: np.ndarray, to_edge: np.ndarray, to_tree: cKDTree | None, spacing: np.ndarray
) -> np.ndarray:
    """Distance from every element of ``from_edge`` to the nearest element of ``to_edge``."""
    shared = from_edge & to_edge
    n_shared = int(np.count_nonzero(shared))
    rest = np.argwhere(from_edge & ~to_edge)
    if to_tree is None:
        return np.full(n_shared + len(rest), np.inf)
    if len(rest) == 0:
        return np.zeros(n_shared)
    dist = to_tree.query(rest * spacing, k=1)[0]
    return np.concatenate([np.zeros(n_shared), dist])


def _tree(edge: np.ndarray, spacing: np.ndarray) -> cKDTree | None:
    points = np.argwhere(edge)
    if len(points) == 0:
        return None
    # a larger leaf than the default suits one batched query (MONAI measured the same)
    return cKDTree(points * spacing, leafsize=32)


def _symmetric(
    pred_edge: np.ndarray, ref_edge: np.ndarray, spacing: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Both directed distance arrays (each: shared elements first, then the rest)."""
    pred_to_ref = _directed_distances(pred_edge, ref_edge, _tree(ref_edge, spacing), spacing)
    ref_to_pred = _directed_distances(ref_edge, pred_edge, _tree(pred_edge, spacing), spacing)
    return pred_to_ref, ref_to_pred


def _as_spacing(spacing, ndim: int) -> np.ndarray:
    spacing = np.broadcast_to(np.asarray(spacing, dtype=np.float64), (ndim,)).copy()
    if np.any(spacing <= 0) or not np.all(np.isfinite(spacing)):
        raise ValueError(f"voxel spacing must be positive and finite, got {spacing}")
    return spacing


def voxel_surface_distances(pred: np.ndarray, ref: np.ndarray, spacing) -> SurfaceDistances:
    """Directed distances between the voxel surfaces of two masks (MONAI/MedPy surfaces).

    Args:
        pred: Predicted mask (non-zero is foreground).
        ref: Reference mask of the same shape.
        spacing: Voxel size in mm along each array axis (a number for isotropic voxels).

    Returns:
        Distances in mm; an empty mask gives an empty array for its own direction
        and infinite distances for the other.
    """
    pred = np.asarray(pred, dtype=bool)
    ref = np.asarray(ref, dtype=bool)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference {ref.shape}")
    spacing = _as_spacing(spacing, pred.ndim)
    crop = union_crop(pred, ref)
    if crop is None:
        return SurfaceDistances(np.zeros(0), np.zeros(0))
    pred_edge, ref_edge = (_voxel_edges(m) for m in crop)
    pred_to_ref, ref_to_pred = _symmetric(pred_edge, ref_edge, spacing)
    return SurfaceDistances(pred_to_ref, ref_to_pred)


@functools.cache
def _unit_triangles() -> tuple[np.ndarray, ...]:
    """Marching-cubes triangles (in voxel units) of each 2×2×2 neighbourhood code.

    Bit ``4*d0 + 2*d1 + d2`` of a code is the voxel at offset (d0, d1, d2). The
    triangles come from scikit-image's classic Lorensen table; a code with more than
    four foreground voxels takes its complement's triangles, which reproduces
    DeepMind's surfel-area table exactly (tested for several spacings).
    """
    from skimage.measure import marching_cubes  # slow import, needed only here

    triangles: list[np.ndarray] = [np.zeros((0, 3, 3))] * 256
    for code in range(1, 255):
        use = code if bin(code).count("1") <= 4 else 255 - code
        cube = np.zeros((2, 2, 2), dtype=np.float64)
        for bit, offset in enumerate(itertools.product((0, 1), repeat=3)):
            if use >> bit & 1:
                cube[offset] = 1.0
        verts, faces, _, _ = marching_cubes(cube, 0.5, method="lorensen")
        triangles[code] = np.asarray(verts, dtype=np.float64)[faces]
    return tuple(triangles)


@functools.lru_cache(maxsize=64)
def surfel_area_table(spacing: tuple[float, float, float]) -> np.ndarray:
    """Surface area in mm² of the surface element of each of the 256 corner codes."""
    scale = np.asarray(spacing, dtype=np.float64)
    table = np.zeros(256)
    for code, tris in enumerate(_unit_triangles()):
        if len(tris):
            t = tris * scale
            cross = np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0])
            table[code] = 0.5 * np.linalg.norm(cross, axis=1).sum()
    return table


def _corner_codes(padded: np.ndarray) -> np.ndarray:
    """The 8-bit neighbourhood code of every voxel corner of a zero-padded 3D mask."""
    out_shape = tuple(n - 1 for n in padded.shape)
    codes = np.zeros(out_shape, dtype=np.uint8)
    as_bytes = padded.view(np.uint8)
    for bit, (d0, d1, d2) in enumerate(itertools.product((0, 1), repeat=3)):
        window = as_bytes[d0 : d0 + out_shape[0], d1 : d1 + out_shape[1], d2 : d2 + out_shape[2]]
        codes |= window << np.uint8(bit)
    return codes


def corner_surface_distances(pred: np.ndarray, ref: np.ndarray, spacing) -> SurfaceDistances:
    """Area-weighted corner surfaces and their distances (DeepMind's ``surface_distance``).

    Args:
        pred: Predicted 3D mask.
        ref: Reference 3D mask of the same shape.
        spacing: Voxel size in mm along each array axis.

    Returns:
        Distances in mm with the surface-element areas in mm².
    """
    pred = np.asarray(pred, dtype=bool)
    ref = np.asarray(ref, dtype=bool)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference {ref.shape}")
    if pred.ndim != 3:
        raise ValueError("corner (DeepMind) surfaces are implemented for 3D masks only")
    spacing = _as_spacing(spacing, 3)
    crop = union_crop(pred, ref)
    empty = np.zeros(0)
    if crop is None:
        return SurfaceDistances(empty, empty, empty, empty)
    table = surfel_area_table(tuple(float(s) for s in spacing))
    codes = [_corner_codes(m) for m in crop]
    borders = [(c != 0) & (c != 255) for c in codes]
    pred_to_ref, ref_to_pred = _symmetric(borders[0], borders[1], spacing)
    # areas in the order the distances were produced: shared elements first, then the rest
    areas = []
    for own, other, code in (
        (borders[0], borders[1], codes[0]),
        (borders[1], borders[0], codes[1]),
    ):
        areas.append(np.concatenate([table[code[own & other]], table[code[own & ~other]]]))
    return SurfaceDistances(pred_to_ref, ref_to_pred, areas[0], areas[1])


def surface_metrics(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing,
    hd95: str | tuple[str, ...] = "monai",
    empty_distance: float = float("nan"),
    percentile: float = 95.0,
) -> dict[str, float]:
    """Hausdorff distance, HD95 in the chosen definition(s) and ASSD, in mm.

    Args:
        pred: Predicted mask.
        ref: Reference mask of the same shape.
        spacing: Voxel size in mm along each array axis.
        hd95: One or several of ``"monai"``, ``"medpy"``, ``"deepmind"``.
        empty_distance: Value of every distance when exactly one mask is empty
            (the distance is undefined; NaN by default, 374 in the BraTS tools).
        percentile: The percentile of the "HD95" metrics.

    Returns:
        ``hd_mm``, ``hd95_<variant>_mm`` for each variant, ``assd_mm``. Both masks
        empty gives 0 for every distance (BraTS convention).
    """
    variants = (hd95,) if isinstance(hd95, str) else tuple(hd95)
    for v in variants:
        if v not in HD95_VARIANTS:
            raise ValueError(f"unknown HD95 definition {v!r} (known: {', '.join(HD95_VARIANTS)})")
    keys = ["hd_mm", *(f"hd95_{v}_mm" for v in variants), "assd_mm"]
    pred = np.asarray(pred, dtype=bool)
    ref = np.asarray(ref, dtype=bool)
    pred_any, ref_any = bool(pred.any()), bool(ref.any())
    if not pred_any and not ref_any:
        return dict.fromkeys(keys, 0.0)
    if not pred_any or not ref_any:
        return dict.fromkeys(keys, float(empty_distance))
    sd = voxel_surface_distances(pred, ref, spacing)
    out = {"hd_mm": sd.hausdorff()}
    for v in variants:
        if v == "monai":
            out["hd95_monai_mm"] = sd.percentile_max_directed(percentile)
        elif v == "medpy":
            out["hd95_medpy_mm"] = sd.percentile_pooled(percentile)
        else:
            corners = corner_surface_distances(pred, ref, spacing)
            out["hd95_deepmind_mm"] = corners.percentile_area_weighted(percentile)
    out["assd_mm"] = sd.assd()
    return out
