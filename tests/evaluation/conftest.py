"""Fixtures of the evaluation tests."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def deepmind_numpy2(monkeypatch):
    """DeepMind's surface_distance uses ``np.Inf``, removed in numpy 2: alias it for the test."""
    monkeypatch.setattr(np, "Inf", np.inf, raising=False)
    import surface_distance

    return surface_distance
