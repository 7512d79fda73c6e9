"""DeepMedic: the dual-pathway 3D CNN of Kamnitsas et al. (2017), SPECS.md §1.

The network takes ONE full-resolution input tensor and cuts every pathway's input
from it, so that samplers and predictors only need :class:`ModelGeometry`:

* the normal pathway sees the central ``output + 16`` voxels (eight valid 3×3×3
  convolutions, receptive field 17³);
* each subsampled pathway (factor ``f``) sees the strided copy
  ``x[..., f//2::f, f//2::f, f//2::f]``: the input is cut into f×f×f blocks from its
  first voxel on, and each low-resolution voxel is the centre of its block. Its
  output is up-sampled by repeating each voxel f times per axis, so that output
  voxel ``i`` receives the low-resolution voxel of the block it lies in (a context
  of 17 blocks = 51³ voxels for f = 3);
* the pathway outputs are concatenated and go through 1×1×1 "hidden" layers and
  the classifier.

For the blocks of every pathway to line up with the output grid, the output size
must be a multiple of ``P`` = lcm(subsample factors) and the margin ``M`` (input
voxels before the first output voxel, and after the last) a multiple of ``P``
that covers every pathway. Hence ``geometry.context = 2M + 1`` and
``geometry.size_multiple = P``: for the paper's network M = 24, P = 3, so a training
segment of 25³ (output 9³) is a 57³ input whose strided copy is the paper's 19³
low-resolution segment. The paper's inference segment 45³ (output 29³) is not a
multiple of 3; lesionseg uses output 30³ (low-resolution input 26³, as in the
paper) so that tiled and whole-volume predictions agree exactly.

Layers are pre-activation as in the official code (deepmedic/deepmedic,
``ConvBlock``): each convolution is preceded by batch norm, PReLU and dropout on its
input; the first convolution of a pathway has a learnt bias on the image instead of
batch norm and no non-linearity; the classifier adds its own bias. With 4 channels
and 5 classes this gives the 663,163 parameters derived in SPECS.md.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
from torch import nn

from lesionseg.models import MODELS
from lesionseg.models.geometry import ModelGeometry

PAPER_WIDTHS = (30, 30, 40, 40, 40, 40, 50, 50)
PAPER_HIDDEN = (150, 150)
#: Official default residual connections (1-based layers): later versions of the code.
OFFICIAL_RESIDUAL_LAYERS = (4, 6, 8)
#: The official code keeps batch-norm statistics as the mean of the last 60 batches;
#: an exponential average with the same centre of mass (29.5 batches back) has this momentum.
BN_MOMENTUM = 1 / 30.5
#: Default output tile side for inference, a multiple of 3 (see benchmarks/bench_deepmedic.py).
INFERENCE_TILE = 75


class PreActConv(nn.Module):
    """``[batch norm | bias] → [PReLU] → dropout → convolution``, the official layer order.

    Args:
        in_channels: Input channels.
        out_channels: Filters.
        kernel_size: Cubic kernel side (3 in the pathways, 1 in the hidden layers).
        first: First layer of a pathway: a learnt bias on the input instead of batch
            norm, and no non-linearity (the input is the image).
        dropout: Dropout probability on the layer's input.
        bias: Learnt bias on the output (only the classifier has one).
        bn_momentum: Batch-norm momentum (PyTorch convention).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        first: bool = False,
        dropout: float = 0.0,
        bias: bool = False,
        bn_momentum: float = BN_MOMENTUM,
    ):
        super().__init__()
        self.first = first
        if first:
            self.input_bias = nn.Parameter(torch.zeros(in_channels))
            self.norm = None
            self.act = None
        else:
            self.norm = nn.BatchNorm3d(in_channels, momentum=bn_momentum)
            self.act = nn.PReLU(in_channels, init=0.01)
        self.drop = nn.Dropout(dropout) if dropout > 0 else None
        self.conv = nn.Conv3d(in_channels, out_channels, kernel_size, bias=bias)
        # He et al. (2015): N(0, 2 / fan_in), as the paper and the official code.
        nn.init.normal_(self.conv.weight, 0.0, math.sqrt(2.0 / (in_channels * kernel_size**3)))
        if bias:
            nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the layer."""
        if self.first:
            x = x + self.input_bias.view(1, -1, 1, 1, 1)
        else:
            x = self.act(self.norm(x))
        if self.drop is not None:
            x = self.drop(x)
        return self.conv(x)


def crop_centre(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """The central ``size`` voxels of ``x``'s spatial axes.

    As in the official code, the centre of an even width is the voxel to its left.
    """
    slices = []
    for have, want in zip(x.shape[2:], size):
        start = (have - 1) // 2 - (want - 1) // 2
        slices.append(slice(start, start + want))
    return x[(slice(None), slice(None), *slices)]


def residual_add(deeper: torch.Tensor, earlier: torch.Tensor) -> torch.Tensor:
    """``deeper`` + the centre of ``earlier``, zero-padded (or cut) to ``deeper``'s channels."""
    earlier = crop_centre(earlier, deeper.shape[2:])
    extra = deeper.shape[1] - earlier.shape[1]
    if extra >= 0:
        return torch.cat(
            [deeper[:, : earlier.shape[1]] + earlier, deeper[:, earlier.shape[1] :]], 1
        )
    return deeper + earlier[:, : deeper.shape[1]]


