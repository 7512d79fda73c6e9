"""The MSSEG 2016 cascade's patch classifier (Valverde et al., ../shared/SPECS.md §3).

One network of the cascade classifies the centre voxel of a 15³ patch of FLAIR, PD, T2
and T1: two stages of a same-padded 5³ convolution, ReLU and 2× pooling (32 then 64
filters), dropout 0.5, a 256-unit dense layer and a 2-way softmax, Glorot-initialised.

Parameter count, paper widths and 4 channels: 715,234, the paper's "about 715 k":

* conv 1: 4·5³·32 + 32 = 16,032;
* conv 2: 32·5³·64 + 64 = 256,064;
* dense 1: (64·3³)·256 + 256 = 442,624 (15 → 7 → 3 voxels per axis after the two poolings,
  which drop the odd last voxel, as Lasagne/Keras pooling does);
* dense 2: 256·2 + 2 = 514.

Pooling drops the last row of every odd-sized map (15 → 7 keeps voxels 0–13; 7 → 3 keeps
0–5), so the convolution outputs it would read are never used: :class:`PatchCNN` computes
only the kept ones (14³ of 15³, then 6³ of 7³), by zero-padding 2 before and 1 after and
convolving without padding. The outputs are exactly those of ``padding=2`` followed by
pooling, for 30 % fewer multiply-adds (99.6 M instead of 142 M a patch); the test suite
checks the equality against the plain layers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lesionseg.models import MODELS
from lesionseg.models.blocks import glorot_uniform_
from lesionseg.models.geometry import ModelGeometry

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_POOL = {
    ("max", 2): nn.MaxPool2d,
    ("max", 3): nn.MaxPool3d,
    ("average", 2): nn.AvgPool2d,
    ("average", 3): nn.AvgPool3d,
}


class _TrimmedConvStage(nn.Module):
    """Same-padded convolution, ReLU and 2× pooling, computing only the pooled outputs.

    Args:
        in_size: Input side (voxels) of the stage.
        in_channels: Input maps.
        out_channels: Filters.
        kernel_size: Odd kernel side.
        pooling: ``"max"`` or ``"average"``.
        spatial_dims: 2 or 3.
    """

    def __init__(
        self,
        in_size: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        pooling: str,
        spatial_dims: int,
    ):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        half = kernel_size // 2
        kept = 2 * (in_size // 2)  # outputs the pooling reads
        # Kept outputs 0 … kept−1 read inputs −half … kept−1+half: what lies inside the
        # patch is cut, zeros are added for the rest (the patch's own "same" padding).
        self.end = min(in_size, kept + half)
        self.spatial_dims = spatial_dims
        self.padding = (half, kept + half - self.end) * spatial_dims  # F.pad order
        self.conv = _CONV[spatial_dims](in_channels, out_channels, kernel_size)
        self.pool = _POOL[(pooling, spatial_dims)](2)
        # ReLU is non-decreasing, so it commutes with max pooling: applying it after the
        # pooling gives the same values on an eighth of the voxels (about 15 % of the
        # stage's time for the paper's first stage on a CPU).
        self.relu_first = pooling != "max"
        self.out_size = in_size // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled feature maps of ``(N, C, *[in_size]*dims)`` inputs."""
        x = x[(..., *[slice(0, self.end)] * self.spatial_dims)]
        x = self.conv(F.pad(x, self.padding))
        return self.pool(F.relu(x)) if self.relu_first else F.relu(self.pool(x))


class PatchCNN(nn.Module):
    """A patch classifier: convolution stages, dropout, a hidden dense layer, logits.

    Args:
        in_channels: Image channels (FLAIR, PD, T2, T1 for the cascade).
        num_classes: Classes (2).
        patch_size: Patch side in voxels (15).
        widths: Filters of each convolution stage (32, 64).
        kernel_size: Convolution kernel side (5).
        pooling: ``"max"`` (the paper) or ``"average"`` (the 2016 code).
        hidden: Units of the dense layer (256).
        dropout: Dropout before the dense layers (0.5).
        spatial_dims: 3 (the cascade) or 2.
    """

    def __init__(
        self,
        in_channels: int = 4,
        num_classes: int = 2,
        patch_size: int = 15,
        widths: Sequence[int] = (32, 64),
        kernel_size: int = 5,
        pooling: str = "max",
        hidden: int = 256,
        dropout: float = 0.5,
        spatial_dims: int = 3,
    ):
        super().__init__()
        if pooling not in ("max", "average"):
            raise ValueError(f"pooling must be 'max' or 'average', got {pooling!r}")
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        stages, size, channels = [], int(patch_size), in_channels
        for width in widths:
            if size < 2:
                raise ValueError(f"patch_size {patch_size} is too small for {len(widths)} poolings")
            stage = _TrimmedConvStage(
                size, channels, int(width), kernel_size, pooling, spatial_dims
            )
            stages.append(stage)
            size, channels = stage.out_size, int(width)
        self.features = nn.Sequential(*stages)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(channels * size**spatial_dims, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )
        self.geometry = ModelGeometry(
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            num_classes=num_classes,
            patch_size=(int(patch_size),) * spatial_dims,
        )
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Conv3d, nn.Linear)):
                glorot_uniform_(module)  # Glorot (Lasagne/Keras default), zero bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, num_classes)`` logits of ``(N, C, *patch)`` patches."""
        return self.classifier(self.features(x))


@MODELS.register("patch-cnn")
def build_patch_cnn(in_channels: int, num_classes: int, **options) -> PatchCNN:
    """Factory for recipes: ``model: {name: patch-cnn, widths: [32, 64], ...}``."""
    return PatchCNN(in_channels, num_classes, **options)
