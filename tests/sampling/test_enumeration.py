"""Enumerating samplers: every item once per epoch, in an order that follows the seed."""

from __future__ import annotations

import numpy as np
import pytest

from lesionseg.models import ModelGeometry
from lesionseg.sampling import SAMPLERS, ArraySubject
from lesionseg.sampling.loader import BatchLoader


def _subjects(n=2, slices=5):
    subjects = []
    for s in range(n):
        image = np.zeros((1, 8, 8, slices), np.float32)
        for z in range(slices):
            image[0, :, :, z] = 100 * s + z  # the slice says who it is
        label = np.zeros((8, 8, slices), np.uint8)
        label[3:5, 3:5, 1] = 1
        subjects.append(ArraySubject(f"s{s}", image, label, np.ones_like(label)))
    return subjects


def _seen(loader, stage, epoch):
    return [int(b) for batch in loader.epoch(stage, epoch) for b in batch["image"][:, 0, 0, 0]]


def _loader(order="enumerate", rank=0, world=1, seed=3):
    geometry = ModelGeometry(2, 1, 2, size_multiple=(4, 4))
    sampler = SAMPLERS.build("slices", subjects=_subjects(), geometry=geometry, order=order)
    return BatchLoader(
        sampler, batch_size=3, batches_per_epoch=99, seed=seed, rank=rank, world=world
    )


def test_every_slice_once_per_epoch_shuffled_by_the_seed():
    loader = _loader()
    assert loader.batches_per_epoch == 4  # 10 slices in batches of 3
    first, second = _seen(loader, 0, 0), _seen(loader, 0, 1)
    everything = sorted(100 * s + z for s in range(2) for z in range(5))
    assert sorted(first) == everything and sorted(second) == everything
    assert first != second  # each epoch its own order
    assert _seen(_loader(), 0, 0) == first  # the same seed, the same order
    assert _seen(_loader(seed=4), 0, 0) != first


def test_ranks_share_an_epoch_without_overlap():
    a, b = _seen(_loader(rank=0, world=2), 0, 0), _seen(_loader(rank=1, world=2), 0, 0)
    assert len(a) == len(b) == 5 and not set(a) & set(b)


def test_drawing_samplers_cannot_enumerate():
    geometry = ModelGeometry(3, 1, 2, context=(3, 3, 3))
    with pytest.raises(ValueError, match="cannot enumerate"):
        SAMPLERS.build(
            "segments", subjects=_subjects(), geometry=geometry, output_size=2, order="enumerate"
        )
