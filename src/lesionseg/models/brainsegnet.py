"""Brain SegNet: a 3D residual encoder with a top-down refinement module (Hu et al., SPECS §2).

The input is a slab of consecutive slices, ``(N, C, X, Y, Z)`` in lesionseg's array order
with the slices along ``slice_axis`` (default 2: Z); the paper crops 12×128×128 slabs for
BRATS and 7×96×96 for ISLES. Down- and up-sampling happen in the two in-plane axes only:
the paper says both that each block "down-sample[s] the 3D maps to half in all dimensions"
and that the model "keep[s] its third dimension unchanged in all convolutional layers";
with 7-slice inputs three halvings of the slice axis are impossible (7 → 4 → 2 → 1 and
back to 8), so we follow the second sentence: stride 2 in-plane, 1 along the slices.

Encoder, four blocks of 32, 64, 128, 256 channels, 17 3×3×3 convolutions each followed by
batch norm and ReLU: block 1 is two convolutions; blocks 2–4 are a convolution of in-plane
stride 2, then two residual blocks of two convolutions with an identity shortcut.

Refinement module: an adaptive 1×1×1 convolution maps each block's output to 128 channels;
from the top block down, a refine unit merges the coarser refined map into the finer
block's adaptive output (:class:`RefineUnit`), ending with 128 channels at full
resolution; a 1×1×1 classifier gives the logits (softmax per voxel in the engine).

Parameter count (PyTorch ``parameters()``; every convolution has a bias, PyTorch's
default, and every batch norm a scale and shift), paper widths, C input channels and
K classes:

* block 1: (C·27·32 + 32) + (32·27·32 + 32) + 2 BN·64 = C·864 + 27,840;
* block 2: (32·27·64 + 64) + 4·(64·27·64 + 64) + 5 BN·128 = 498,624;
* block 3: (64·27·128 + 128) + 4·(128·27·128 + 128) + 5 BN·256 = 1,992,576;
* block 4: (128·27·256 + 256) + 4·(256·27·256 + 256) + 5 BN·512 = 7,966,464;
* adaptive layers: (32 + 64 + 128 + 256)·128 + 4·128 = 61,952;
* three refine units, each (128·128 + 128) + (128·27·128 + 128) + 2 BN·256 = 459,520:
  1,378,560;
* classifier: 128·K + K.

That is 11,926,016 + 864·C + 129·K: **11,930,117** for BRATS (C = 4, K = 5) and
**11,928,002** for ISLES with 2 channels and 2 classes (11,931,458 with the six ISLES 2017
perfusion/diffusion maps), the paper's "12 M". Keras would add the 3,072 running means and
3,072 running variances of the batch norms (11,936,261 for BRATS), which changes nothing at
that precision (the paper's code was PyTorch). The count is what singles out our reading of
the refine unit: one 1×1×1 and one 3×3×3 convolution per unit give 11.93 M; a 1×1×1 and a
3×3×3 both before and after the sum would give 13.3 M, no convolution in the units 10.6 M.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lesionseg.models import MODELS
from lesionseg.models.blocks import ConvBlock, batch_norm_layer, he_normal_
from lesionseg.models.geometry import ModelGeometry
from lesionseg.models.unet import check_input

PAPER_WIDTHS = (32, 64, 128, 256)
#: PyTorch's batch-norm defaults (the paper's implementation is PyTorch).
TORCH_BN_MOMENTUM = 0.1
TORCH_BN_EPS = 1e-5


def _conv_bn_relu(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int | Sequence[int] = 1,
    bn_momentum: float = TORCH_BN_MOMENTUM,
    bn_eps: float = TORCH_BN_EPS,
) -> nn.Sequential:
    """A same-padded 3D convolution, batch norm and ReLU."""
    return nn.Sequential(
        nn.Conv3d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2),
        batch_norm_layer(out_channels, 3, bn_momentum, bn_eps),
        nn.ReLU(inplace=True),
    )


class ResidualBlock(nn.Module):
    """Two 3×3×3 convolutions with batch norm and an identity shortcut (ResNet's basic block).

    conv → BN → ReLU → conv → BN, plus the input, then ReLU. The second ReLU comes after
    the addition, as in the original ResNet the paper follows ([14]: "BN ... applied
    empirically by following [14]"): every convolution is still followed by BN and a ReLU,
    and the block's output, like every other block output of the encoder, is non-negative.

    Args:
        channels: Input and output channels.
        bn_momentum: Batch-norm momentum, PyTorch convention.
        bn_eps: Batch-norm epsilon.
    """

    def __init__(
        self,
        channels: int,
        bn_momentum: float = TORCH_BN_MOMENTUM,
        bn_eps: float = TORCH_BN_EPS,
    ):
        super().__init__()
        self.conv1 = nn.Conv3d(channels, channels, 3, padding=1)
        self.bn1 = batch_norm_layer(channels, 3, bn_momentum, bn_eps)
        self.conv2 = nn.Conv3d(channels, channels, 3, padding=1)
        self.bn2 = batch_norm_layer(channels, 3, bn_momentum, bn_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``relu(x + bn(conv(relu(bn(conv(x))))))``, same shape as ``x``."""
        y = F.relu(self.bn1(self.conv1(x)), inplace=True)
        return F.relu(x + self.bn2(self.conv2(y)), inplace=True)


class DownBlock(nn.Sequential):
    """Blocks 2–4: a 3×3×3 convolution of in-plane stride 2, BN, ReLU, then residual blocks.

    Args:
        in_channels: Channels of the finer block.
        out_channels: Channels of this block.
        stride: Per-axis stride of the first convolution (2 in-plane, 1 along the slices).
        residual_blocks: Residual blocks after it (2).
        bn_momentum: Batch-norm momentum, PyTorch convention.
        bn_eps: Batch-norm epsilon.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: Sequence[int],
        residual_blocks: int = 2,
        bn_momentum: float = TORCH_BN_MOMENTUM,
        bn_eps: float = TORCH_BN_EPS,
    ):
        super().__init__(
            _conv_bn_relu(in_channels, out_channels, 3, tuple(stride), bn_momentum, bn_eps),
            *(ResidualBlock(out_channels, bn_momentum, bn_eps) for _ in range(residual_blocks)),
        )


class RefineUnit(nn.Module):
    """Merge a coarser refined map into a finer block's adaptive output.

    The paper (its Fig. 3b is not in our text) introduces "1×1×1 and 3×3×3 convolutional
    layers to refine the 3D convolutional features before and after the combination
    operation, where an element-wise summation is applied, with an ×2 up-sample operation
    implemented on the lower-resolution maps". Our reading, one convolution on each side of
    the sum (the only reading that gives the paper's 12 M parameters, see the module
    docstring)::

        coarse ─ 1×1×1 conv, BN, ReLU ─ ×2 up-sample (in-plane) ─┐
                                                                  + ─ 3×3×3 conv, BN, ReLU ─ out
        fine block ─ adaptive 1×1×1 conv ────────────────────────┘

    The 1×1×1 convolution sits on the top-down path: the lateral path already is a 1×1×1
    convolution (the adaptive layer), and a second one there would only re-mix it. It runs
    before the up-sampling, at a quarter of the voxels; with nearest up-sampling the result
    is the same as after it (a pointwise layer commutes with copying voxels; batch-norm
    batch statistics are unchanged too). The 3×3×3 convolution after the sum smooths the
    blocky up-sampled map with the fine detail, unlike FCN's bare skip sums.

    Args:
        channels: Channels of both inputs and of the output (128).
        upsample: ``"nearest"`` (default; the paper does not say) or ``"trilinear"``.
        bn_momentum: Batch-norm momentum, PyTorch convention.
        bn_eps: Batch-norm epsilon.
    """

    def __init__(
        self,
        channels: int,
        upsample: str = "nearest",
        bn_momentum: float = TORCH_BN_MOMENTUM,
        bn_eps: float = TORCH_BN_EPS,
    ):
        super().__init__()
        self.upsample = upsample
        self.before = _conv_bn_relu(channels, channels, 1, 1, bn_momentum, bn_eps)
        self.after = _conv_bn_relu(channels, channels, 3, 1, bn_momentum, bn_eps)

    def forward(self, coarse: torch.Tensor, fine: torch.Tensor) -> torch.Tensor:
        """Refined map at ``fine``'s resolution from ``coarse`` (half its in-plane size)."""
        up = F.interpolate(self.before(coarse), size=fine.shape[2:], mode=self.upsample)
        return self.after(up + fine)


class BrainSegNet(nn.Module):
    """Brain SegNet: residual 3D encoder, adaptive layers, top-down refine units, classifier.

    Args:
        in_channels: Image channels (modalities): 4 for BRATS.
        num_classes: Classes including background: 5 for BRATS, 2 for ISLES.
        widths: Channels of each block, finest first (32, 64, 128, 256); every block after
            the first halves the two in-plane axes.
        residual_blocks: Residual blocks in each block after the first (2).
        refine_channels: Channels of the adaptive layers and refine units (128).
        slice_axis: Spatial axis (0, 1 or 2) along which the slab's slices run; it is never
            down-sampled. Default 2 (Z, axial slices in lesionseg's order).
        upsample: Up-sampling of the refine units, ``"nearest"`` or ``"trilinear"``.
        bn_momentum: Batch-norm momentum, PyTorch convention (PyTorch's default 0.1).
        bn_eps: Batch-norm epsilon (PyTorch's default 1e-5).

    Raises:
        ValueError: Fewer than two blocks, a bad ``slice_axis`` or ``upsample``.

    The in-plane input sizes must be multiples of ``2 ** (len(widths) - 1)`` (8), which
    ``forward`` checks with a clear error; any slice count works (1 included).
    Convolutions are He-normal initialised (ResNet's initialisation; the paper names
    none), batch norms start at scale 1, shift 0.
    """

    def __init__(
        self,
        in_channels: int = 4,
        num_classes: int = 5,
        widths: Sequence[int] = PAPER_WIDTHS,
        residual_blocks: int = 2,
        refine_channels: int = 128,
        slice_axis: int = 2,
        upsample: str = "nearest",
        bn_momentum: float = TORCH_BN_MOMENTUM,
        bn_eps: float = TORCH_BN_EPS,
    ):
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if len(widths) < 2:
            raise ValueError(f"Brain SegNet needs at least two blocks, got widths={widths}")
        if slice_axis not in (0, 1, 2):
            raise ValueError(f"slice_axis must be 0, 1 or 2, got {slice_axis}")
        if upsample not in ("nearest", "trilinear"):
            raise ValueError(f"upsample must be 'nearest' or 'trilinear', got {upsample!r}")
        stride = tuple(1 if axis == slice_axis else 2 for axis in range(3))
        norm = {"bn_momentum": bn_momentum, "bn_eps": bn_eps}
        self.blocks = nn.ModuleList(
            [ConvBlock(in_channels, widths[0], spatial_dims=3, batch_norm=True, **norm)]
        )
        for finer, width in zip(widths, widths[1:]):
            self.blocks.append(DownBlock(finer, width, stride, residual_blocks, **norm))
        self.adapt = nn.ModuleList(nn.Conv3d(w, refine_channels, 1) for w in widths)
        self.refine = nn.ModuleList(
            RefineUnit(refine_channels, upsample, **norm) for _ in widths[1:]
        )
        self.classifier = nn.Conv3d(refine_channels, num_classes, 1)
        self.apply(he_normal_)
        multiple = 2 ** (len(widths) - 1)
        # Along the slice axis nothing is strided or up-sampled, so an output voxel sees at
        # most the sum of the convolutions' half-widths there (20 slices for the paper's
        # network): a sub-volume cut along that axis, with that margin, predicts exactly as
        # the whole volume (tested). In-plane the reach covers the whole plane.
        reach = sum(
            m.dilation[slice_axis] * (m.kernel_size[slice_axis] - 1) // 2
            for m in self.modules()
            if isinstance(m, nn.Conv3d)
        )
        self.geometry = ModelGeometry(
            spatial_dims=3,
            in_channels=in_channels,
            num_classes=num_classes,
            size_multiple=tuple(1 if axis == slice_axis else multiple for axis in range(3)),
            output_activation="softmax",
            slice_axis=slice_axis,
            exact_halo=tuple(reach if axis == slice_axis else None for axis in range(3)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, num_classes, X, Y, Z)`` for a slab ``(N, C, X, Y, Z)``.

        Raises:
            ValueError: Wrong channel count, or an in-plane size not a multiple of 8.
        """
        check_input(x, self.geometry)
        features = []
        for block in self.blocks:
            x = block(x)
            features.append(x)
        refined = self.adapt[-1](features[-1])
        for level in reversed(range(len(features) - 1)):
            # self.refine[level] merges level + 1 into level (the top block's unit is last)
            refined = self.refine[level](refined, self.adapt[level](features[level]))
        return self.classifier(refined)


@MODELS.register("brainsegnet")
def build_brainsegnet(in_channels: int, num_classes: int, **options) -> BrainSegNet:
    """Factory for recipes: ``model: {name: brainsegnet, widths: [32, 64, 128, 256], ...}``."""
    return BrainSegNet(in_channels, num_classes, **options)
