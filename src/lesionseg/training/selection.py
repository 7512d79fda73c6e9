"""Which weights a stage keeps, and when it stops early.

``select: best`` keeps the weights of the best validation (Dice, or held-out loss) *within
the stage* (a later stage of the same network starts a new competition, so the model kept
comes from the last stage that trained it); ``select: last`` keeps the weights at the
stage's end. Early stopping counts validations without an improvement of more than
``min_delta`` and stops after ``patience`` of them, with the same tracker the plateau
schedule uses.
"""

from __future__ import annotations

from typing import Any

from lesionseg.training.plateau import PlateauTracker


class StageSelection:
    """Model selection and early stopping of one stage.

    Args:
        select: ``"best"`` or ``"last"``.
        early_stopping: ``{patience: N, min_delta: d}`` or None.
        higher_is_better: True for a Dice, False for a held-out loss.
    """

    def __init__(
        self, select: str, early_stopping: dict[str, Any] | None, higher_is_better: bool = True
    ):
        settings = early_stopping or {}
        self.select = select
        self.patience = settings.get("patience")
        self.tracker = PlateauTracker(float(settings.get("min_delta", 0.0)), higher_is_better)
        self.best_epoch: int | None = None

    def update(self, value: float | None, epoch: int) -> bool:
        """Record a validation (None: none this epoch); True if these weights are to be kept."""
        improved = self.tracker.update(value)
        if improved:
            self.best_epoch = epoch
        return bool(improved) and self.select == "best"

    @property
    def best_dice(self) -> float | None:
        """Best validation Dice of the stage so far."""
        return self.tracker.best

    @property
    def waited(self) -> int:
        """Validations since the last improvement."""
        return self.tracker.waited

    @property
    def should_stop(self) -> bool:
        """Patience exhausted."""
        return bool(self.patience) and self.tracker.waited >= self.patience

    def state_dict(self) -> dict[str, Any]:
        """State for a checkpoint."""
        return {"tracker": self.tracker.state_dict(), "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`."""
        self.tracker.load_state_dict(state["tracker"])
        self.best_epoch = state["best_epoch"]