class Pathway(nn.Module):
    """A stack of valid 3×3×3 pre-activation convolutions with optional residual connections.

    Args:
        in_channels: Image channels.
        widths: Filters per layer.
        residual_layers: 1-based layers whose output gets the input of the previous
            layer added (official code: ``layersWithResidualConn``).
        dropout: Dropout on the input of every layer (the paper's 2% for TBI).
        bn_momentum: Batch-norm momentum.
    """

    def __init__(
        self,
        in_channels: int,
        widths: Sequence[int],
        residual_layers: Sequence[int] = (),
        dropout: float = 0.0,
        bn_momentum: float = BN_MOMENTUM,
    ):
        super().__init__()
        self.residual_layers = tuple(int(r) for r in residual_layers)
        bad = [r for r in self.residual_layers if not 2 <= r <= len(widths)]
        if bad:
            raise ValueError(
                f"residual layers must be between 2 and {len(widths)} (1-based), got {bad}"
            )
        channels = [in_channels, *widths]
        self.layers = nn.ModuleList(
            PreActConv(
                channels[i],
                channels[i + 1],
                3,
                first=i == 0,
                dropout=dropout,
                bn_momentum=bn_momentum,
            )
            for i in range(len(widths))
        )

    @property
    def half_field(self) -> int:
        """Voxels of context on each side of an output voxel (8 for 8 layers)."""
        return len(self.layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the pathway (valid convolutions: each layer removes 2 voxels per axis)."""
        inputs = []
        for number, layer in enumerate(self.layers, start=1):
            inputs.append(x)
            x = layer(x)
            if number in self.residual_layers:
                x = residual_add(x, inputs[number - 2])
        return x


class DeepMedic(nn.Module):
    """DeepMedic with any number of subsampled pathways.

    Args:
        in_channels: Image channels (modalities).
        num_classes: Output classes (including background).
        widths: Filters of the normal pathway's layers.
        subsample_factors: One odd factor per subsampled pathway (paper ``[3]``, later
            official versions ``[3, 5]``); ``[]`` gives the single-pathway "Deep+" model.
        subsampled_widths: Filters of the subsampled pathways (default: ``widths``).
        hidden: Filters of the 1×1×1 hidden layers after the concatenation.
        residual: Residual connections: False, True (official layers 4, 6, 8) or a list
            of 1-based layers; applied to every pathway.
        dropout: Dropout on the inputs of the last two layers (second-to-last hidden
            layer and classifier; with one hidden layer, both of its layers).
        conv_dropout: Dropout on the inputs of the pathway convolutions (paper TBI: 0.02).
        bn_momentum: Batch-norm momentum (PyTorch convention).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        widths: Sequence[int] = PAPER_WIDTHS,
        subsample_factors: Sequence[int] = (3,),
        subsampled_widths: Sequence[int] | None = None,
        hidden: Sequence[int] = PAPER_HIDDEN,
        residual: bool | Sequence[int] = False,
        dropout: float = 0.5,
        conv_dropout: float = 0.0,
        bn_momentum: float = BN_MOMENTUM,
    ):
        super().__init__()
        widths = [int(w) for w in widths]
        sub_widths = [int(w) for w in (subsampled_widths or widths)]
        factors = [int(f) for f in subsample_factors]
        if not widths or not all(w > 0 for w in widths + sub_widths):
            raise ValueError(f"widths must be positive, got {widths} / {sub_widths}")
        if any(f < 3 or f % 2 == 0 for f in factors):
            raise ValueError(
                f"subsample factors must be odd and >= 3 (a low-resolution voxel is the centre "
                f"of its block), got {factors}"
            )
        if residual is True:
            residual_layers = [r for r in OFFICIAL_RESIDUAL_LAYERS if r <= len(widths)]
        elif residual is False or residual is None:
            residual_layers = []
        else:
            residual_layers = [int(r) for r in residual]
        self.factors = tuple(factors)
        self.normal = Pathway(in_channels, widths, residual_layers, conv_dropout, bn_momentum)
        self.subsampled = nn.ModuleList(
            Pathway(in_channels, sub_widths, residual_layers, conv_dropout, bn_momentum)
            for _ in factors
        )
        # Margin M: a multiple of every factor (so output blocks start on block
        # boundaries) that holds each pathway's context.
        self.period = math.lcm(*factors) if factors else 1
        need = max(
            [self.normal.half_field] + [p.half_field * f for p, f in zip(self.subsampled, factors)]
        )
        self.margin = -(-need // self.period) * self.period

        concat = widths[-1] + len(factors) * sub_widths[-1]
        channels = [concat, *[int(h) for h in hidden], num_classes]
        n = len(channels) - 1
        self.head = nn.ModuleList(
            PreActConv(
                channels[i],
                channels[i + 1],
                1,
                dropout=dropout if i >= n - 2 else 0.0,
                bias=i == n - 1,
                bn_momentum=bn_momentum,
            )
            for i in range(n)
        )
        self.geometry = ModelGeometry(
            spatial_dims=3,
            in_channels=in_channels,
            num_classes=num_classes,
            context=(2 * self.margin + 1,) * 3,
            size_multiple=(self.period,) * 3,
            output_activation="softmax",
            input_scales=(1, *self.factors),
            receptive_fields=tuple(self.receptive_fields().items()),
            # Output tile side for CPU inference (benchmarks/bench_deepmedic.py).
            inference_tile=INFERENCE_TILE,
        )

    def receptive_fields(self) -> dict[str, int]:
        """Receptive field (voxels per axis, full resolution) of each pathway.

        The normal pathway: 17 for 8 layers. A subsampled pathway: its 17 low-resolution
        voxels each stand for a block of ``f`` voxels, so 17·f (51 for f = 3).
        """
        fields = {"normal": 2 * self.normal.half_field + 1}
        for p, f in zip(self.subsampled, self.factors):
            fields[f"subsampled_x{f}"] = (2 * p.half_field + 1) * f
        return fields

    def pathway_input_sizes(self, output_size: Sequence[int]) -> dict[str, tuple[int, ...]]:
        """Input segment of each pathway for an output of ``output_size`` (paper's terms).

        For output 9³: normal 25³, subsampled ×3 19³.
        """
        sizes = {"normal": tuple(o + 2 * self.normal.half_field for o in output_size)}
        for p, f in zip(self.subsampled, self.factors):
            sizes[f"subsampled_x{f}"] = tuple(-(-o // f) + 2 * p.half_field for o in output_size)
        return sizes

    def inference_copy(self) -> DeepMedic:
        """Eval-only copy with batch norms folded in, used by the predictor."""
        return fold_batch_norm(self)

    def _check_input(self, x: torch.Tensor) -> tuple[int, ...]:
        if x.dim() != 5:
            raise ValueError(f"DeepMedic expects (N, C, X, Y, Z) input, got shape {tuple(x.shape)}")
        out = tuple(s - 2 * self.margin for s in x.shape[2:])
        if any(o < 1 for o in out) or any(s % self.period for s in x.shape[2:]):
            raise ValueError(
                f"DeepMedic input of spatial size {tuple(x.shape[2:])}: each side must be at "
                f"least {2 * self.margin + self.period} and a multiple of {self.period} "
                f"(output = input - {2 * self.margin})"
            )
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, K, X - 2M, Y - 2M, Z - 2M)`` for an input ``(N, C, X, Y, Z)``."""
        out = self._check_input(x)
        h = self.normal.half_field
        start = self.margin - h
        normal_in = x[
            :, :, start : x.shape[2] - start, start : x.shape[3] - start, start : x.shape[4] - start
        ]
        features = [self.normal(normal_in)]
        for pathway, f in zip(self.subsampled, self.factors):
            # Blocks of the output begin at block margin/f; the pathway needs half_field more.
            first = self.margin // f - pathway.half_field
            counts = [o // f + 2 * pathway.half_field for o in out]
            low = x[:, :, f // 2 :: f, f // 2 :: f, f // 2 :: f]
            low = low[
                :,
                :,
                first : first + counts[0],
                first : first + counts[1],
                first : first + counts[2],
            ]
            y = pathway(low)
            features.append(upsample_repeat(y, f)[:, :, : out[0], : out[1], : out[2]])
        x = torch.cat(features, 1) if len(features) > 1 else features[0]
        for layer in self.head:
            x = layer(x)
        return x


def _fold_norm_into(conv: nn.Conv3d, layer: PreActConv) -> None:
    """Move ``layer``'s (eval-mode) batch norm into ``conv``, which produces its input.

    ``BN(W * z + b) = (s·W) * z + (s·b + t)`` with ``s = γ/√(σ² + ε)``, ``t = β − s·μ``.
    """
    norm = layer.norm
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
    shift = norm.bias - scale * norm.running_mean
    bias = conv.bias if conv.bias is not None else torch.zeros_like(shift)
    conv.weight.mul_(scale.view(-1, 1, 1, 1, 1))
    conv.bias = nn.Parameter(bias * scale + shift)
    layer.norm = nn.Identity()


def _fold_input_bias(layer: PreActConv) -> None:
    """A pathway's first layer: ``W * (x + c) = W * x + Σ W·c`` for a valid convolution."""
    conv = layer.conv
    extra = torch.einsum("oi...,i->o", conv.weight, layer.input_bias)
    conv.bias = nn.Parameter(extra if conv.bias is None else conv.bias + extra)
    layer.input_bias.zero_()


@torch.no_grad()
def fold_batch_norm(model: DeepMedic) -> DeepMedic:
    """An eval-only copy of ``model`` with batch norms folded into the preceding convolutions.

    Saves one pass over every feature map (about 10% of CPU inference time); outputs
    equal the original's in eval mode up to rounding. Norms that follow a residual sum
    are kept (the sum is not the output of a single convolution).
    """
    fused = copy.deepcopy(model).eval()
    pathways = [fused.normal, *fused.subsampled]
    for pathway in pathways:
        _fold_input_bias(pathway.layers[0])
        residual = set(pathway.residual_layers)
        for k in range(2, len(pathway.layers) + 1):  # 1-based layer k normalises layer k-1's output
            # Keep the norm if its input is a residual sum, or is itself added by layer k+1.
            if k - 1 not in residual and k + 1 not in residual:
                _fold_norm_into(pathway.layers[k - 2].conv, pathway.layers[k - 1])
    first_head = fused.head[0]
    if not any(len(p.layers) in p.residual_layers for p in pathways):
        norm = first_head.norm
        offset = 0
        for pathway in pathways:
            conv = pathway.layers[-1].conv
            part = slice(offset, offset + conv.out_channels)
            piece = PreActConv(conv.out_channels, 1, 1)
            piece.norm.load_state_dict(
                {k: v[part] if v.dim() else v for k, v in norm.state_dict().items()}
            )
            piece.norm.eval()
            _fold_norm_into(conv, piece)
            offset += conv.out_channels
        first_head.norm = nn.Identity()
    for i in range(1, len(fused.head)):
        _fold_norm_into(fused.head[i - 1].conv, fused.head[i])
    return fused


def upsample_repeat(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Repeat every voxel ``factor`` times along each spatial axis (no interpolation).

    The result keeps ``x``'s memory layout: a contiguous result of a channels-last
    input made the concatenation with the normal pathway, and so the whole head,
    contiguous; the 1×1×1 head layers then ran 3.6× slower in bfloat16 (a 75×60×75
    tile: 243 ms against 67 ms for the 150 → 150 layer).
    """
    n, c, a, b, d = x.shape
    if c > 1 and x.is_contiguous(memory_format=torch.channels_last_3d):
        v = x.permute(0, 2, 3, 4, 1)  # (N, X, Y, Z, C), a contiguous view
        v = v[:, :, None, :, None, :, None].expand(n, a, factor, b, factor, d, factor, c)
        return v.reshape(n, a * factor, b * factor, d * factor, c).permute(0, 4, 1, 2, 3)
    x = x[:, :, :, None, :, None, :, None].expand(n, c, a, factor, b, factor, d, factor)
    return x.reshape(n, c, a * factor, b * factor, d * factor)


@MODELS.register("deepmedic")
def build_deepmedic(in_channels: int, num_classes: int, **options) -> DeepMedic:
    """Factory for recipes: ``model: {name: deepmedic, widths: [...], ...}``."""
    return DeepMedic(in_channels, num_classes, **options)
