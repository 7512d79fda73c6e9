"""Where the tiles of a dense prediction go, and how big they are.

Everything here follows from a model's :class:`~lesionseg.models.geometry.ModelGeometry`:

* **valid-convolution models** (DeepMedic): the volume is padded by the model's
  margins so that the output covers every voxel, and cut into tiles whose outputs
  abut (stride = output tile size); the last tile on each axis is shifted back to end
  at the border. A model with ``size_multiple`` m > 1 (DeepMedic's strided pathway,
  m = 3) computes each output voxel from the block of the input it falls in, so the
  padded volume is rounded up to a multiple of m and every tile starts on a multiple
  of m. Then each tile computes exactly what the whole-volume pass computes for the
  same voxels: tiled output = whole-volume output.
* **same-padded models** (U-Nets, Brain SegNet): the whole volume when it fits,
  padded up to ``size_multiple``; otherwise overlapping tiles blended with a Gaussian
  weight (as nnU-Net and MONAI do).

Tile size is ``--tile`` when given; otherwise the largest that fits in a share of
the free memory, capped by the model's preferred tile (``geometry.inference_tile``,
measured by ``benchmarks/bench_deepmedic.py`` for DeepMedic).
"""

from __future__ import annotations

import copy
import itertools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from lesionseg.errors import LesionsegError
from lesionseg.models.geometry import ModelGeometry

#: Largest tile side tried when choosing automatically (same-padded models).
MAX_AUTO_TILE = 256
#: Share of the free memory a tile's activations may use.
MEMORY_SHARE = 0.4


