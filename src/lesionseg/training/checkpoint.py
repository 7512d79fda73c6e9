"""Checkpoints for resuming: written atomically after each epoch, read without unpickling code.

A checkpoint holds the networks' weights, the optimiser, schedule and gradient
scaler state, the position in the run (stage, epoch), the history and the
torch random state. Batches need no saved state: each batch's seed follows
from (seed, stage, epoch, rank, batch) (see :mod:`lesionseg.sampling.loader`).
Everything is tensors and plain Python values, so ``torch.load(weights_only=True)``
reads it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lesionseg.data.atomic import atomic_path
from lesionseg.errors import LesionsegError

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT = 2


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (a crash leaves the previous checkpoint)."""
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, **state}, tmp)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (tensors and plain values only).

    Raises:
        LesionsegError: Missing, unreadable, or from an incompatible version.
    """
    if not path.is_file():
        raise LesionsegError("no checkpoint to resume from", path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure means the file is unusable
        raise LesionsegError(
            f"cannot read checkpoint ({type(err).__name__}: {err})", path
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise LesionsegError(f"checkpoint format {found} is not {FORMAT}", path)
    for key, kind in _EXPECTED.items():
        if not isinstance(state.get(key), kind) or isinstance(state.get(key), bool):
            raise LesionsegError(
                f"not a lesionseg checkpoint ({key!r} missing or not a {kind.__name__})", path
            )
    return state


#: The entries every checkpoint has, and their types (checked before any is used).
_EXPECTED: dict[str, type] = {
    "stage": int,
    "epoch": int,
    "networks": dict,
    "history": list,
    "best": dict,
    "slots": dict,
}
