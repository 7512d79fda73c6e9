"""Dense prediction of a whole preprocessed volume with any model, from its geometry.

:func:`predict_volume` turns a ``(C, X, Y, Z)`` image into ``(K, X, Y, Z)`` class
probabilities. Which path it takes depends only on ``model.geometry``:

* 3D valid-convolution models: zero-padded by the margins, abutting tiles
  (:func:`~lesionseg.inference.tiling.plan_valid`); tiled = whole-volume output. Zeros
  beyond the image are what the samplers feed in training (``pad_value`` 0, the brain
  mean after z-scoring), so a voxel sees the same input in training, validation and
  prediction (SPECS §1 reflects at inference; reflecting mirrored the brain into the
  low-resolution pathway's context, which training never showed);
* 3D same-padded models: whole volume, or Gaussian-blended overlapping tiles;
* patch classifiers: one patch per brain voxel, in batches;
* 2D models: slice by slice along ``axis`` with ``slice_context`` neighbours stacked
  as channels (zeros outside the volume; channel-major order, see
  :func:`stack_slices`), several slices per pass.

The volume is never padded whole: each 3D tile or patch is cut from the unpadded
volume and padded on its own (:class:`~lesionseg.inference.padding.PaddedVolume`,
the same values as padding the whole volume), each 2D slice stack is padded on its
own, and the probabilities are gathered at the volume's shape. Memory thus follows
the tile and the batch, not the padded volume.

Probabilities come from the model's output activation (softmax; a one-map sigmoid
model gives background = 1 − p). Outside the brain mask every foreground
probability is 0 and the background 1, so the labels (argmax) are 0 there.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from lesionseg.errors import LesionsegError
from lesionseg.inference.allocator import keep_freed_memory
from lesionseg.inference.layout import LayoutChooser, layout_probe
from lesionseg.inference.padding import PaddedVolume
from lesionseg.inference.tiling import (
    SamePlan,
    ValidPlan,
    choose_tile_size,
    plan_same,
    plan_valid,
    tile_weight,
    tiles_with_brain,
)
from lesionseg.models.fast_eval import inference_network
from lesionseg.models.geometry import ModelGeometry

#: Slices per forward pass of a 2D model (at least).
SLICE_BATCH = 16


def num_outputs(geometry: ModelGeometry) -> int:
    """Probability maps a model yields: its classes, or 2 for a one-map sigmoid model."""
    if geometry.output_activation == "sigmoid":
        if geometry.num_classes != 1:
            raise LesionsegError("sigmoid models with more than one output map are not supported")
        return 2
    return geometry.num_classes


def to_probabilities(logits: torch.Tensor, geometry: ModelGeometry) -> torch.Tensor:
    """Class probabilities (N, K, ...) from a model's logits."""
    logits = logits.float()
    if geometry.output_activation == "sigmoid":
        p = torch.sigmoid(logits[:, :1])
        return torch.cat([1 - p, p], 1)
    return torch.softmax(logits, 1)


class _Runner:
    """Runs batches through the model on a device, with optional mixed precision.

    The memory layout is the one a :class:`~lesionseg.inference.layout.LayoutChooser` picks.
    """

    def __init__(self, model: nn.Module, device: torch.device, amp: bool, layout: LayoutChooser):
        self.model = model
        self.device = device
        self.amp = amp
        self.layout = layout

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.amp:
            dtype = torch.float16 if self.device.type == "cuda" else torch.bfloat16
            ctx = torch.autocast(device_type=self.device.type, dtype=dtype)
        else:
            ctx = contextlib.nullcontext()
        with ctx:
            return self.model(x)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
        logits = self.layout.run(self._forward, x)
        probs = to_probabilities(logits, self.model.geometry)
        return probs.contiguous().cpu().numpy()


def _batches(items: Sequence, size: int) -> Iterator[Sequence]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _empty_probabilities(k: int, shape: Sequence[int]) -> np.ndarray:
    probs = np.zeros((k, *shape), dtype=np.float32)
    probs[0] = 1.0
    return probs


def _box_at_origin(size: Sequence[int]) -> tuple[slice, ...]:
    """Index of a channel-first array that crops a padded result back to ``size``."""
    return (slice(None), *(slice(0, t) for t in size))


