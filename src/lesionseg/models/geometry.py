"""How a model's output positions relate to its input positions.

Samplers and predictors never special-case a method: they ask the model's
:class:`ModelGeometry` which input to cut for a wanted output and where the
output sits. Three families are covered:

* valid (unpadded) convolutions, e.g. DeepMedic: output = input − context + 1
  per axis, centred (``context`` = receptive field, plus whatever a low-resolution
  pathway needs);
* same-padded encoder–decoders (U-Nets, Brain SegNet, EDD Net): output = input,
  sizes a multiple of ``size_multiple``;
* patch classifiers (MSSEG cascade, MUSCLE): a fixed input patch, one output voxel.

2D models on slice stacks declare ``spatial_dims=2`` and ``slice_context``:
the neighbouring slices that become input channels (D-UNet: 2 before, 1 after).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelGeometry:
    """Geometry of a segmentation model.

    Attributes:
        spatial_dims: 2 or 3.
        in_channels: Image channels the model expects (before slice stacking).
        num_classes: Output maps (classes, or 1 for a sigmoid output).
        context: Per-axis input voxels needed for one output voxel (1 for same-padded
            models). For valid-convolution models, output = input − context + 1.
        size_multiple: Per-axis divisor the input size must be a multiple of.
        patch_size: For patch classifiers, the fixed input patch; the output is one
            voxel (the patch centre). None otherwise.
        slice_context: For 2D models on slice stacks, (slices before, slices after)
            the target slice stacked as channels.
        output_activation: ``"softmax"`` or ``"sigmoid"``.
        slice_axis: For 2D models, the spatial axis their slices run along (2: axial);
            set from the training sampler's axis, so prediction slices the same way.
        input_scales: Down-sampling factor of each input pathway (DeepMedic: ``(1, 3)``).
        receptive_fields: Receptive field (voxels per axis, full resolution) per pathway,
            as ``(name, voxels)`` pairs.
        inference_tile: Preferred output tile side for CPU inference, or None.
        exact_halo: For same-padded models, per axis, how many voxels from a tile's inner
            border its outputs can differ from the whole volume's (the receptive radius
            along an axis that is never down-sampled, such as Brain SegNet's slice axis),
            or None where that reach is unbounded or unknown. Tiles along an axis with a
            halo are combined exactly (each voxel from a tile where it lies at least the
            halo from an inner border); along the others they are blended.
    """

    spatial_dims: int
    in_channels: int
    num_classes: int
    context: tuple[int, ...] = ()
    size_multiple: tuple[int, ...] = ()
    patch_size: tuple[int, ...] | None = None
    slice_context: tuple[int, int] = (0, 0)
    output_activation: str = "softmax"
    slice_axis: int = 2
    input_scales: tuple[int, ...] = (1,)
    receptive_fields: tuple[tuple[str, int], ...] = ()
    inference_tile: int | None = None
    exact_halo: tuple[int | None, ...] = ()

    def __post_init__(self):
        if not self.context:
            object.__setattr__(self, "context", (1,) * self.spatial_dims)
        if not self.size_multiple:
            object.__setattr__(self, "size_multiple", (1,) * self.spatial_dims)
        if not self.exact_halo:
            object.__setattr__(self, "exact_halo", (None,) * self.spatial_dims)

    @property
    def is_valid_convolution(self) -> bool:
        """True if the output is smaller than the input (unpadded convolutions)."""
        return self.patch_size is None and any(c > 1 for c in self.context)

    @property
    def margin_before(self) -> tuple[int, ...]:
        """Input voxels before the first output voxel, per axis."""
        if self.patch_size is not None:
            return tuple(p // 2 for p in self.patch_size)
        return tuple((c - 1) // 2 for c in self.context)

    @property
    def margin_after(self) -> tuple[int, ...]:
        """Input voxels after the last output voxel, per axis."""
        if self.patch_size is not None:
            return tuple(p - 1 - p // 2 for p in self.patch_size)
        return tuple(c - 1 - (c - 1) // 2 for c in self.context)

    def output_size(self, input_size: tuple[int, ...]) -> tuple[int, ...]:
        """Output spatial size for an input of ``input_size``."""
        if self.patch_size is not None:
            return tuple(i - p + 1 for i, p in zip(input_size, self.patch_size))
        return tuple(i - c + 1 for i, c in zip(input_size, self.context))

    def input_size(self, output_size: tuple[int, ...]) -> tuple[int, ...]:
        """Input spatial size that gives ``output_size`` (rounded up to ``size_multiple``)."""
        if self.patch_size is not None:
            return tuple(o + p - 1 for o, p in zip(output_size, self.patch_size))
        sizes = [o + c - 1 for o, c in zip(output_size, self.context)]
        return tuple(-(-s // m) * m for s, m in zip(sizes, self.size_multiple))

    @property
    def input_channels_total(self) -> int:
        """Channels of the network's input tensor (channels × stacked slices)."""
        return self.in_channels * (1 + sum(self.slice_context))
