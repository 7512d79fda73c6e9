"""MUSCLE Net: EDD Net's false-positive classifier (Chen et al. 2017, ../shared/SPECS.md §4).

A small candidate lesion (a per-slice component of EDD Net's mask with fewer than 60
pixels) is classified from a 4 × 16 × 16 input centred on its centroid: DWI patches of 16,
24 and 32 pixels, each resized to 16 × 16, and EDD Net's probability patch of 16 pixels
(:func:`lesionseg.inference.multiscale.multiscale_patches` builds it). The network is a
mini VGG: two stages of two 3 × 3 same-padded convolutions with ReLU (32 then 64 filters,
no batch norm), one 2× max-pooling between them, then dense layers of 128 and 64 units
(ReLU, dropout 0.5 after each) and the logits. The paper's "four convolution layers, one
pooling layer, and three fully connected layers" and the official Caffe definition
(``MUSCLE/net_deploy.prototxt``) agree with SPECS: no pooling after the second stage.

Parameter count, paper widths and 4 input maps: 598,658:

* conv 1_1: 4·3²·32 + 32 = 1,184;
* conv 1_2: 32·3²·32 + 32 = 9,248;
* conv 2_1: 32·3²·64 + 64 = 18,496;
* conv 2_2: 64·3²·64 + 64 = 36,928;
* dense 1: (64·8²)·128 + 128 = 524,416 (16 → 8 pixels per axis after the one pooling);
* dense 2: 128·64 + 64 = 8,256;
* dense 3: 64·2 + 2 = 130.

Image channels and input maps: the factory's ``in_channels`` is the data's image channels
(1: DWI), as for every model, and the network's input tensor has
``in_channels·len(scales) + 1`` maps (each image channel at each scale, then the dense
segmenter's probability). :class:`MultiScaleGeometry` records ``scales`` and reports that
count as ``input_channels_total``, which is what batch sizing and the contract tests ask.
The input is not a crop of the image, so the dense predictor
(:func:`~lesionseg.inference.predictor.predict_volume`) cannot run this model; it is asked
only about candidates, with inputs built by ``multiscale_patches``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from lesionseg.models import MODELS
from lesionseg.models.geometry import ModelGeometry


@dataclass(frozen=True)
class MultiScaleGeometry(ModelGeometry):
    """Geometry of a patch classifier fed multi-scale image patches plus probability maps.

    Attributes:
        patch_scales: Side (pixels) of each image patch before it is resized to
            ``patch_size`` (MUSCLE: 16, 24, 32).
        probability_maps: Maps of a previous network's probabilities appended after the
            image patches (MUSCLE: 1, EDD Net's lesion probability).
    """

    patch_scales: tuple[int, ...] = (16, 24, 32)
    probability_maps: int = 1

    @property
    def input_channels_total(self) -> int:
        """Channels of the network's input: image channels × scales + probability maps."""
        return self.in_channels * len(self.patch_scales) + self.probability_maps


class MuscleNet(nn.Module):
    """MUSCLE Net: multi-scale candidate patches in, lesion / false-positive logits out.

    Args:
        in_channels: Image channels (1: DWI); the input has ``in_channels·len(scales) + 1``
            maps.
        num_classes: Classes (2: false positive, lesion).
        scales: Side of each image patch before resizing (16, 24, 32).
        patch_size: Side of the network's input maps (16).
        widths: Filters of each stage of two 3 × 3 convolutions (32, 64); a 2× max-pooling
            separates consecutive stages (one pooling for the paper's two stages).
        hidden: Units of the hidden dense layers (128, 64), each followed by ReLU and dropout.
        dropout: Dropout rate after each hidden dense layer (0.5).
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        scales: Sequence[int] = (16, 24, 32),
        patch_size: int = 16,
        widths: Sequence[int] = (32, 64),
        hidden: Sequence[int] = (128, 64),
        dropout: float = 0.5,
    ):
        super().__init__()
        scales = tuple(int(s) for s in scales)
        if not scales or min(scales) < 1:
            raise ValueError(f"scales must be positive patch sides, got {scales}")
        if not widths:
            raise ValueError("widths must name at least one stage")
        size = int(patch_size)
        if size % 2 ** (len(widths) - 1):
            raise ValueError(f"patch_size {size} is not divisible by {2 ** (len(widths) - 1)}")
        self.geometry = MultiScaleGeometry(
            spatial_dims=2,
            in_channels=in_channels,
            num_classes=num_classes,
            patch_size=(size, size),
            patch_scales=scales,
            probability_maps=1,
        )
        layers: list[nn.Module] = []
        channels = self.geometry.input_channels_total
        for i, width in enumerate(int(w) for w in widths):
            if i:
                layers.append(nn.MaxPool2d(2))
                size //= 2
            for _ in range(2):
                layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU()]
                channels = width
        self.features = nn.Sequential(*layers)
        dense: list[nn.Module] = [nn.Flatten()]
        features = channels * size * size
        for units in (int(h) for h in hidden):
            dense += [nn.Linear(features, units), nn.ReLU(), nn.Dropout(dropout)]
            features = units
        dense.append(nn.Linear(features, num_classes))
        self.classifier = nn.Sequential(*dense)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                # Caffe's "xavier" filler (the official definition): U(±√(3 / fan_in)).
                bound = math.sqrt(3.0 / module.weight[0].numel())
                nn.init.uniform_(module.weight, -bound, bound)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, num_classes)`` logits of ``(N, in_channels·len(scales) + 1, P, P)`` inputs."""
        return self.classifier(self.features(x))


@MODELS.register("muscle")
def build_muscle(in_channels: int, num_classes: int, **options) -> MuscleNet:
    """Factory for recipes: ``model: {name: muscle, scales: [16, 24, 32], ...}``."""
    return MuscleNet(in_channels, num_classes, **options)
