"""EDD Net: an ensemble of DeconvNets with a refinement head (Chen et al. 2017, SPECS §4).

The first stage of the acute ischaemic lesion system works on 2D DWI slices (training
patches 64×64, whole slices at inference, sides a multiple of 4). Each of N DeconvNet
branches (:class:`DeconvNetBranch`, separate weights, the same input) gives lesion logits;
their sum, a ReLU and a 1×1 convolution form the naive ensemble; the input image
concatenated with the ensemble goes through three 3×3 convolutions, the refined output.
:meth:`EDDNet.forward` returns ``(refined, ensemble, branch 1, …, branch N)``, every one
``(N, num_classes, H, W)`` logits; the first is the model's main output (the protocol's
full-resolution output), the others exist for the loss. In eval mode it returns the refined
logits alone unless ``eval_all_outputs`` is set (as MONAI's DynUNet does with its deep
supervision heads): the volume predictor (``inference/predictor.py``) turns a model's output
into probabilities directly and does not yet take the first of a tuple, while the trainer
and validation accept both forms.

Layer counts follow SPECS §4, confirmed by the official Caffe definitions
(lc12git/AcuteIscheamicLesionSegmentation, ``EDD/net_deploy.prototxt``): per branch
11 encoder convolutions (32 ×2 | pool | 64 ×4 | pool | 128 ×5) and 11 decoder layers
(128 ×4, 64 | unpool | 64 ×3, 32 | unpool | 32, K). The paper itself gives only "three
stacks of convolution layers and two pooling layers" and the 3×3, stride-1 filters; its
Fig. 3, which has the counts, is not in our text.

Loss (paper Eq. 3, λᵢ = 1): the sum of N + 2 cross-entropies, one per output, all at full
resolution. The existing deep-supervision loss expresses it with explicit unit weights
(its default weights are nnU-Net's and would be wrong here); the full-resolution target is
passed unchanged to every output, since all have the input's size::

    loss: {name: deep_supervision, loss: cross_entropy, weights: [1, 1, 1, 1]}  # N = 2

(N + 2 weights: ``[1, 1, 1]`` for ``branches: 1``, ``[1, 1, 1, 1, 1]`` for 3.)

Parameter count, paper configuration (1 input channel, DWI; K = 2 classes; N = 2;
widths 32, 64, 128): **3,223,212**, the paper's "about 3.2 M". Counted: the weights and
biases of every convolution. The batch norms are Caffe ``BatchNorm`` layers without the
``Scale`` layer that would add a learnable scale and shift, hence ``affine=False`` and no
parameters (their running means and variances are buffers). Every convolution has a bias,
as in the official definitions (Caffe's ``bias_term`` default, zero-filled), including those
followed by a batch norm, where it is redundant: the normalisation subtracts it again, so
its gradient is zero (``conv_bias=False`` drops those 3,648 biases: 3,219,564). With
``conv(a, b) = 9·a·b + b``, one branch with C input channels:

* encoder: conv(C, 32) + conv(32, 32) + conv(32, 64) + 3·conv(64, 64) + conv(64, 128)
  + 4·conv(128, 128) = 288·C + 802,752;
* decoder: 4·conv(128, 128) + conv(128, 64) + 3·conv(64, 64) + conv(64, 32)
  + conv(32, 32) + conv(32, K) = 802,624 + 578 (K = 2) = 803,202;

so 1,606,242 per branch for C = 1, 3,212,484 for two; the ensemble's 1×1 convolution
2·2 + 2 = 6; refinement conv(C + K, 32) + conv(32, 32) + conv(32, K) = 896 + 9,248 + 578
= 10,722. Total 3,212,484 + 6 + 10,722 = 3,223,212.

The decoder's layers are Caffe ``Deconvolution`` layers of stride 1 and padding 1: a
transposed 3×3 convolution of stride 1 is a 3×3 convolution with the kernel flipped and its
in/out axes swapped, the same function class and parameter count, so we use ``nn.Conv2d``.
Their Caffe initialisation differs, though: Caffe's ``xavier`` filler draws U(±√(3/n)) with
n = blob count / blob.shape[0], which is in·9 for a convolution but out·9 for a
deconvolution (its blob is (in, out, 3, 3)); :func:`caffe_xavier_` reproduces both.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lesionseg.models import MODELS
from lesionseg.models.geometry import ModelGeometry
from lesionseg.models.unet import check_input

PAPER_WIDTHS = (32, 64, 128)
#: Caffe ``BatchNorm``'s epsilon.
CAFFE_BN_EPS = 1e-5
#: PyTorch's momentum default. Caffe keeps a bias-corrected running average of decay 0.999
#: (``moving_average_fraction``), close to PyTorch's cumulative average (``momentum=None``)
#: over the first thousand iterations; 0.1 lets short runs evaluate sensibly.
TORCH_BN_MOMENTUM = 0.1


def caffe_xavier_(conv: nn.Conv2d, transposed: bool = False) -> None:
    """Caffe's ``xavier`` filler: weights U(±√(3/n)), zero bias.

    Args:
        conv: The convolution to initialise.
        transposed: The layer stands for a Caffe ``Deconvolution``: n = out·k² instead of
            in·k² (Caffe divides the blob size by its first axis, the input channels of a
            deconvolution).
    """
    out_channels, in_channels, *kernel = conv.weight.shape
    fan = (out_channels if transposed else in_channels) * kernel[0] * kernel[1]
    bound = (3.0 / fan) ** 0.5
    nn.init.uniform_(conv.weight, -bound, bound)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


class ConvBNReLU(nn.Sequential):
    """A 3×3 same convolution, batch norm without scale and shift, ReLU.

    Args:
        in_channels: Input channels.
        out_channels: Filters.
        transposed: Stands for a Caffe ``Deconvolution`` (initialisation only).
        bias: Give the convolution a bias (Caffe's default; redundant before the norm).
        bn_momentum: Batch-norm momentum, PyTorch convention.
        bn_eps: Batch-norm epsilon.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        transposed: bool = False,
        bias: bool = True,
        bn_momentum: float | None = TORCH_BN_MOMENTUM,
        bn_eps: float = CAFFE_BN_EPS,
    ):
        conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=bias)
        caffe_xavier_(conv, transposed)
        super().__init__(
            conv,
            nn.BatchNorm2d(out_channels, eps=bn_eps, momentum=bn_momentum, affine=False),
            nn.ReLU(inplace=True),
        )