def _valid_padding(plan: ValidPlan) -> list[tuple[int, int]]:
    """``np.pad`` widths of a channel-first image for a valid-convolution plan."""
    return [(0, 0), *zip(plan.pad_before, plan.pad_after)]


def _same_padding(plan: SamePlan, spatial: Sequence[int]) -> list[tuple[int, int]]:
    """``np.pad`` widths of a channel-first image for a same-padded plan (padded at the end)."""
    return [(0, 0)] + [(0, p - s) for p, s in zip(plan.padded_shape, spatial)]


def _in_volume(
    start: Sequence[int], size: Sequence[int], shape: Sequence[int]
) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """The part of the box ``size`` at ``start`` inside a volume of ``shape``.

    Output tiles start inside the volume but may end past it (plans round the volume
    up to the tile grid); the part past the end is dropped rather than stored in a
    padded output array.

    Returns:
        Indices of that part in the channel-first volume and in the box's own array.
    """
    stops = [min(s + t, n) for s, t, n in zip(start, size, shape)]
    into = (slice(None), *(slice(s, e) for s, e in zip(start, stops)))
    within = (slice(None), *(slice(0, e - s) for s, e in zip(start, stops)))
    return into, within


def _tile_probabilities(
    run: _Runner,
    padded: PaddedVolume,
    starts: Sequence[Sequence[int]],
    tile: Sequence[int],
    batch_size: int,
) -> Iterator[tuple[Sequence[int], np.ndarray]]:
    """(start, probabilities) of every input tile ``tile`` of ``padded`` at ``starts``."""
    for group in _batches(starts, batch_size):
        yield from zip(group, run(np.stack([padded.box(st, tile) for st in group])))


def _predict_valid(
    run: _Runner,
    image: np.ndarray,
    mask: np.ndarray | None,
    geometry: ModelGeometry,
    tile_size,
    batch_size: int,
) -> np.ndarray:
    spatial = image.shape[1:]
    plan = plan_valid(spatial, geometry, tile_size)
    # Zeros beyond the image, as the samplers feed them in training (pad_value 0: the brain
    # mean after z-scoring): a voxel's network input is the same in training and prediction.
    padded = PaddedVolume(image, _valid_padding(plan), "constant")
    # The parts of tiles past the volume's end hold no brain (as if the mask were padded).
    starts = tiles_with_brain(plan.starts, plan.tile_out, None if mask is None else mask > 0)
    out = _empty_probabilities(num_outputs(geometry), spatial)
    for st, p in _tile_probabilities(run, padded, starts, plan.tile_in, batch_size):
        into, within = _in_volume(st, plan.tile_out, spatial)
        out[into] = p[within]
    return out


def _predict_same(
    run: _Runner,
    image: np.ndarray,
    mask: np.ndarray | None,
    geometry: ModelGeometry,
    tile_size,
    batch_size: int,
) -> np.ndarray:
    spatial = image.shape[1:]
    plan = plan_same(spatial, geometry, tile_size)
    padded = PaddedVolume(image, _same_padding(plan, spatial), "constant")
    # The parts of tiles past the volume's end hold no brain (as if the mask were padded).
    starts = tiles_with_brain(plan.starts, plan.tile, None if mask is None else mask > 0)
    # Blended at the volume's shape: what falls in the padding is never read. Along axes
    # with an exact halo (Brain SegNet's slices) only a tile's exact part counts, so the
    # result equals the whole volume's; elsewhere overlapping tiles are Gaussian-blended.
    acc = np.zeros((num_outputs(geometry), *spatial), dtype=np.float32)
    norm = np.zeros(spatial, dtype=np.float32)
    for st, p in _tile_probabilities(run, padded, starts, plan.tile, batch_size):
        into, within = _in_volume(st, plan.tile, spatial)
        w = tile_weight(plan, geometry, st)[within[1:]]
        acc[into] += p[within] * w
        norm[into[1:]] += w
    covered = norm > 0
    acc[:, covered] /= norm[covered]
    acc[0, ~covered] = 1.0
    return acc


