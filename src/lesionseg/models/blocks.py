"""Building blocks shared by the U-Net family (U-Net baselines, D-UNet).

Conventions follow the Keras code of the D-UNet authors (SZUHvern/D-UNet), so that
parameter counts and behaviour match the paper:

* batch normalisation with Keras' defaults (running-average momentum 0.99, i.e.
  PyTorch ``momentum=0.01``, and ``eps=1e-3``);
* He-normal initialisation of convolutions and dense layers, zero biases;
* 'same' padding; for the even 2×2 kernels of the decoder Keras (TensorFlow) pads
  0 voxels before and 1 after on each axis, which :class:`UpConv` reproduces.

Every block works in 2D and 3D (``spatial_dims``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

#: PyTorch momentum equivalent to Keras' ``BatchNormalization(momentum=0.99)``.
KERAS_BN_MOMENTUM = 0.01
#: Keras' default batch-normalisation epsilon.
KERAS_BN_EPS = 1e-3


def conv_type(spatial_dims: int) -> type[nn.Module]:
    """``nn.Conv2d`` or ``nn.Conv3d``."""
    return _by_dims(spatial_dims, nn.Conv2d, nn.Conv3d)


def max_pool_type(spatial_dims: int) -> type[nn.Module]:
    """``nn.MaxPool2d`` or ``nn.MaxPool3d``."""
    return _by_dims(spatial_dims, nn.MaxPool2d, nn.MaxPool3d)


def _by_dims(spatial_dims: int, two: type[nn.Module], three: type[nn.Module]) -> type[nn.Module]:
    if spatial_dims == 2:
        return two
    if spatial_dims == 3:
        return three
    raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")


def batch_norm_layer(
    num_features: int,
    spatial_dims: int,
    momentum: float = KERAS_BN_MOMENTUM,
    eps: float = KERAS_BN_EPS,
) -> nn.Module:
    """Batch normalisation with Keras' defaults.

    Args:
        num_features: Channels.
        spatial_dims: 2 or 3.
        momentum: PyTorch convention (weight of the new batch statistics); Keras'
            momentum 0.99 is 0.01 here.
        eps: Added to the variance.

    Returns:
        ``nn.BatchNorm2d`` or ``nn.BatchNorm3d``.
    """
    norm = _by_dims(spatial_dims, nn.BatchNorm2d, nn.BatchNorm3d)
    return norm(num_features, eps=eps, momentum=momentum)


def as_tuple(value: int | Sequence[int], spatial_dims: int) -> tuple[int, ...]:
    """An int repeated per axis, or a per-axis sequence checked for length."""
    if isinstance(value, int):
        return (value,) * spatial_dims
    value = tuple(int(v) for v in value)
    if len(value) != spatial_dims:
        raise ValueError(f"expected {spatial_dims} values per axis, got {value}")
    return value


def he_normal_(module: nn.Module) -> None:
    """He-normal initialisation (N(0, 2/fan_in)) of conv and linear weights, zero biases.

    Applied with ``model.apply(he_normal_)``; Keras' ``he_normal`` in the official code.
    """
    if isinstance(module, (nn.Conv2d, nn.Conv3d, nn.Linear)):
        nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def glorot_uniform_(module: nn.Module) -> None:
    """Glorot-uniform weights and zero bias: Keras' default, used by the output convolutions."""
    nn.init.xavier_uniform_(module.weight)
    if module.bias is not None:
        nn.init.zeros_(module.bias)


