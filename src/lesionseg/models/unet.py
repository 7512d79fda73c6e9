"""U-Net in 2D or 3D, and the baselines of the D-UNet paper (Zhou et al., Table 2).

The architecture follows Ronneberger et al. with the choices of the D-UNet authors'
Keras code (SZUHvern/D-UNet): 'same'-padded 3×3 convolutions, optional batch norm
with Keras' momentum and epsilon, dropout after the deepest blocks, and a decoder
of nearest up-sampling + 2×2 convolution (ReLU) concatenated with the skip
connection. The model returns logits; ``geometry.output_activation`` says whether
sigmoid (one output map) or softmax applies.

Registered models (parameter counts as Keras reports them / PyTorch ``parameters()``,
one input channel, one output map):

* ``unet``: the general network, every option exposed;
* ``unet2d-transform``: batch norm, widths 32…512: 7,771,297 / 7,765,409;
* ``unet2d-original``: Ronneberger's widths 64…1024, no batch norm: 31,030,593;
* ``unet3d-transform``: :class:`SliceStackUNet3d` on the 4-slice stack: 22,597,826 /
  22,591,810.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from lesionseg.models import MODELS
from lesionseg.models.blocks import (
    KERAS_BN_EPS,
    KERAS_BN_MOMENTUM,
    ConvBlock,
    as_tuple,
    conv_type,
    decoder_blocks,
    dropout_level_set,
    encoder_blocks,
    glorot_uniform_,
    he_normal_,
    max_pool_type,
)
from lesionseg.models.geometry import ModelGeometry

TRANSFORM_FEATURES = (32, 64, 128, 256, 512)
ORIGINAL_FEATURES = (64, 128, 256, 512, 1024)


def default_activation(num_classes: int) -> str:
    """``"sigmoid"`` for one output map, ``"softmax"`` otherwise."""
    return "sigmoid" if num_classes == 1 else "softmax"


def check_input(x: torch.Tensor, geometry: ModelGeometry) -> None:
    """Raise a clear error if ``x`` does not fit a model of ``geometry``.

    Raises:
        ValueError: Wrong channel count, number of axes, or a size that is not a multiple
            of ``geometry.size_multiple``.
    """
    channels = geometry.input_channels_total
    if x.dim() < 2 or x.shape[1] != channels:
        raise ValueError(
            f"input of shape {tuple(x.shape)} must have {channels} channels "
            f"({geometry.in_channels} image channel(s) × {1 + sum(geometry.slice_context)} "
            "slice(s))"
        )
    multiple = geometry.size_multiple
    spatial = tuple(x.shape[2:])
    if len(spatial) != len(multiple) or any(s % m for s, m in zip(spatial, multiple)):
        raise ValueError(
            f"input of spatial size {spatial} must have {len(multiple)} axes, "
            f"each a multiple of {tuple(multiple)}"
        )


class UNetPass:
    """The encoder–decoder pass shared by :class:`UNetBackbone` and D-UNet (a mixin).

    The module defines ``encoder`` (a conv block per level), ``pool``, ``dropout``,
    ``dropout_levels`` (1-based) and ``decoder`` (an up block per level but the deepest,
    deepest first).
    """

    encoder: nn.ModuleList
    pool: nn.Module
    dropout: nn.Module
    dropout_levels: frozenset[int]
    decoder: nn.ModuleList

    def encode_decode(
        self,
        x: torch.Tensor,
        fuse: Callable[[int, torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Map (N, C, *spatial) to (N, features[0], *spatial).

        Args:
            x: The input.
            fuse: Called as ``fuse(level, features)`` on each level's conv-block output
                (before its dropout); returns the features that go on (D-UNet's fusion).
        """
        skips = []
        for level, block in enumerate(self.encoder, start=1):
            if level > 1:
                x = self.pool(x)
            x = block(x)
            if fuse is not None:
                x = fuse(level, x)
            if level in self.dropout_levels:
                x = self.dropout(x)
            skips.append(x)
        x = skips.pop()
        for up in self.decoder:
            x = up(x, skips.pop())
        return x