def _predict_patches(
    run: _Runner,
    image: np.ndarray,
    mask: np.ndarray | None,
    geometry: ModelGeometry,
    batch_size: int,
) -> np.ndarray:
    from lesionseg.inference.patches import classify_points

    spatial = image.shape[1:]
    targets = np.argwhere(mask > 0) if mask is not None else np.argwhere(np.ones(spatial, bool))
    k = num_outputs(geometry)
    out = _empty_probabilities(k, spatial)
    probs = classify_points(
        lambda batch: run(batch).reshape(len(batch), k, -1)[:, :, 0],
        image,
        targets,
        geometry.patch_size,
        k,
        batch_size,
    )
    out[(slice(None), *targets.T)] = probs.T
    return out


def stack_slices(volume: np.ndarray, index: int, slice_context: tuple[int, int]) -> np.ndarray:
    """The 2D input for slice ``index`` of a ``(C, S, H, W)`` volume (slices on axis 1).

    Channels are channel-major: for each image channel, the slices ``index − before``
    … ``index + after`` (zeros outside the volume), i.e. ``C·(before + 1 + after)``
    maps of ``(H, W)``.
    """
    before, after = slice_context
    c, s = volume.shape[:2]
    out = np.zeros((c, before + 1 + after, *volume.shape[2:]), dtype=np.float32)
    lo, hi = max(0, index - before), min(s, index + after + 1)
    out[:, lo - (index - before) : hi - (index - before)] = volume[:, lo:hi]
    return out.reshape(c * (before + 1 + after), *volume.shape[2:])


def _predict_slices(
    run: _Runner,
    image: np.ndarray,
    mask: np.ndarray | None,
    geometry: ModelGeometry,
    axis: int,
    batch_size: int,
) -> np.ndarray:
    volume = np.moveaxis(image, axis + 1, 1)  # (C, S, H, W)
    slice_mask = None if mask is None else np.moveaxis(mask > 0, axis, 0)
    plane = volume.shape[2:]
    k = num_outputs(geometry)
    out = _empty_probabilities(k, volume.shape[1:])
    wanted = [i for i in range(volume.shape[1]) if slice_mask is None or slice_mask[i].any()]
    if geometry.is_valid_convolution:
        pad, mode = _valid_padding(plan_valid(plane, geometry, None)), "constant"
    else:
        pad, mode = _same_padding(plan_same(plane, geometry, None), plane), "constant"
    crop = _box_at_origin(plane)
    for group in _batches(wanted, max(batch_size, SLICE_BATCH)):
        batch = np.stack(
            [np.pad(stack_slices(volume, i, geometry.slice_context), pad, mode=mode) for i in group]
        )
        probs = run(batch)
        for i, p in zip(group, probs):
            out[:, i] = p[crop]
    return np.moveaxis(out, 1, axis + 1)


def has_dropout(model: nn.Module) -> bool:
    """True if the network has a dropout layer with a non-zero rate (MC dropout works)."""
    return any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for m in model.modules())


def set_dropout(model: nn.Module, active: bool) -> None:
    """Switch only the dropout layers to training (active) or evaluation behaviour."""
    for module in model.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd):
            module.train(active)


def flip_sets(flip_axes: Sequence[int]) -> list[tuple[int, ...]]:
    """Every combination of the flip axes, the identity first (nnU-Net's mirroring)."""
    axes = sorted({int(a) for a in flip_axes})
    return [c for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]


