"""Counting measurements without improvement: shared by plateau schedules and early stopping."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class PlateauTracker:
    """Tracks the best value of a measurement and how many measurements did not beat it.

    Attributes:
        min_delta: Smallest gain that counts as an improvement.
        higher_is_better: True for Dice, False for a loss.
        best: Best value so far (None before the first measurement).
        waited: Measurements since the last improvement.
    """

    min_delta: float = 0.0
    higher_is_better: bool = True
    best: float | None = None
    waited: int = 0

    def update(self, value: float | None) -> bool | None:
        """Record one measurement.

        Returns:
            True if it improved on the best, False if not, None if nothing was measured
            (``value`` None or NaN; the count is left as it is).
        """
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return None
        score = value if self.higher_is_better else -value
        if self.best is None or score > self.best + self.min_delta:
            self.best = score
            self.waited = 0
            return True
        self.waited += 1
        return False

    def state_dict(self) -> dict[str, Any]:
        """State for a checkpoint."""
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`."""
        for key, value in state.items():
            setattr(self, key, value)