class UNetBackbone(UNetPass, nn.Module):
    """Encoder–decoder returning ``features[0]`` maps at the input resolution (no classifier).

    Args:
        spatial_dims: 2 or 3.
        in_channels: Input channels.
        features: Filters per level, shallow to deep; one pooling between levels.
        batch_norm: Batch norm after every convolution of the conv blocks.
        bn_momentum: Batch-norm momentum, PyTorch convention (0.01 = Keras' 0.99).
        bn_eps: Batch-norm epsilon.
        dropout: Dropout probability after the blocks of ``dropout_levels``.
        dropout_levels: 1-based levels followed by dropout (also on the skip connection,
            as in the official code); default the two deepest.
        pool_size: Pooling (and up-sampling) factor, an int or one per axis, e.g.
            ``(1, 2, 2)`` to pool in-plane only.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        features: Sequence[int] = TRANSFORM_FEATURES,
        batch_norm: bool = True,
        bn_momentum: float = KERAS_BN_MOMENTUM,
        bn_eps: float = KERAS_BN_EPS,
        dropout: float = 0.3,
        dropout_levels: Sequence[int] | None = None,
        pool_size: int | Sequence[int] = 2,
    ):
        super().__init__()
        features = tuple(int(f) for f in features)
        if len(features) < 2:
            raise ValueError(f"a U-Net needs at least two levels, got features={features}")
        levels = len(features)
        self.pool_size = as_tuple(pool_size, spatial_dims)
        self.dropout_levels = dropout_level_set(dropout_levels, levels)
        norm = {"batch_norm": batch_norm, "bn_momentum": bn_momentum, "bn_eps": bn_eps}

        self.encoder = encoder_blocks(in_channels, features, spatial_dims, **norm)
        self.pool = max_pool_type(spatial_dims)(kernel_size=self.pool_size)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.decoder = decoder_blocks(features, self.pool_size, spatial_dims, **norm)
        self.out_channels = features[0]
        self.size_multiple = tuple(p ** (levels - 1) for p in self.pool_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map (N, C, *spatial) to (N, features[0], *spatial)."""
        return self.encode_decode(x)


class UNet(nn.Module):
    """U-Net with a 1×1(×1) classifier, in 2D or 3D.

    Args:
        spatial_dims: 2 or 3.
        in_channels: Image channels (before slice stacking).
        num_classes: Output maps: 1 for a sigmoid output, K ≥ 2 for softmax.
        features: Filters per level, shallow to deep.
        batch_norm: Batch norm after every 3×3 convolution ("transform" variant).
        bn_momentum: Batch-norm momentum, PyTorch convention (0.01 = Keras' 0.99).
        bn_eps: Batch-norm epsilon.
        dropout: Dropout probability after the blocks of ``dropout_levels``.
        dropout_levels: 1-based levels followed by dropout; default the two deepest.
        pool_size: Pooling factor, an int or one per axis.
        slice_context: For 2D on slice stacks: (slices before, after) the target slice,
            stacked as channels (``in_channels × (1 + before + after)`` input channels).
        output_activation: ``"sigmoid"`` or ``"softmax"``; default from ``num_classes``.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        num_classes: int = 1,
        features: Sequence[int] = TRANSFORM_FEATURES,
        batch_norm: bool = True,
        bn_momentum: float = KERAS_BN_MOMENTUM,
        bn_eps: float = KERAS_BN_EPS,
        dropout: float = 0.3,
        dropout_levels: Sequence[int] | None = None,
        pool_size: int | Sequence[int] = 2,
        slice_context: Sequence[int] = (0, 0),
        output_activation: str | None = None,
    ):
        super().__init__()
        slice_context = (int(slice_context[0]), int(slice_context[1]))
        if spatial_dims == 3 and slice_context != (0, 0):
            raise ValueError("slice_context applies to 2D models only")
        stacked = in_channels * (1 + sum(slice_context))
        self.backbone = UNetBackbone(
            spatial_dims,
            stacked,
            features,
            batch_norm,
            bn_momentum,
            bn_eps,
            dropout,
            dropout_levels,
            pool_size,
        )
        self.head = conv_type(spatial_dims)(self.backbone.out_channels, num_classes, kernel_size=1)
        self.apply(he_normal_)
        glorot_uniform_(self.head)  # Keras' default initialiser: the official code names none here
        self.geometry = ModelGeometry(
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            num_classes=num_classes,
            size_multiple=self.backbone.size_multiple,
            slice_context=slice_context,
            output_activation=output_activation or default_activation(num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, num_classes, *spatial) for an input (N, C, *spatial)."""
        check_input(x, self.geometry)
        return self.head(self.backbone(x))


