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

A ReLU after a convolution is one more pass over its map: :class:`ConvReLU` has oneDNN
apply it as the convolution writes its output (:func:`fuse_conv_relu`).

A model with its own structure (DeepMedic's pre-activation layers) offers
``inference_copy()``; every other model gets :func:`fold_batch_norms`; both then get
:func:`keep_input_precision`, :func:`depth_as_channels` and :func:`fuse_conv_relu`.
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


def _autocast_dtype(x: torch.Tensor) -> torch.dtype | None:
    """The dtype autocast gives ``x``'s convolutions (None where autocast is off)."""
    if not _autocast_enabled(x.device.type):
        return None
    try:
        return torch.get_autocast_dtype(x.device.type)
    except AttributeError:  # torch < 2.4
        cpu = x.device.type == "cpu"
        return torch.get_autocast_cpu_dtype() if cpu else torch.get_autocast_gpu_dtype()


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
        depth, size = planes.shape[1] - k + 1, planes.shape[2:]
        windows = planes.unfold(1, k, 1)  # (N, D', H, W, k), a view
        channels_last = self.weight.is_contiguous(memory_format=torch.channels_last) and (
            not self.weight.is_contiguous()
        )
        # One copy into the stacks, already in the layout and precision the convolution
        # runs in: reshape, layout change and autocast's cast were three (16 × 4 stacks of
        # 3 × 192 × 192: 137 → 21 ms in bfloat16 channels-last).
        dtype = _autocast_dtype(x) or x.dtype
        if channels_last:
            stacks = x.new_empty((n, depth, *size, k), dtype=dtype)
            stacks.copy_(windows)
            stacks = stacks.view(n * depth, *size, k).permute(0, 3, 1, 2)
        else:
            stacks = x.new_empty((n, depth, k, *size), dtype=dtype)
            stacks.copy_(windows.permute(0, 1, 4, 2, 3))
            stacks = stacks.view(n * depth, k, *size)
        y = F.conv2d(stacks, self.weight, self.bias, 1, self.padding)
        y = y.view(n, depth, *y.shape[1:]).permute(0, 2, 1, 3, 4)  # no copy when channels-last
        return y if channels_last else y.contiguous()


def _fused_relu_op():
    """OneDNN's convolution with a ReLU post-op (the op Inductor fuses into), or None."""
    if not torch.backends.mkldnn.is_available():
        return None
    packet = getattr(torch.ops.mkldnn, "_convolution_pointwise", None)
    return getattr(packet, "default", None)


class ConvReLU(nn.Module):
    """``relu(conv(x))`` as one oneDNN call on the CPU, the ReLU applied as outputs are written.

    A separate ReLU is one more pass over each map: for D-UNet's 32 → 32 convolution
    on 16 × 192² slices, 40.1 → 35.9 ms in bfloat16 channels-last (101.6 → 95.5 ms in
    float32), with bit-identical outputs. Elsewhere (CUDA, no oneDNN, ONNX export,
    another dtype) it is the plain convolution and ReLU.

    Args:
        conv: A 2D or 3D convolution with numeric padding and zero padding mode.
    """

    def __init__(self, conv: nn.Conv2d | nn.Conv3d):
        super().__init__()
        self.conv = conv

    @staticmethod
    def fuses(module: nn.Module) -> bool:
        """Whether ``module`` is a convolution the fused call computes."""
        return (
            type(module) in (nn.Conv2d, nn.Conv3d)
            and module.padding_mode == "zeros"
            and isinstance(module.padding, tuple)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``relu(conv(x))``."""
        op = _fused_relu_op()
        dtype = _autocast_dtype(x) or x.dtype
        if (
            op is None
            or x.device.type != "cpu"
            or dtype not in (torch.float32, torch.bfloat16)
            or torch.onnx.is_in_onnx_export()
            or torch.jit.is_tracing()
        ):
            return F.relu(self.conv(x))
        conv = self.conv
        # The op is not on autocast's lists: cast as autocast would for a convolution.
        bias = None if conv.bias is None else conv.bias.to(dtype)
        args = (list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups)
        return op(x.to(dtype), conv.weight.to(dtype), bias, *args, "relu", [], "")


def fuse_conv_relu(model: nn.Module) -> nn.Module:
    """Fuse every convolution → ReLU pair of a Sequential, in place.

    Identities between the two (folded batch norms) are skipped; the convolution becomes
    a :class:`ConvReLU` and the ReLU an Identity.

    Returns:
        ``model``.
    """
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        children = list(seq)
        for i, conv in enumerate(children):
            if not ConvReLU.fuses(conv):
                continue
            j = i + 1
            while j < len(children) and type(children[j]) is nn.Identity:
                j += 1
            if j < len(children) and type(children[j]) is nn.ReLU:
                seq[i], seq[j] = ConvReLU(conv), nn.Identity()
    return model


def depth_as_channels(model: nn.Module) -> nn.Module:
    """``model`` with every one-channel 3D convolution replaced, in place (see above).

    Returns:
        ``model``.
    """
    return _replace(model, DepthAsChannelsConv3d.replaces, DepthAsChannelsConv3d)


def _rewritable(module: nn.Module) -> bool:
    if isinstance(module, nn.Sequential):
        children = [c for c in module if type(c) is not nn.Identity]
        pairs = zip(children, children[1:])
        if any(ConvReLU.fuses(a) and type(b) is nn.ReLU for a, b in pairs):
            return True
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
    return fuse_conv_relu(depth_as_channels(keep_input_precision(net)))