class ConvBlock(nn.Sequential):
    """Two 3×3(×3) 'same' convolutions, each followed by optional batch norm and ReLU.

    ``BN_block`` / ``BN_block3d`` of the official code with ``batch_norm=True``,
    ``origin_block`` (Ronneberger's U-Net) with ``batch_norm=False``.

    Args:
        in_channels: Input channels.
        out_channels: Filters of both convolutions.
        spatial_dims: 2 or 3.
        batch_norm: Normalise after each convolution.
        bn_momentum: Batch-norm momentum, PyTorch convention.
        bn_eps: Batch-norm epsilon.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        spatial_dims: int = 2,
        batch_norm: bool = True,
        bn_momentum: float = KERAS_BN_MOMENTUM,
        bn_eps: float = KERAS_BN_EPS,
    ):
        conv = conv_type(spatial_dims)
        layers: list[nn.Module] = []
        for channels in (in_channels, out_channels):
            layers.append(conv(channels, out_channels, kernel_size=3, padding=1))
            if batch_norm:
                layers.append(batch_norm_layer(out_channels, spatial_dims, bn_momentum, bn_eps))
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class UpConv(nn.Module):
    """Nearest-neighbour up-sampling, then a 2×2(×2) convolution with Keras 'same' padding, ReLU.

    TensorFlow pads an even kernel asymmetrically: 0 voxels before and 1 after per axis
    (total k − 1, ``before = total // 2``); zero padding.

    Args:
        in_channels: Input channels.
        out_channels: Filters.
        scale: Up-sampling factor, an int or one per axis.
        spatial_dims: 2 or 3.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        scale: int | Sequence[int] = 2,
        spatial_dims: int = 2,
    ):
        super().__init__()
        self.scale = as_tuple(scale, spatial_dims)
        self.conv = conv_type(spatial_dims)(in_channels, out_channels, kernel_size=2)
        # F.pad lists (before, after) from the last axis backwards.
        self._padding = (0, 1) * spatial_dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Up-sample ``x`` and convolve; output channels ``out_channels``."""
        x = F.interpolate(x, scale_factor=self.scale, mode="nearest")
        x = F.pad(x, self._padding)
        return F.relu(self.conv(x))


class UpBlock(nn.Module):
    """Decoder step of a U-Net: :class:`UpConv`, concatenation [skip, up], :class:`ConvBlock`.

    Args:
        in_channels: Channels of the coarser input.
        skip_channels: Channels of the skip connection.
        out_channels: Filters of the up-convolution and of the conv block.
        scale: Up-sampling factor, an int or one per axis.
        spatial_dims: 2 or 3.
        batch_norm: Batch norm in the conv block.
        bn_momentum: Batch-norm momentum, PyTorch convention.
        bn_eps: Batch-norm epsilon.
    """

    def __init__(
        self,
        in_channels: int,
        skip_channels: int,
        out_channels: int,
        scale: int | Sequence[int] = 2,
        spatial_dims: int = 2,
        batch_norm: bool = True,
        bn_momentum: float = KERAS_BN_MOMENTUM,
        bn_eps: float = KERAS_BN_EPS,
    ):
        super().__init__()
        self.up = UpConv(in_channels, out_channels, scale, spatial_dims)
        self.block = ConvBlock(
            skip_channels + out_channels,
            out_channels,
            spatial_dims,
            batch_norm,
            bn_momentum,
            bn_eps,
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """Up-sample ``x`` to ``skip``'s size and fuse them."""
        # The official code concatenates [skip, up]; the order matters only for weight import.
        return self.block(torch.cat([skip, self.up(x)], dim=1))


def encoder_blocks(
    in_channels: int, features: Sequence[int], spatial_dims: int, **norm
) -> nn.ModuleList:
    """One :class:`ConvBlock` per U-Net level, ``in_channels`` → … → ``features[-1]`` filters.

    Args:
        in_channels: Input channels of the first level.
        features: Filters per level, shallow to deep.
        spatial_dims: 2 or 3.
        **norm: ``batch_norm``, ``bn_momentum``, ``bn_eps`` of :class:`ConvBlock`.
    """
    channels = (in_channels, *features)
    return nn.ModuleList(
        ConvBlock(channels[i], channels[i + 1], spatial_dims, **norm) for i in range(len(features))
    )


def decoder_blocks(
    features: Sequence[int], scale: int | Sequence[int], spatial_dims: int, **norm
) -> nn.ModuleList:
    """The :class:`UpBlock` of every level but the deepest, deepest first.

    Args:
        features: Filters per level, shallow to deep (as the encoder's).
        scale: Up-sampling factor, an int or one per axis.
        spatial_dims: 2 or 3.
        **norm: ``batch_norm``, ``bn_momentum``, ``bn_eps`` of :class:`ConvBlock`.
    """
    return nn.ModuleList(
        UpBlock(features[i + 1], features[i], features[i], scale, spatial_dims, **norm)
        for i in reversed(range(len(features) - 1))
    )


def dropout_level_set(dropout_levels: Sequence[int] | None, levels: int) -> frozenset[int]:
    """1-based levels followed by dropout; None: the two deepest of ``levels``."""
    if dropout_levels is None:
        dropout_levels = (levels - 1, levels)
    return frozenset(int(level) for level in dropout_levels)


class SqueezeExcitation(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018): channels re-weighted by a gate in (0, 1).

    Global average pooling → dense C→C/r (no bias, ReLU) → dense C/r→C (no bias, sigmoid)
    → multiply, as ``squeeze_excite_block`` of the official D-UNet code.

    Args:
        channels: Channels C.
        ratio: Reduction ratio r; the hidden width is ``max(1, C // r)`` (Keras would
            fail on 0).
    """

    def __init__(self, channels: int, ratio: int = 16):
        super().__init__()
        hidden = max(1, channels // ratio)
        self.squeeze = nn.Linear(channels, hidden, bias=False)
        self.excite = nn.Linear(hidden, channels, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Re-weight the channels of ``x`` (N, C, *spatial)."""
        # A sum (it accumulates in float32) over the spatial axes / their size, not a mean:
        # PyTorch's CPU mean copies a bfloat16 map to float32 first (D-UNet, 16 × 64 × 96²
        # in bfloat16: a 14 ms copy for a 5 ms sum, twice per batch)
        spatial = tuple(range(2, x.dim()))
        pooled = x.sum(dim=spatial) / math.prod(x.shape[2:])
        gate = torch.sigmoid(self.excite(F.relu(self.squeeze(pooled))))
        return x * gate.view(*gate.shape, *([1] * (x.dim() - 2)))
