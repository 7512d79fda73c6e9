"""Learning-rate schedules looked up by name in :data:`SCHEDULES`.

A schedule is asked once per epoch, after the epoch and its validation, for the
learning rate of the next epoch. Its state is a small dict saved in checkpoints.

* ``constant``: the optimiser's learning rate throughout.
* ``fixed``: multiply by ``factor`` (0.5) at the given epochs (DeepMedic's
  "halve at predefined epochs").
* ``plateau``: multiply by ``factor`` when the monitored value (validation Dice,
  or the training loss with ``monitor: loss``) has not improved by
  ``min_delta`` for ``patience`` epochs (DeepMedic's "halve on plateau").
* ``poly``: η₀·(1 − epoch/epochs)^power (nnU-Net).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lesionseg.registry import Registry
from lesionseg.training.plateau import PlateauTracker

SCHEDULES: Registry = Registry("schedule")


class Schedule:
    """Base schedule: constant learning rate.

    Args:
        base_lr: Initial learning rate (the optimiser's).
        epochs: Epochs of the stage.
    """

    def __init__(self, base_lr: float, epochs: int):
        self.base_lr = float(base_lr)
        self.epochs = int(epochs)
        self.lr = float(base_lr)

    def step(self, epoch: int, metrics: dict[str, float]) -> float:
        """Learning rate for the epoch after ``epoch`` (0-based), given this epoch's metrics."""
        return self.lr

    def state_dict(self) -> dict[str, Any]:
        """State for a checkpoint."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`."""
        for key, value in state.items():
            setattr(self, key, value)


class FixedSchedule(Schedule):
    """Multiply the learning rate by ``factor`` after each epoch listed in ``epochs_at``.

    Args:
        base_lr: Initial learning rate.
        epochs: Epochs of the stage.
        at: 1-based epochs after which the learning rate drops.
        factor: Multiplier (0.5 halves).
    """

    def __init__(self, base_lr: float, epochs: int, at: Sequence[int] = (), factor: float = 0.5):
        super().__init__(base_lr, epochs)
        self.at = [int(e) for e in at]
        self.factor = float(factor)

    def step(self, epoch: int, metrics: dict[str, float]) -> float:
        """Drop after the listed epochs."""
        if epoch + 1 in self.at:
            self.lr *= self.factor
        return self.lr


class PlateauSchedule(Schedule):
    """Multiply the learning rate by ``factor`` when the monitored value stops improving.

    Args:
        base_lr: Initial learning rate.
        epochs: Epochs of the stage.
        monitor: ``"dice"`` (validation Dice, higher is better; epochs without validation
            do not count) or ``"loss"`` (the training loss).
        patience: Epochs without improvement before a drop.
        factor: Multiplier (0.5 halves).
        min_delta: Smallest change that counts as improvement.
        min_lr: Floor of the learning rate.
    """

    def __init__(
        self,
        base_lr: float,
        epochs: int,
        monitor: str = "dice",
        patience: int = 3,
        factor: float = 0.5,
        min_delta: float = 1e-4,
        min_lr: float = 0.0,
    ):
        super().__init__(base_lr, epochs)
        if monitor not in ("dice", "loss"):
            raise ValueError(f"monitor must be 'dice' or 'loss', got {monitor!r}")
        self.monitor = monitor
        self.patience = int(patience)
        self.factor = float(factor)
        self.min_lr = float(min_lr)
        self._tracker = PlateauTracker(float(min_delta), higher_is_better=monitor == "dice")

    def step(self, epoch: int, metrics: dict[str, float]) -> float:
        """Count epochs without improvement of the monitored value; drop after ``patience``."""
        value = metrics.get("val_dice") if self.monitor == "dice" else metrics.get("loss")
        if self._tracker.update(value) is False and self._tracker.waited >= self.patience:
            self.lr = max(self.lr * self.factor, self.min_lr)
            self._tracker.waited = 0
        return self.lr

    def state_dict(self) -> dict[str, Any]:
        """State for a checkpoint (the tracker's too)."""
        return {**super().state_dict(), "tracker": self._tracker.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`."""
        state = dict(state)
        self._tracker.load_state_dict(state.pop("tracker"))
        super().load_state_dict(state)


class PolySchedule(Schedule):
    """Polynomial decay η₀·(1 − (epoch+1)/epochs)^power.

    Args:
        base_lr: Initial learning rate.
        epochs: Epochs of the stage.
        power: Exponent (nnU-Net: 0.9).
    """

    def __init__(self, base_lr: float, epochs: int, power: float = 0.9):
        super().__init__(base_lr, epochs)
        self.power = float(power)

    def step(self, epoch: int, metrics: dict[str, float]) -> float:
        """Decay towards 0 at the end of the stage."""
        self.lr = self.base_lr * max(0.0, 1.0 - (epoch + 1) / max(self.epochs, 1)) ** self.power
        return self.lr


SCHEDULES.register("constant")(Schedule)
SCHEDULES.register("fixed")(FixedSchedule)
SCHEDULES.register("plateau")(PlateauSchedule)
SCHEDULES.register("poly")(PolySchedule)


def build_schedule(spec: dict[str, Any], base_lr: float, epochs: int) -> Schedule:
    """Build the schedule a recipe names: ``{name: plateau, patience: 3}``."""
    options = {k: v for k, v in spec.items() if k != "name"}
    return SCHEDULES.build(spec["name"], base_lr=base_lr, epochs=epochs, **options)
