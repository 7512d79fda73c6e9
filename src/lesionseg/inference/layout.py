"""The memory layout a network predicts in: channels-last or contiguous, measured, not assumed.

oneDNN runs most 3D convolutions about twice as fast channels-last (``NDHWC``), but not
every network gains (small channel counts, 2D slices at some sizes, patch classifiers),
so ``layout="auto"`` times one forward pass in both layouts and keeps the faster for the
rest of the volume. The passes run on a probe, a quarter or so of the first batch
(:func:`layout_probe`: fewer examples, or a smaller tile the geometry accepts), so that
measuring costs about half a pass rather than a pass in the slower layout (DeepMedic's
whole brain: 17.7 s with ``auto`` measuring on the first tile, 14.6 s channels-last
named). The choice is remembered per network architecture (its modules and parameter
shapes, not the instance), input shape and precision for the process, so a cohort pays
for the measurement once and the same model loaded twice in one process predicts in the
same layout (bit-identical outputs). The outputs of the two layouts agree to float
rounding (tested). On CUDA ``auto`` keeps the contiguous layout
(cuDNN picks its own kernels; nothing measured there yet).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import nn

#: The ``layout`` choices of :func:`~lesionseg.inference.predictor.predict_volume`.
LAYOUTS = ("auto", "channels_last", "contiguous")

_MEASURED: dict[tuple, bool] = {}


def channels_last_format(ndim: int) -> torch.memory_format | None:
    """The channels-last format of a batch of ``ndim`` dimensions (None: there is none)."""
    return {4: torch.channels_last, 5: torch.channels_last_3d}.get(ndim)


def set_layout(net: nn.Module, channels_last: bool) -> None:
    """Every 4D and 5D parameter channels-last (or all contiguous), in place.

    ``Module.to(memory_format=...)`` takes one format for all, which fails on a network
    that has both 2D and 3D convolutions (D-UNet); each tensor gets its own here. The
    copies are made outside inference mode (the predictor runs in it): a network trained
    on after validation must not hold inference tensors.
    """
    with torch.inference_mode(False), torch.no_grad():
        for tensor in [*net.parameters(), *net.buffers()]:
            fmt = channels_last_format(tensor.dim()) if channels_last else None
            tensor.data = tensor.data.contiguous(memory_format=fmt or torch.contiguous_format)


def is_channels_last(net: nn.Module) -> bool:
    """Whether the network's convolution weights are stored channels-last."""
    for tensor in net.parameters():
        fmt = channels_last_format(tensor.dim())
        if fmt is not None and tensor.shape[1] > 1:  # one input channel: both layouts alike
            return tensor.is_contiguous(memory_format=fmt) and not tensor.is_contiguous()
    return False


def architecture(net: nn.Module) -> tuple:
    """What the layout choice depends on in a network: its module types and tensor shapes."""
    modules = tuple(type(m).__name__ for m in net.modules())
    shapes = tuple(tuple(t.shape) for t in [*net.parameters(), *net.buffers()])
    return modules, shapes


def measured_choice(owner: nn.Module, key: tuple) -> bool | None:
    """The layout measured before for the architecture of ``owner`` and ``key`` (True: NDHWC)."""
    return _MEASURED.get((architecture(owner), key))


def forget_measurements() -> None:
    """Forget every measured choice (the next ``auto`` run measures again)."""
    _MEASURED.clear()


class LayoutChooser:
    """Puts a network and its batches in the chosen layout, choosing on the first batch.

    Args:
        owner: The network the choice is remembered for (the caller's model, which may
            differ from ``net``, an eval-only copy of it).
        net: The network that runs.
        layout: ``auto``, ``channels_last`` or ``contiguous``.
        device: Where it runs.
        amp: Mixed precision (part of the remembered key).
        clock: Timer (tests replace it).
        probe: What the layouts are timed on, from the first batch (default: the batch).
    """

    def __init__(
        self,
        owner: nn.Module,
        net: nn.Module,
        layout: str,
        device: torch.device,
        amp: bool,
        clock: Callable[[], float] = time.perf_counter,
        probe: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
        self.owner, self.net, self.layout, self.device, self.amp = owner, net, layout, device, amp
        self.clock, self.probe = clock, probe
        self._was_channels_last = is_channels_last(net)  # restored afterwards (training)
        self.channels_last: bool | None = None if layout == "auto" else layout == "channels_last"
        if layout == "auto" and device.type != "cpu":
            self.channels_last = False

    def _set(self, channels_last: bool, x: torch.Tensor) -> torch.Tensor:
        set_layout(self.net, channels_last)
        fmt = channels_last_format(x.dim()) if channels_last else torch.contiguous_format
        return x.contiguous(memory_format=fmt)

    def run(self, forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor):
        """``forward(x)`` in the chosen layout (measuring both on the first call of ``auto``)."""
        if channels_last_format(x.dim()) is None:
            return forward(x)
        if self.channels_last is None:
            key = (architecture(self.owner), (tuple(x.shape), self.amp, self.device.type))
            self.channels_last = _MEASURED.get(key)
            if self.channels_last is None:
                return self._measure(forward, x, key)
        return forward(self._set(self.channels_last, x))

    def _measure(self, forward, x: torch.Tensor, key: tuple):
        # Every timed pass starts from the same random state (MC dropout draws from it),
        # and the run goes on from the state the chosen pass on the batch leaves: measuring
        # or not (a remembered choice), the run gives the same result.
        probe = x if self.probe is None else self.probe(x)
        seconds, outputs, after = {}, {}, {}
        state = torch.get_rng_state()
        for channels_last in (False, True):
            y = self._set(channels_last, probe)
            # One cold pass each, no warm-up: oneDNN's primitive creation on the first call
            # added 5–20 % to a DeepMedic tile or a D-UNet batch, while the layouts differ
            # by 1.7–2.1× there (where they differ less, the choice matters less).
            start = self.clock()
            outputs[channels_last] = forward(y)
            seconds[channels_last] = self.clock() - start
            after[channels_last] = torch.get_rng_state()
            torch.set_rng_state(state)
        self.channels_last = seconds[True] < seconds[False]
        _MEASURED[key] = self.channels_last
        if probe is x:  # the chosen pass was on the batch itself: its result is the result
            torch.set_rng_state(after[self.channels_last])
            self._set(self.channels_last, x)
            return outputs[self.channels_last]
        return forward(self._set(self.channels_last, x))

    def restore(self) -> None:
        """Put the network's parameters back in the layout they had before."""
        set_layout(self.net, self._was_channels_last)


def layout_probe(geometry) -> Callable[[torch.Tensor], torch.Tensor]:
    """What :class:`LayoutChooser` times for a network of ``geometry``: about a quarter of a batch.

    A batch of four or more examples gives its first quarter; a single tile (a 3D network
    predicting one tile a pass) gives a smaller tile the network accepts: every axis of
    the output cut to about 0.63 (a quarter of the voxels), kept a multiple of the
    geometry's size multiple. Batches too small to cut are timed whole.
    """

    def probe(x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] >= 4:
            return x[: x.shape[0] // 4]
        if geometry.patch_size is not None or x.dim() != 2 + geometry.spatial_dims:
            return x
        out = geometry.output_size(tuple(x.shape[2:]))
        wanted = []
        for o, m in zip(out, geometry.size_multiple):
            wanted.append(max(m, int(o * 0.63) // m * m))
        size = geometry.input_size(tuple(wanted))
        if any(s > have for s, have in zip(size, x.shape[2:])) or tuple(size) == tuple(x.shape[2:]):
            return x
        return x[(slice(None), slice(None), *(slice(0, s) for s in size))]

    return probe
