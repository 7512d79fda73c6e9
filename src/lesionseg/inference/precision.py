"""Prediction precision: float32, or bfloat16 / float16 autocast where the hardware has it.

``--precision fp32`` (default) runs every layer in float32. ``bf16`` autocasts the
network to bfloat16 on the CPU (float16 on CUDA, as ``--amp`` always did): on CPUs with
AVX-512 BF16 (or AMX) oneDNN runs bfloat16 convolutions about twice as fast as float32
(issue #17's measurements: 460 against 220 GFLOP/s for a 3×3×3 convolution). ``auto``
chooses reduced precision only where the hardware computes it natively (CUDA, or a CPU
with bfloat16 instructions) and float32 elsewhere, where emulated bfloat16 would be slower;
on the CPU it also needs the model's recorded check that bfloat16 gives the same labels
(``lesionseg check-precision``, :mod:`lesionseg.inference.precision_check`).
Probabilities always come back in float32.
"""

from __future__ import annotations

import torch

from lesionseg.errors import LesionsegError

#: The ``--precision`` choices.
PRECISIONS = ("fp32", "bf16", "auto")


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX-512 BF16 or AMX)."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def use_reduced_precision(
    precision: str, device: str | torch.device, verified: bool = True
) -> bool:
    """Whether to autocast (bfloat16 on the CPU, float16 on CUDA) for ``precision``.

    Args:
        precision: ``fp32``, ``bf16`` or ``auto``.
        device: The prediction device.
        verified: The models record that bfloat16 agrees with float32
            (:mod:`lesionseg.inference.precision_check`); ``auto`` on the CPU needs it.

    Raises:
        LesionsegError: An unknown precision.
    """
    if precision not in PRECISIONS:
        raise LesionsegError(
            f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}"
        )
    if precision == "fp32":
        return False
    if precision == "bf16":
        return True
    if torch.device(device).type == "cuda":
        return True
    return cpu_has_bf16() and verified