def _stack(
    channels: Sequence[int], transposed: bool, bias: bool, momentum: float | None, eps: float
) -> nn.Sequential:
    """Consecutive :class:`ConvBNReLU` layers, ``channels[0]`` → … → ``channels[-1]``."""
    return nn.Sequential(
        *(
            ConvBNReLU(a, b, transposed, bias, momentum, eps)
            for a, b in zip(channels[:-1], channels[1:])
        )
    )


class DeconvNetBranch(nn.Module):
    """One adapted DeconvNet (Noh et al. 2015): two poolings, unpooling with their indices.

    ``conv w1 ×2 → pool → conv w2 ×4 → pool → conv w3 ×5 → conv w3 ×4, conv w2 → unpool →
    conv w2 ×3, conv w1 → unpool → conv w1 → conv K`` (3×3, padding 1; BN and ReLU after all
    but the last). Unpooling puts each value back where its pooling window's maximum was and
    zeros elsewhere (Caffe's pooling mask). Within a window of ties both Caffe and PyTorch
    keep the first maximum in row-major order (their comparison is a strict ``>``): the
    top-left of an all-zero window, which unpools to zeros anyway.

    Args:
        in_channels: Image channels.
        num_classes: Output maps K.
        widths: Filters of the three stacks (32, 64, 128).
        conv_bias: Biases on the convolutions followed by batch norm.
        bn_momentum: Batch-norm momentum, PyTorch convention (None: cumulative average).
        bn_eps: Batch-norm epsilon.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        widths: Sequence[int] = PAPER_WIDTHS,
        conv_bias: bool = True,
        bn_momentum: float | None = TORCH_BN_MOMENTUM,
        bn_eps: float = CAFFE_BN_EPS,
    ):
        super().__init__()
        if len(widths) != 3:
            raise ValueError(f"widths must give the three stacks' filters, got {widths}")
        w1, w2, w3 = (int(w) for w in widths)
        norm = (conv_bias, bn_momentum, bn_eps)
        self.encoder1 = _stack((in_channels, w1, w1), False, *norm)
        self.pool1 = nn.MaxPool2d(2, return_indices=True)
        self.encoder2 = _stack((w1, w2, w2, w2, w2), False, *norm)
        self.pool2 = nn.MaxPool2d(2, return_indices=True)
        self.encoder3 = _stack((w2, w3, w3, w3, w3, w3), False, *norm)
        self.decoder3 = _stack((w3, w3, w3, w3, w3, w2), True, *norm)
        self.unpool2 = nn.MaxUnpool2d(2)
        self.decoder2 = _stack((w2, w2, w2, w2, w1), True, *norm)
        self.unpool1 = nn.MaxUnpool2d(2)
        self.decoder1 = _stack((w1, w1), True, *norm)
        self.classifier = nn.Conv2d(w1, num_classes, 3, padding=1)
        caffe_xavier_(self.classifier, transposed=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, K, H, W)`` logits of ``(N, C, H, W)`` inputs, H and W multiples of 4."""
        y = self.encoder1(x)
        size1 = y.shape[2:]
        y, indices1 = self.pool1(y)
        y = self.encoder2(y)
        size2 = y.shape[2:]
        y, indices2 = self.pool2(y)
        y = self.decoder3(self.encoder3(y))
        y = self.decoder2(self.unpool2(y, indices2, output_size=size2))
        y = self.decoder1(self.unpool1(y, indices1, output_size=size1))
        return self.classifier(y)