def round_up(value: int, multiple: int) -> int:
    """Smallest multiple of ``multiple`` that is ≥ ``value``."""
    return -(-int(value) // int(multiple)) * int(multiple)


@dataclass(frozen=True)
class ValidPlan:
    """How a volume is padded and tiled for a valid-convolution model.

    Attributes:
        shape: Spatial shape of the volume.
        pad_before: Voxels added before each axis (the model's margin).
        pad_after: Voxels added after each axis (margin + rounding to ``size_multiple``).
        out_shape: Spatial shape of the full output grid (≥ ``shape``; cropped at the end).
        tile_out: Output size of every tile.
        starts: Start of every tile, in output coordinates (= padded-input coordinates).
        context: The model's context per axis.
    """

    shape: tuple[int, ...]
    pad_before: tuple[int, ...]
    pad_after: tuple[int, ...]
    out_shape: tuple[int, ...]
    tile_out: tuple[int, ...]
    starts: tuple[tuple[int, ...], ...]
    context: tuple[int, ...]

    @property
    def tile_in(self) -> tuple[int, ...]:
        """Input size of every tile (output + context − 1)."""
        return tuple(t + c - 1 for t, c in zip(self.tile_out, self.context))


def axis_starts(total: int, tile: int, multiple: int = 1) -> list[int]:
    """Tile starts covering ``[0, total)`` at stride ``tile``, the last one ending at ``total``.

    Args:
        total: Length to cover.
        tile: Tile length (≤ total).
        multiple: Every start must be a multiple of this (``total`` and ``tile`` are).
    """
    if tile >= total:
        return [0]
    starts = list(range(0, total - tile, tile)) + [total - tile]
    if any(s % multiple for s in starts):
        raise ValueError(f"tile starts {starts} are not multiples of {multiple}")
    return starts


def plan_valid(
    shape: Sequence[int],
    geometry: ModelGeometry,
    tile_size: int | Sequence[int] | None,
) -> ValidPlan:
    """Padding and tiles for a valid-convolution model.

    Args:
        shape: Spatial shape of the volume.
        geometry: The model's geometry.
        tile_size: Wanted output tile size per axis (an int for all axes), or None for
            one tile covering the whole volume. Rounded to a multiple of
            ``size_multiple``; with several tiles per axis the size is evened out so
            that the last tile overlaps the others as little as possible.

    Raises:
        ValueError: A model whose margins are not a multiple of its ``size_multiple``
            (tiles could not keep the phase of its strided pathways).
    """
    shape = tuple(int(s) for s in shape)
    n = len(shape)
    before, after = geometry.margin_before, geometry.margin_after
    multiple = geometry.size_multiple
    for b, a, m in zip(before, after, multiple):
        if (b + a) % m:
            raise ValueError(
                f"margins {before}/{after} are not multiples of size_multiple {multiple}: "
                "tiles cannot keep the model's phase"
            )
    out_shape = tuple(round_up(s, m) for s, m in zip(shape, multiple))
    if tile_size is None:
        wanted = out_shape
    else:
        wanted = (int(tile_size),) * n if np.isscalar(tile_size) else tuple(tile_size)
    tile_out, starts_per_axis = [], []
    for total, want, m in zip(out_shape, wanted, multiple):
        want = max(m, round_up(min(int(want), total), m))
        count = math.ceil(total / want)
        tile = min(total, round_up(math.ceil(total / count), m))
        tile_out.append(tile)
        starts_per_axis.append(axis_starts(total, tile, m))
    return ValidPlan(
        shape=shape,
        pad_before=tuple(before),
        pad_after=tuple(a + o - s for a, o, s in zip(after, out_shape, shape)),
        out_shape=out_shape,
        tile_out=tuple(tile_out),
        starts=tuple(itertools.product(*starts_per_axis)),
        context=tuple(geometry.context),
    )


def tiles_with_brain(
    starts: Sequence[Sequence[int]], tile: Sequence[int], mask: np.ndarray | None
) -> list[tuple[int, ...]]:
    """The tile starts whose output box holds at least one brain voxel (all without a mask)."""
    if mask is None:
        return [tuple(s) for s in starts]
    kept = []
    for start in starts:
        box = tuple(slice(s, s + t) for s, t in zip(start, tile))
        if mask[box].any():
            kept.append(tuple(start))
    return kept


@dataclass(frozen=True)
class SamePlan:
    """Tiles for a same-padded model (output = input).

    Attributes:
        shape: Spatial shape of the volume.
        padded_shape: Shape after padding (≥ shape and ≥ tile; multiples of size_multiple).
        tile: Tile size.
        starts: Tile starts in the padded volume.
    """

    shape: tuple[int, ...]
    padded_shape: tuple[int, ...]
    tile: tuple[int, ...]
    starts: tuple[tuple[int, ...], ...]


def plan_same(
    shape: Sequence[int],
    geometry: ModelGeometry,
    tile_size: int | Sequence[int] | None,
    overlap: float = 0.5,
) -> SamePlan:
    """Padding and overlapping tiles for a same-padded model.

    Along an axis with an exact halo ``h`` (``geometry.exact_halo``) neighbouring tiles
    overlap by at least ``2h``, so that every voxel lies in the exact part of some tile.

    Args:
        shape: Spatial shape of the volume.
        geometry: The model's geometry.
        tile_size: Tile size (rounded up to ``size_multiple``), or None for the whole volume.
        overlap: Fraction of a tile shared with its neighbour.
    """
    shape = tuple(int(s) for s in shape)
    n = len(shape)
    multiple = geometry.size_multiple
    whole = tuple(round_up(s, m) for s, m in zip(shape, multiple))
    if tile_size is None:
        tile = whole
    else:
        wanted = (int(tile_size),) * n if np.isscalar(tile_size) else tuple(tile_size)
        tile = tuple(min(round_up(t, m), w) for t, m, w in zip(wanted, multiple, whole))
    padded = tuple(max(w, t) for w, t in zip(whole, tile))
    per_axis = []
    for total, t, halo in zip(padded, tile, geometry.exact_halo):
        if t >= total:
            per_axis.append([0])
            continue
        step = max(1, int(t * (1 - overlap)))
        if halo is not None and t > 2 * halo:
            step = min(step, t - 2 * halo)
        count = math.ceil((total - t) / step) + 1
        per_axis.append(sorted({round(i * (total - t) / (count - 1)) for i in range(count)}))
    return SamePlan(shape, padded, tile, tuple(itertools.product(*per_axis)))


def exact_axes(plan: SamePlan, geometry: ModelGeometry) -> list[bool]:
    """Axes whose tiles are combined exactly: tiled, with a halo the tile can hold twice."""
    return [
        halo is not None and t < total and t > 2 * halo
        for t, total, halo in zip(plan.tile, plan.padded_shape, geometry.exact_halo)
    ]


def tile_weight(plan: SamePlan, geometry: ModelGeometry, start: Sequence[int]) -> np.ndarray:
    """Blending weight of the tile at ``start``.

    Along exact axes: 1 where the tile's output equals the whole volume's (at least the
    halo from an inner border; the volume's own borders are no inner borders), 0 elsewhere;
    along the others the Gaussian of :func:`gaussian_weight`.
    """
    exact = exact_axes(plan, geometry)
    if not any(exact):  # the usual blending (nnU-Net's and MONAI's Gaussian)
        if len(plan.starts) == 1:
            return np.ones(plan.tile, dtype=np.float32)
        return gaussian_weight(plan.tile)
    axes = []
    for axis, (t, total, halo) in enumerate(zip(plan.tile, plan.padded_shape, geometry.exact_halo)):
        if exact[axis]:
            w = np.zeros(t, np.float32)
            lo = 0 if start[axis] == 0 else halo
            hi = t if start[axis] + t >= total else t - halo
            w[lo:hi] = 1.0
        elif len({s[axis] for s in plan.starts}) == 1:
            w = np.ones(t, np.float32)
        else:
            w = gaussian_weight((t,))
        axes.append(w)
    weight = axes[0]
    for a in axes[1:]:
        weight = np.multiply.outer(weight, a)
    return weight.astype(np.float32)


def gaussian_weight(tile: Sequence[int], sigma_scale: float = 0.125) -> np.ndarray:
    """Blending weight of a tile: a Gaussian centred on it (σ = tile/8), never zero."""
    axes = []
    for t in tile:
        x = np.arange(t) - (t - 1) / 2
        axes.append(np.exp(-0.5 * (x / max(t * sigma_scale, 1e-6)) ** 2))
    weight = axes[0]
    for a in axes[1:]:
        weight = np.multiply.outer(weight, a)
    weight = weight / weight.max()
    return np.maximum(weight, 1e-3).astype(np.float32)


def free_memory_bytes(device: torch.device) -> int:
    """Memory available for tiles on ``device`` (free GPU memory, or available RAM)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as stream:
            for line in stream:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 4 << 30


def _is_meta(model: nn.Module) -> bool:
    first = next(iter(model.parameters()), None)
    return first is not None and first.device.type == "meta"


def activation_bytes(
    model: nn.Module, input_shape: Sequence[int], dtype: torch.dtype = torch.float32
) -> int:
    """Estimated peak memory of one forward pass in inference mode.

    The model is run on the ``meta`` device (no memory, no compute); the estimate is
    the input plus three times the largest output of any layer (a layer's input,
    its output, and one temporary of the same size).
    """
    meta = model if _is_meta(model) else copy.deepcopy(model).to("meta")
    largest = [0]

    def hook(_module, _inputs, output):
        if isinstance(output, torch.Tensor):
            largest[0] = max(largest[0], output.numel())

    handles = [m.register_forward_hook(hook) for m in meta.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            meta(torch.empty(tuple(input_shape), device="meta", dtype=dtype))
    finally:
        for h in handles:
            h.remove()
    itemsize = torch.empty((), dtype=dtype).element_size()
    return int(itemsize * (math.prod(input_shape) + 3 * largest[0]))


def _exact_tile(whole, geometry: ModelGeometry, fits) -> tuple[int, ...] | None:
    """The largest fitting tile cut along one exact-halo axis only (others whole), or None.

    Such tiles combine exactly (see :func:`tile_weight`), so they are tried before cubes.
    """
    for axis, halo in enumerate(geometry.exact_halo):
        if halo is None:
            continue
        m = geometry.size_multiple[axis]
        lo, hi = round_up(2 * halo + 1, m) // m, whole[axis] // m - 1  # in multiples of m

        def tile(k: int, axis: int = axis, m: int = m) -> tuple[int, ...]:
            return tuple(k * m if a == axis else w for a, w in enumerate(whole))

        if hi < lo or not fits(tile(lo)):
            continue
        while lo < hi:  # the largest k that fits
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if fits(tile(mid)) else (lo, mid - 1)
        return tile(lo)
    return None


def choose_tile_size(
    model: nn.Module,
    shape: Sequence[int],
    device: str | torch.device = "cpu",
    batch_size: int = 1,
    budget_bytes: int | None = None,
) -> tuple[int, ...] | None:
    """Output tile size for ``model`` on a volume of ``shape``, from the free memory.

    Valid-convolution models: the largest cubic tile up to the model's preferred
    ``geometry.inference_tile`` (else the volume) whose estimated activations
    fit in :data:`MEMORY_SHARE` of the free memory. Same-padded models: None (whole
    volume) if it fits; else, for a model with an exact halo along an axis, the largest
    tile cut along that axis only (combined exactly); else the largest fitting cube.

    Returns:
        Per-axis output tile size, or None for the whole volume.

    Raises:
        LesionsegError: Not even the smallest tile fits.
    """
    device = torch.device(device)
    geometry: ModelGeometry = model.geometry
    budget = (
        budget_bytes if budget_bytes is not None else int(MEMORY_SHARE * free_memory_bytes(device))
    )
    channels = geometry.input_channels_total
    valid = geometry.is_valid_convolution
    multiple = max(geometry.size_multiple)

    meta = copy.deepcopy(model).to("meta")  # once: every estimate below runs on it

    def fits(out_size: Sequence[int]) -> bool:
        if valid:
            in_size = tuple(o + c - 1 for o, c in zip(out_size, geometry.context))
        else:
            in_size = tuple(out_size)
        return activation_bytes(meta, (batch_size, channels, *in_size)) <= budget

    if valid:
        padded = [round_up(s, m) for s, m in zip(shape, geometry.size_multiple)]
        cap = geometry.inference_tile or max(padded)
        start = round_up(min(int(cap), max(padded)), multiple)
    else:
        whole = tuple(round_up(s, m) for s, m in zip(shape, geometry.size_multiple))
        if fits(whole):
            return None
        exact = _exact_tile(whole, geometry, fits)
        if exact is not None:
            return exact
        start = round_up(min(MAX_AUTO_TILE, max(whole)), multiple)

    def tile_of(size: int) -> tuple[int, ...]:
        return tuple(min(size, round_up(s, m)) for s, m in zip(shape, geometry.size_multiple))

    # Binary search over multiples of the size multiple (memory grows with the size).
    lo, hi = 1, start // multiple
    if fits(tile_of(hi * multiple)):
        return tile_of(hi * multiple)
    while lo < hi:
        mid = (lo + hi) // 2
        if fits(tile_of(mid * multiple)):
            lo = mid + 1
        else:
            hi = mid
    best = (lo - 1) * multiple
    if best >= multiple:
        return tile_of(best)
    raise LesionsegError(
        f"not enough free memory on {device} for even the smallest tile "
        f"({budget >> 20} MiB allowed)"
    )