def apply_mask(probs: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Zero the foreground probabilities outside ``mask`` (background becomes 1 there)."""
    if mask is None:
        return probs
    outside = mask == 0
    probs[1:, outside] = 0.0
    probs[0, outside] = 1.0
    return probs


def predict_volume(
    model: nn.Module,
    image: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    tile_size: int | Sequence[int] | None = None,
    device: str | torch.device = "cpu",
    amp: bool = False,
    batch_size: int = 1,
    flip_axes: Sequence[int] = (),
    axis: int = 2,
    dropout: bool = False,
    layout: str = "auto",
) -> np.ndarray:
    """Class probabilities for a whole preprocessed volume.

    Args:
        model: A network with a ``geometry`` (moved to ``device``; its train/eval mode
            is restored afterwards). It runs as
            :func:`~lesionseg.models.fast_eval.inference_network` gives it: batch norms
            folded into the convolutions (or the model's own ``inference_copy()``).
        image: ``(C, X, Y, Z)`` float32, channels in the model's order.
        mask: ``(X, Y, Z)`` brain mask; tiles without brain voxels are skipped and the
            result is masked. None: everything is brain.
        tile_size: Output tile size (int or per axis) for 3D models; None chooses it
            from the free memory (see :func:`~lesionseg.inference.tiling.choose_tile_size`).
            Pass the volume's shape to force a single pass.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
        amp: Mixed precision (float16 on CUDA, bfloat16 on CPU).
        batch_size: Tiles per forward pass (2D models: at least 16 slices).
        flip_axes: Test-time augmentation: the result is the mean over every
            combination of flips along these spatial axes (0 = sagittal).
        axis: Slice axis for 2D models (2 = axial).
        dropout: Keep the dropout layers active (one Monte-Carlo dropout pass; seed
            torch's generator first for a reproducible pass).
        layout: Memory layout: ``auto`` (the faster of the two, measured on the first
            batch, :mod:`lesionseg.inference.layout`), ``channels_last`` or ``contiguous``.

    Returns:
        ``(K, X, Y, Z)`` float32 probabilities (K = classes; 2 for a sigmoid model).

    Raises:
        LesionsegError: Wrong number of channels or mask shape.
    """
    geometry: ModelGeometry = model.geometry
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 4 or image.shape[0] != geometry.in_channels:
        raise LesionsegError(
            f"the model expects {geometry.in_channels} channel(s) of a 3D volume, "
            f"got an array of shape {image.shape}"
        )
    if mask is not None and tuple(mask.shape) != tuple(image.shape[1:]):
        raise LesionsegError(f"mask shape {mask.shape} differs from image shape {image.shape[1:]}")
    device = torch.device(device)
    was_training = model.training
    model.eval()
    net = inference_network(model)  # batch norms folded (a copy), or the model itself
    net.eval().to(device)
    if dropout:
        set_dropout(net, True)
    chooser = LayoutChooser(model, net, layout, device, amp, probe=layout_probe(geometry))
    if device.type == "cpu" and geometry.spatial_dims == 3:  # large 3D feature maps
        keep_freed_memory()
    run = _Runner(net, device, amp, chooser)
    if geometry.spatial_dims == 3 and geometry.patch_size is None and tile_size is None:
        tile_size = choose_tile_size(net, image.shape[1:], device, batch_size)
    if geometry.patch_size is not None:  # patches per pass: the memory budget decides
        from lesionseg.inference.patches import patch_batch_size

        batch_size = max(batch_size, patch_batch_size(net, device))
    total = None
    flips = flip_sets(flip_axes)
    try:
        with torch.inference_mode():
            for flip in flips:
                img = np.flip(image, [a + 1 for a in flip]) if flip else image
                msk = np.flip(mask, list(flip)) if (flip and mask is not None) else mask
                if geometry.spatial_dims == 2:
                    probs = _predict_slices(run, img, msk, geometry, axis, batch_size)
                elif geometry.patch_size is not None:
                    probs = _predict_patches(run, img, msk, geometry, batch_size)
                elif geometry.is_valid_convolution:
                    probs = _predict_valid(run, img, msk, geometry, tile_size, batch_size)
                else:
                    probs = _predict_same(run, img, msk, geometry, tile_size, batch_size)
                if flip:
                    probs = np.flip(probs, [a + 1 for a in flip])
                # probs is (a view of) a fresh array of the volume's shape: no copy needed.
                total = probs if total is None else total + probs
    finally:
        if net is model:
            chooser.restore()
        model.train(was_training)
        if dropout and net is not model:
            set_dropout(net, False)
    if len(flips) > 1:
        total /= len(flips)
    return apply_mask(np.ascontiguousarray(total, dtype=np.float32), mask)


def labels_from_probabilities(probs: np.ndarray) -> np.ndarray:
    """Label map (argmax over classes) as uint8."""
    return np.argmax(probs, axis=0).astype(np.uint8)
