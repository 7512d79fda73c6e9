"""The network the predictor runs: an eval-only copy with batch norms folded into convolutions.

In eval mode a batch norm is an affine map per channel, so when it directly follows a
convolution it can be folded into that convolution's weights and bias (PyTorch's
``fuse_conv_bn_eval``). That saves a pass over every feature map, and on the CPU more:
measured on this project's 2-core AVX-512 machine, a batch norm of a
16×32×4×192×192 map costs 320 ms channels-last in float32 (more than the 3×3×3
convolution before it), and under bfloat16 autocast it runs in float32, so each one
adds two casts of the whole map. Folding them took the paper D-UNet (32 slices of
192×192, 2 threads) from 324 to 236 ms per slice in float32 contiguous, 215 to 184 ms
channels-last and 106 to 98 ms in bfloat16 channels-last.

CPU autocast also runs some exact operations in float32 (max pooling in 3D,
max-unpooling): a bfloat16 map is cast up and the result cast down again, two passes
over the map for nothing, since a maximum or a placement is exact in any precision.
:func:`keep_input_precision` wraps those layers so that they run in their input's
precision (in the D-UNet's 3D branch the cast of one 16×32×4×192×192 map took 99 ms,
twice the pooling itself; 98 → 81 ms per slice in bfloat16, 184 → 168 in float32).

A 3D convolution of a single input channel (the first layer of D-UNet's 3D branch)
gets a poor oneDNN kernel and, since a one-channel input has no channels-last form,
a contiguous output that the next layer must copy to channels-last: 118 ms and a
115 ms copy for 16 stacks of 4×192×192 in bfloat16. :class:`DepthAsChannelsConv3d`
computes it as a 2D convolution over stacks of adjacent depth planes, whose
channels-last output already is the 3D channels-last map (62 ms, no copy; D-UNet
float32 channels-last 168 → 143 ms per slice, bfloat16 unchanged at 81).

A model with its own structure (DeepMedic's pre-activation layers) offers
``inference_copy()``; every other model gets :func:`fold_batch_norms`; both then get
:func:`keep_input_precision` and :func:`depth_as_channels`.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
#: Exact layers that CPU autocast would run in float32 (PyTorch's autocast op lists).
_EXACT = (nn.MaxPool3d, nn.MaxUnpool2d, nn.MaxUnpool3d)


def _autocast_enabled(device_type: str) -> bool:
    if device_type not in ("cpu", "cuda"):  # meta tensors (memory estimates): no autocast
        return False
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4: no device argument
        return (
            torch.is_autocast_cpu_enabled() if device_type == "cpu" else torch.is_autocast_enabled()
        )


class InInputPrecision(nn.Module):
    """Runs an exact layer in its input's precision, even under autocast.

    Args:
        layer: A layer whose result does not depend on the precision it runs in.
    """

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor, *args, **kwargs):
        """``layer(x, ...)``, with autocast off where it is on (the plain call otherwise)."""
        if not _autocast_enabled(x.device.type):
            return self.layer(x, *args, **kwargs)
        with torch.autocast(x.device.type, enabled=False):
            return self.layer(x, *args, **kwargs)


def foldable_pairs(model: nn.Module) -> list[tuple[str, int]]:
    """Where a batch norm directly follows a convolution of the same width in a Sequential.

    Returns:
        ``(name of the Sequential, index of the convolution)`` for every such pair.
    """
    pairs = []
    for name, seq in model.named_modules():
        if not isinstance(seq, nn.Sequential):
            continue
        children = list(seq)
        for i, (conv, norm) in enumerate(zip(children, children[1:])):
            if (
                isinstance(conv, _CONV)
                and isinstance(norm, _NORM)
                and norm.track_running_stats
                and conv.out_channels == norm.num_features
            ):
                pairs.append((name, i))
    return pairs


def fold_batch_norms(model: nn.Module) -> nn.Module:
    """An eval-only copy of ``model`` with foldable batch norms folded (see the module).

    Equal to ``model`` in eval mode up to float rounding. Inside a Sequential nothing
    else sees the convolution's own output, so every pair :func:`foldable_pairs` finds
    can be folded.

    Returns:
        The copy, or ``model`` itself when it has nothing to fold (no copy made).
    """
    pairs = foldable_pairs(model)
    if not pairs:
        return model
    folded = copy.deepcopy(model).eval()
    for name, i in pairs:
        seq = folded.get_submodule(name)
        seq[i] = fuse_conv_bn_eval(seq[i], seq[i + 1])
        seq[i + 1] = nn.Identity()
    return folded


def _replace(model: nn.Module, wanted, make) -> nn.Module:
    """Every submodule for which ``wanted(module)`` holds replaced by ``make(module)``."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if wanted(child):
                setattr(parent, name, make(child))
    return model


