"""The cascade's fixed training set: held-out voxels, one pass per epoch, balanced negatives."""

from __future__ import annotations

import numpy as np
import pytest

from lesionseg.models import ModelGeometry
from lesionseg.sampling import SAMPLERS, ArraySubject
from lesionseg.sampling.loader import BatchLoader

PATCH = ModelGeometry(3, 2, 2, patch_size=(3, 3, 3))


def _subjects(n=3, size=10):
    """Voxel value = a unique id (channel 0), FLAIR-like bright band (channel 1)."""
    subjects = []
    rng = np.random.default_rng(0)
    for s in range(n):
        ids = np.arange(size**3, dtype=np.float32).reshape((size,) * 3) + 1000 * s
        flair = rng.normal(0, 1, (size,) * 3).astype(np.float32)
        flair[:, :, : size // 2] += 2.0  # candidates, mostly in one half
        label = np.zeros((size,) * 3, np.uint8)
        label[2:5, 2:5, 1:4] = 1
        image = np.stack([ids, flair])
        subjects.append(
            ArraySubject(f"s{s}", image, label, np.ones_like(label), channel_names=["ID", "FLAIR"])
        )
    return subjects


def _sampler(**options):
    spec = dict(
        output_size=1,
        positives="lesion",
        negatives="FLAIR > 1.5 and not lesion",
        holdout=0.25,
        order="enumerate",
        seed=5,
    )
    spec.update(options)
    return SAMPLERS.build("candidates", subjects=_subjects(), geometry=PATCH, **spec)


def _centre_ids(batch):
    return [int(v) for v in batch["image"][:, 0, 1, 1, 1]]


def _voxel(subjects, vid):
    s, flat = divmod(vid, 1000)
    return subjects[s], np.unravel_index(flat, subjects[s].label.shape)


def test_held_out_voxels_are_never_trained_on_and_the_epoch_is_balanced():
    sampler = _sampler()
    counts = sampler.counts()
    assert counts["held_out_positives"] > 0 and counts["held_out_negatives"] > 0
    total_positives = counts["positives"] + counts["held_out_positives"]
    assert total_positives == 3 * 27
    share = counts["held_out_positives"] / total_positives
    assert 0.1 < share < 0.4  # about a quarter
    loader = BatchLoader(sampler, batch_size=16, batches_per_epoch=1, seed=1)
    epoch = [v for batch in loader.epoch(0, 0) for v in _centre_ids(batch)]
    held = [v for batch in sampler.held_out_batches(16) for v in _centre_ids(batch)]
    assert not set(epoch) & set(held)
    assert len(epoch) == len(set(epoch)) == sampler.items()  # every item once
    subjects = sampler.subjects
    labels = [int(_voxel(subjects, v)[0].label[_voxel(subjects, v)[1]]) for v in epoch]
    assert sum(labels) == counts["positives"]  # every training positive
    assert len(labels) - sum(labels) == counts["positives"]  # and as many negatives
    for v in epoch + held:
        subject, pos = _voxel(subjects, v)
        if not subject.label[pos]:
            assert subject.image[1][pos] > 1.5  # negatives follow the rule
    held_labels = [int(_voxel(subjects, v)[0].label[_voxel(subjects, v)[1]]) for v in held]
    assert sum(held_labels) == counts["held_out_positives"] == len(held) - sum(held_labels)


def test_the_fixed_set_follows_the_seed_and_epochs_reshuffle():
    a, b, c = _sampler(), _sampler(), _sampler(seed=6)
    loader_a = BatchLoader(a, batch_size=8, batches_per_epoch=1, seed=1)
    loader_b = BatchLoader(b, batch_size=8, batches_per_epoch=1, seed=1)
    first = [v for batch in loader_a.epoch(0, 0) for v in _centre_ids(batch)]
    assert first == [v for batch in loader_b.epoch(0, 0) for v in _centre_ids(batch)]
    second = [v for batch in loader_a.epoch(0, 1) for v in _centre_ids(batch)]
    assert sorted(first) == sorted(second) and first != second
    held_c = {v for batch in c.held_out_batches(64) for v in _centre_ids(batch)}
    held_a = {v for batch in a.held_out_batches(64) for v in _centre_ids(batch)}
    assert held_a != held_c


def test_held_out_limit_and_no_holdout():
    sampler = _sampler()
    assert sum(len(b["target"]) for b in sampler.held_out_batches(4, limit=10)) == 10
    assert _sampler(holdout=0.0).held_out_batches(4) is None
    with pytest.raises(ValueError, match="holdout"):
        _sampler(holdout=1.0)


def test_drawing_mode_also_keeps_the_held_out_voxels_aside():
    sampler = _sampler(order="draw")
    held = {v for batch in sampler.held_out_batches(64) for v in _centre_ids(batch)}
    rng = np.random.default_rng(0)
    drawn = {v for _ in range(20) for v in _centre_ids(sampler.batch(16, rng))}
    assert drawn and not drawn & held
