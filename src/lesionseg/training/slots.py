"""A network's optimisation state: optimiser, learning-rate schedule and gradient scaler.

One slot per network. A stage either starts its network with a fresh slot, or, with
``optimizer: continue`` in the recipe, keeps the slot of the network's previous stage, so
Adam's moments, the schedule's position and the scaler carry over (Brain SegNet's
curriculum changes the loss between stages, not the optimiser).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lesionseg.training.optim import build_optimizer
from lesionseg.training.schedules import Schedule, build_schedule


@dataclass
class NetworkSlot:
    """What optimises one network.

    Attributes:
        optimizer: The optimiser over the network's parameters.
        schedule: Its learning-rate schedule.
        scaler: The AMP gradient scaler (CUDA only), or None.
        epochs_done: Epochs this slot has optimised (the schedule's position).
    """

    optimizer: torch.optim.Optimizer
    schedule: Schedule
    scaler: Any = None
    epochs_done: int = 0

    def set_lr(self) -> None:
        """Give every parameter group the schedule's current learning rate."""
        for group in self.optimizer.param_groups:
            group["lr"] = self.schedule.lr

    def state_dict(self) -> dict[str, Any]:
        """State for a checkpoint."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "scaler": None if self.scaler is None else self.scaler.state_dict(),
            "epochs_done": self.epochs_done,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.epochs_done = int(state["epochs_done"])


def build_slot(
    stage: dict[str, Any], network: nn.Module, use_amp: bool, epochs: int | None = None
) -> NetworkSlot:
    """A fresh slot for ``network`` from a stage's ``optimizer`` and ``schedule`` sections.

    Args:
        stage: The stage that starts the slot.
        network: Its network.
        use_amp: Mixed precision (a gradient scaler).
        epochs: The schedule's length (default the stage's; with ``optimizer: continue`` the
            epochs of every stage that continues it).
    """
    optimizer = build_optimizer(stage["optimizer"], network.parameters())
    base_lr = optimizer.param_groups[0]["lr"]
    schedule = build_schedule(stage["schedule"], base_lr, epochs or stage["epochs"])
    scaler = torch.amp.GradScaler("cuda") if use_amp else None
    return NetworkSlot(optimizer, schedule, scaler)