def keep_input_precision(model: nn.Module) -> nn.Module:
    """``model`` with every exact layer autocast would run in float32 wrapped, in place.

    Returns:
        ``model``.
    """
    return _replace(model, lambda m: isinstance(m, _EXACT), InInputPrecision)


class DepthAsChannelsConv3d(nn.Module):
    """A one-input-channel ``Conv3d`` (stride 1, no dilation) as a 2D convolution.

    Output depth plane ``d`` is a 2D convolution of input planes ``d − p … d − p + k − 1``
    (zeros outside) taken as ``k`` channels, with the 3D kernel's ``k`` depth slices as
    its channels. The 2D weight follows the layout the predictor chooses; channels-last,
    the output is the 3D channels-last map without a copy.

    Args:
        conv: The convolution it replaces (its weights are copied).
    """

    def __init__(self, conv: nn.Conv3d):
        super().__init__()
        self.depth_kernel = conv.kernel_size[0]
        self.depth_padding = conv.padding[0]
        self.padding = tuple(conv.padding[1:])
        self.weight = nn.Parameter(conv.weight.detach()[:, 0].clone(), requires_grad=False)
        bias = conv.bias.detach().clone() if conv.bias is not None else None
        self.bias = nn.Parameter(bias, requires_grad=False) if bias is not None else None

    @staticmethod
    def replaces(module: nn.Module) -> bool:
        """Whether ``module`` is a convolution this class computes exactly."""
        return (
            type(module) is nn.Conv3d
            and module.in_channels == 1
            and module.groups == 1
            and module.stride == (1, 1, 1)
            and module.dilation == (1, 1, 1)
            and module.padding_mode == "zeros"
            and isinstance(module.padding, tuple)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 1, D, H, W)`` → ``(N, C_out, D', H', W')``, as the 3D convolution."""
        n = x.shape[0]
        p, k = self.depth_padding, self.depth_kernel
        planes = F.pad(x[:, 0], (0, 0, 0, 0, p, p))  # (N, D + 2p, H, W)
        depth = planes.shape[1] - k + 1
        stacks = planes.unfold(1, k, 1).permute(0, 1, 4, 2, 3)  # (N, D', k, H, W)
        stacks = stacks.reshape(n * depth, k, *planes.shape[2:])
        channels_last = self.weight.is_contiguous(memory_format=torch.channels_last) and (
            not self.weight.is_contiguous()
        )
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        y = F.conv2d(stacks.contiguous(memory_format=fmt), self.weight, self.bias, 1, self.padding)
        y = y.view(n, depth, *y.shape[1:]).permute(0, 2, 1, 3, 4)  # no copy when channels-last
        return y if channels_last else y.contiguous()


def depth_as_channels(model: nn.Module) -> nn.Module:
    """``model`` with every one-channel 3D convolution replaced, in place (see above).

    Returns:
        ``model``.
    """
    return _replace(model, DepthAsChannelsConv3d.replaces, DepthAsChannelsConv3d)


def _rewritable(module: nn.Module) -> bool:
    return isinstance(module, _EXACT) or DepthAsChannelsConv3d.replaces(module)


def inference_network(model: nn.Module) -> nn.Module:
    """What the predictor (and the ONNX export) runs for ``model``: its faster eval form.

    Returns:
        ``model.inference_copy()`` where the model defines it, else
        :func:`fold_batch_norms`; then exact layers keep their input's precision and
        one-channel 3D convolutions run as 2D ones. The model itself (untouched) when
        there is nothing to change.
    """
    copy_fn = getattr(model, "inference_copy", None)
    net = copy_fn() if callable(copy_fn) else fold_batch_norms(model)
    if not any(_rewritable(m) for m in net.modules()):
        return net
    net = copy.deepcopy(net).eval() if net is model else net
    return depth_as_channels(keep_input_precision(net))