class EDDNet(nn.Module):
    """N DeconvNet branches, their naive ensemble, and a refinement on image + ensemble.

    Args:
        in_channels: Image channels (1: DWI).
        num_classes: Output maps K (2).
        branches: Number N of DeconvNet branches (2).
        widths: Filters of the branches' three stacks (32, 64, 128).
        refine_width: Filters of the two hidden refinement convolutions (default
            ``widths[0]``, 32 in the paper).
        conv_bias: Biases on the convolutions followed by batch norm (True, as Caffe).
        bn_momentum: Batch-norm momentum, PyTorch convention (None: cumulative average).
        bn_eps: Batch-norm epsilon.
        eval_all_outputs: Return every output in eval mode too (default: only the refined
            logits, which is what prediction needs).
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        branches: int = 2,
        widths: Sequence[int] = PAPER_WIDTHS,
        refine_width: int | None = None,
        conv_bias: bool = True,
        bn_momentum: float | None = TORCH_BN_MOMENTUM,
        bn_eps: float = CAFFE_BN_EPS,
        eval_all_outputs: bool = False,
    ):
        super().__init__()
        self.eval_all_outputs = bool(eval_all_outputs)
        if int(branches) < 1:
            raise ValueError(f"branches must be at least 1, got {branches}")
        widths = tuple(int(w) for w in widths)
        refine = int(refine_width) if refine_width is not None else widths[0]
        self.branches = nn.ModuleList(
            DeconvNetBranch(in_channels, num_classes, widths, conv_bias, bn_momentum, bn_eps)
            for _ in range(int(branches))
        )
        # "conv6_3" of the official definitions: sum → ReLU → 1×1 convolution.
        self.ensemble = nn.Conv2d(num_classes, num_classes, 1)
        caffe_xavier_(self.ensemble)
        # Concatenation order [image, ensemble], as the official "concat" layer.
        self.refine = nn.Sequential(
            ConvBNReLU(in_channels + num_classes, refine, False, conv_bias, bn_momentum, bn_eps),
            ConvBNReLU(refine, refine, False, conv_bias, bn_momentum, bn_eps),
            nn.Conv2d(refine, num_classes, 3, padding=1),
        )
        caffe_xavier_(self.refine[-1])
        self.geometry = ModelGeometry(
            spatial_dims=2,
            in_channels=in_channels,
            num_classes=num_classes,
            size_multiple=(4, 4),
            slice_context=(0, 0),
            output_activation="softmax",
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """``(refined, ensemble, branch 1, …, branch N)`` logits, each ``(N, K, H, W)``.

        In eval mode, without ``eval_all_outputs``, the refined logits alone.

        Raises:
            ValueError: ``x`` is not ``(N, in_channels, H, W)`` with H, W multiples of 4.
        """
        check_input(x, self.geometry)
        outputs = [branch(x) for branch in self.branches]
        ensemble = self.ensemble(torch.relu(torch.stack(outputs).sum(0)))
        refined = self.refine(torch.cat([x, ensemble], dim=1))
        if self.training or self.eval_all_outputs:
            return (refined, ensemble, *outputs)
        return refined


@MODELS.register("edd")
def build_edd(in_channels: int, num_classes: int, **options) -> EDDNet:
    """Factory for recipes: ``model: {name: edd, branches: 2, widths: [32, 64, 128]}``."""
    return EDDNet(in_channels, num_classes, **options)