class SliceStackUNet3d(nn.Module):
    """The paper's 3D U-Net (transform): a 3D U-Net over a slice stack, read out in 2D.

    The 2D input (N, C·S, H, W) of S stacked slices is viewed as a volume
    (N, C, S, H, W) (channels ordered image-major: all slices of channel 0 first).
    A 3D U-Net pools in-plane only (depth S is kept), a 1×1×1 convolution (ReLU)
    reduces its output to one map, whose S depth planes become channels of a 2D conv
    block and a 1×1 classifier: the output is the target slice's logits (N, K, H, W).
    This is ``Unet3d`` of the official code.

    Args:
        in_channels: Image channels C (before slice stacking).
        num_classes: Output maps.
        features: Filters per level of the 3D U-Net.
        head_features: Filters of the 2D conv block after the depth-to-channel step.
        batch_norm: Batch norm after every 3×3 convolution.
        bn_momentum: Batch-norm momentum, PyTorch convention.
        bn_eps: Batch-norm epsilon.
        dropout: Dropout probability after the blocks of ``dropout_levels``.
        dropout_levels: 1-based levels followed by dropout; default the two deepest.
        slice_context: (slices before, after) the target slice; S = 1 + before + after.
        output_activation: ``"sigmoid"`` or ``"softmax"``; default from ``num_classes``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 1,
        features: Sequence[int] = TRANSFORM_FEATURES,
        head_features: int = 32,
        batch_norm: bool = True,
        bn_momentum: float = KERAS_BN_MOMENTUM,
        bn_eps: float = KERAS_BN_EPS,
        dropout: float = 0.3,
        dropout_levels: Sequence[int] | None = None,
        slice_context: Sequence[int] = (2, 1),
        output_activation: str | None = None,
    ):
        super().__init__()
        slice_context = (int(slice_context[0]), int(slice_context[1]))
        self.in_channels = in_channels
        self.depth = 1 + sum(slice_context)
        norm = {"batch_norm": batch_norm, "bn_momentum": bn_momentum, "bn_eps": bn_eps}
        self.backbone = UNetBackbone(
            3,
            in_channels,
            features,
            dropout=dropout,
            dropout_levels=dropout_levels,
            pool_size=(1, 2, 2),  # in-plane only: the depth (slices) is kept
            **norm,
        )
        self.reduce = nn.Conv3d(self.backbone.out_channels, 1, kernel_size=1)
        self.block = ConvBlock(self.depth, head_features, 2, **norm)
        self.head = nn.Conv2d(head_features, num_classes, kernel_size=1)
        self.apply(he_normal_)
        glorot_uniform_(self.head)
        self.geometry = ModelGeometry(
            spatial_dims=2,
            in_channels=in_channels,
            num_classes=num_classes,
            size_multiple=self.backbone.size_multiple[1:],
            slice_context=slice_context,
            output_activation=output_activation or default_activation(num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, num_classes, H, W) for a slice stack (N, C·S, H, W)."""
        check_input(x, self.geometry)
        n, _, h, w = x.shape
        volume = x.reshape(n, self.in_channels, self.depth, h, w)
        planes = torch.relu(self.reduce(self.backbone(volume))).squeeze(1)
        return self.head(self.block(planes))


@MODELS.register("unet")
def build_unet(**kwargs) -> UNet:
    """The general :class:`UNet` (every argument of its constructor)."""
    return UNet(**kwargs)


@MODELS.register("unet2d-transform")
def build_unet2d_transform(
    in_channels: int = 1,
    num_classes: int = 1,
    features: Sequence[int] = TRANSFORM_FEATURES,
    **kwargs,
) -> UNet:
    """The paper's 2D U-Net (transform): batch norm, widths 32…512, dropout 0.3 on levels 4–5.

    Args:
        in_channels: Image channels.
        num_classes: Output maps.
        features: Filters per level.
        **kwargs: Other :class:`UNet` options (e.g. ``slice_context`` for a 2.5D input).
    """
    return UNet(2, in_channels, num_classes, features, batch_norm=True, **kwargs)


@MODELS.register("unet2d-original")
def build_unet2d_original(
    in_channels: int = 1,
    num_classes: int = 1,
    features: Sequence[int] = ORIGINAL_FEATURES,
    **kwargs,
) -> UNet:
    """The paper's 2D U-Net (original): Ronneberger's widths 64…1024, no batch norm.

    Args:
        in_channels: Image channels.
        num_classes: Output maps.
        features: Filters per level.
        **kwargs: Other :class:`UNet` options.
    """
    return UNet(2, in_channels, num_classes, features, batch_norm=False, **kwargs)


@MODELS.register("unet3d-transform")
def build_unet3d_transform(**kwargs) -> SliceStackUNet3d:
    """The paper's 3D U-Net (transform) on the 4-slice stack (:class:`SliceStackUNet3d`)."""
    return SliceStackUNet3d(**kwargs)
