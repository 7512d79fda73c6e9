"""D-UNet: a 2D U-Net whose encoder fuses a small 3D branch (Zhou et al., papers/004).

The input of one target slice i is the stack of slices i−2, i−1, i, i+1 as channels
(``slice_context=(2, 1)``), 192×192 in the paper. The 2D encoder sees the stack as 4
channels; the 3D branch sees it as a 1-channel volume of depth 4, pooled by 2 on every
axis (depth 4 → 2 → 1). At the fusion levels (default 2 and 3) a dimension-transform
block turns the 3D features into 2D ones (1×1×1 convolution to one map, whose depth
planes become channels, then a 3×3 convolution with ReLU), squeeze-and-excitation
weights both branches, and their sum continues down the 2D encoder. The decoder is
the 2D U-Net's. Layer by layer this is ``D_Unet`` / ``D_SE_Add`` / ``D_Add`` of the
authors' Keras code (SZUHvern/D-UNet).

Table 5's ablations are ``variant`` names: ``"Add-1"``, ``"Add-12"``, ``"Add-23"``,
``"Add-123"``, ``"SEAdd-12"``, ``"SEAdd-23"`` (the paper's D-UNet, the default) and
``"SEAdd-123"``: the digits are the fusion levels, ``SE`` switches squeeze-and-excitation
on. Parameter counts (Keras-style, with batch-norm running statistics) match the
table exactly; for SEAdd-123 only with ``se_ratio=8`` (8,647,012; with the default
ratio 16 of the text and of the other rows it has 8,641,636).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from torch import nn

from lesionseg.errors import LesionsegError
from lesionseg.models import MODELS
from lesionseg.models.blocks import (
    KERAS_BN_EPS,
    KERAS_BN_MOMENTUM,
    SqueezeExcitation,
    decoder_blocks,
    dropout_level_set,
    encoder_blocks,
    glorot_uniform_,
    he_normal_,
)
from lesionseg.models.geometry import ModelGeometry
from lesionseg.models.unet import (
    TRANSFORM_FEATURES,
    UNetPass,
    check_input,
    default_activation,
)

_VARIANT = re.compile(r"(se)?add-?([1-9]+)", re.IGNORECASE)


def parse_variant(variant: str) -> tuple[tuple[int, ...], bool]:
    """Fusion levels and SE switch of a Table 5 name such as ``"SEAdd-23"``.

    Args:
        variant: ``[SE]Add-<levels>``, case-insensitive, e.g. ``"Add-1"``, ``"seadd-123"``.

    Returns:
        (fusion levels, whether squeeze-and-excitation is used).

    Raises:
        LesionsegError: The name does not have that form.
    """
    match = _VARIANT.fullmatch(variant.strip())
    if match is None:
        raise LesionsegError(
            f"unknown D-UNet variant {variant!r}; expected e.g. 'SEAdd-23', 'Add-12', 'Add-1'"
        )
    levels = tuple(sorted({int(d) for d in match.group(2)}))
    return levels, match.group(1) is not None


class DimensionTransform(nn.Module):
    """Fuse 3D features (N, C3, D, H, W) into 2D features (N, C, H, W).

    1×1×1 convolution to one map → its D depth planes as channels → 3×3 convolution to
    C maps with ReLU → (optionally SE-weighted) sum with the (optionally SE-weighted) 2D
    features (paper Eq. 1–2, Fig. 2b).

    Args:
        channels_3d: Channels C3 of the 3D features.
        depth: Depth D of the 3D features.
        channels: Channels C of the 2D features (and of the output).
        se: Weight both branches by squeeze-and-excitation before adding.
        se_ratio: SE reduction ratio.
    """

    def __init__(
        self, channels_3d: int, depth: int, channels: int, se: bool = True, se_ratio: int = 16
    ):
        super().__init__()
        self.reduce = nn.Conv3d(channels_3d, 1, kernel_size=1)
        self.project = nn.Conv2d(depth, channels, kernel_size=3, padding=1)
        self.se_3d = SqueezeExcitation(channels, se_ratio) if se else nn.Identity()
        self.se_2d = SqueezeExcitation(channels, se_ratio) if se else nn.Identity()

    def forward(self, x3d: torch.Tensor, x2d: torch.Tensor) -> torch.Tensor:
        """Fused features (N, C, H, W)."""
        planes = self.reduce(x3d).squeeze(1)  # (N, D, H, W): depth becomes channels
        return self.se_3d(torch.relu(self.project(planes))) + self.se_2d(x2d)


class DUNet(UNetPass, nn.Module):
    """Dimension-fusion U-Net for slice stacks; returns logits (N, num_classes, H, W).

    Args:
        in_channels: Image channels C before slice stacking; the input has C·S channels,
            image-major (all S slices of channel 0 first), S = 1 + sum(slice_context).
        num_classes: Output maps: 1 (sigmoid, the paper) or K ≥ 2 (softmax).
        features: Filters per level of the 2D encoder, shallow to deep.
        features_3d: Filters per level of the 3D branch; default ``features`` up to the
            deepest fusion level.
        fusion_levels: 1-based encoder levels with a dimension-transform block; the 3D
            branch is built only as deep as the deepest of them. Empty: a 2.5D U-Net.
        se: Squeeze-and-excitation in the dimension-transform blocks.
        se_ratio: SE reduction ratio r.
        variant: A Table 5 name (``"SEAdd-23"``, ``"Add-12"``, ...); overrides
            ``fusion_levels`` and ``se``.
        batch_norm: Batch norm after every 3×3 convolution of the conv blocks.
        bn_momentum: Batch-norm momentum, PyTorch convention (0.01 = Keras' 0.99).
        bn_eps: Batch-norm epsilon.
        dropout: Dropout probability after the blocks of ``dropout_levels``.
        dropout_levels: 1-based levels followed by dropout; default the two deepest.
        slice_context: (slices before, after) the target slice.
        output_activation: ``"sigmoid"`` or ``"softmax"``; default from ``num_classes``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 1,
        features: Sequence[int] = TRANSFORM_FEATURES,
        features_3d: Sequence[int] | None = None,
        fusion_levels: Sequence[int] = (2, 3),
        se: bool = True,
        se_ratio: int = 16,
        variant: str | None = None,
        batch_norm: bool = True,
        bn_momentum: float = KERAS_BN_MOMENTUM,
        bn_eps: float = KERAS_BN_EPS,
        dropout: float = 0.3,
        dropout_levels: Sequence[int] | None = None,
        slice_context: Sequence[int] = (2, 1),
        output_activation: str | None = None,
    ):
        super().__init__()
        if variant is not None:
            fusion_levels, se = parse_variant(variant)
        features = tuple(int(f) for f in features)
        levels = len(features)
        fusion_levels = tuple(sorted({int(level) for level in fusion_levels}))
        if any(not 1 <= level <= levels for level in fusion_levels):
            raise LesionsegError(f"D-UNet fusion levels {fusion_levels} must lie in 1..{levels}")
        levels_3d = max(fusion_levels, default=0)
        features_3d = tuple(int(f) for f in (features_3d or features))[:levels_3d]
        if len(features_3d) < levels_3d:
            raise LesionsegError(
                f"D-UNet features_3d needs {levels_3d} widths for fusion levels {fusion_levels}"
            )
        slice_context = (int(slice_context[0]), int(slice_context[1]))
        self.in_channels = in_channels
        self.depth = 1 + sum(slice_context)
        norm = {"batch_norm": batch_norm, "bn_momentum": bn_momentum, "bn_eps": bn_eps}

        self.encoder = encoder_blocks(in_channels * self.depth, features, 2, **norm)
        self.pool = nn.MaxPool2d(2)

        # 3D branch: pool by 2 on every axis, the depth only while it is at least 2
        # (Keras' MaxPooling3D(2) on the 4-slice stack: depth 4 → 2 → 1).
        depths = [self.depth]
        self.pools_3d = nn.ModuleList()
        for _ in range(1, levels_3d):
            depth_pool = 2 if depths[-1] >= 2 else 1
            self.pools_3d.append(nn.MaxPool3d((depth_pool, 2, 2)))
            depths.append(depths[-1] // depth_pool)
        self.encoder_3d = encoder_blocks(in_channels, features_3d, 3, **norm)
        self.fusions = nn.ModuleDict(
            {
                str(level): DimensionTransform(
                    features_3d[level - 1], depths[level - 1], features[level - 1], se, se_ratio
                )
                for level in fusion_levels
            }
        )

        self.dropout_levels = dropout_level_set(dropout_levels, levels)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.decoder = decoder_blocks(features, 2, 2, **norm)
        self.head = nn.Conv2d(features[0], num_classes, kernel_size=1)
        self.apply(he_normal_)
        glorot_uniform_(self.head)  # Keras' default initialiser: the official code names none here

        self.fusion_levels = fusion_levels
        self.geometry = ModelGeometry(
            spatial_dims=2,
            in_channels=in_channels,
            num_classes=num_classes,
            size_multiple=(2 ** (levels - 1),) * 2,
            slice_context=slice_context,
            output_activation=output_activation or default_activation(num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, num_classes, H, W) for slice stacks (N, C·S, H, W)."""
        check_input(x, self.geometry)
        n, _, h, w = x.shape
        fused = self._encode_3d(x.reshape(n, self.in_channels, self.depth, h, w))

        def fuse(level: int, x2d: torch.Tensor) -> torch.Tensor:
            return self.fusions[str(level)](fused[level], x2d) if level in fused else x2d

        return self.head(self.encode_decode(x, fuse))

    def _encode_3d(self, volume: torch.Tensor) -> dict[int, torch.Tensor]:
        """The 3D branch's features at each fusion level (it does not depend on the 2D one)."""
        out = {}
        for level, block in enumerate(self.encoder_3d, start=1):
            if level > 1:
                volume = self.pools_3d[level - 2](volume)
            volume = block(volume)
            if level in self.fusion_levels:
                out[level] = volume
        return out


@MODELS.register("dunet")
def build_dunet(**kwargs) -> DUNet:
    """D-UNet (:class:`DUNet`); the default is the paper's SEAdd-23 on a 4-slice stack."""
    return DUNet(**kwargs)
