"""MUSCLE Net's training candidates: small components of a stored map, labelled by overlap."""

from __future__ import annotations

import numpy as np
import pytest

from lesionseg.inference.multiscale import multiscale_patches_3d
from lesionseg.models.muscle import MuscleNet
from lesionseg.sampling import SAMPLERS, ArraySubject

GEOMETRY = MuscleNet(1, 2, widths=(4, 4), hidden=(8, 8)).geometry


def _subject():
    rng = np.random.default_rng(0)
    image = rng.normal(0, 1, (1, 30, 30, 3)).astype(np.float32)
    fg = np.zeros((30, 30, 3), np.float32)
    fg[2:5, 2:5, 0] = 0.9  # 9 pixels, overlaps the lesion: a lesion
    fg[20:22, 20:23, 0] = 0.8  # 6 pixels, no lesion: a false positive
    fg[10:20, 5:15, 1] = 0.9  # 100 pixels: too large, not a candidate
    fg[25:27, 3:5, 2] = 0.4  # under the threshold: not a candidate
    label = np.zeros((30, 30, 3), np.uint8)
    label[4:6, 4:6, 0] = 1
    maps = np.stack([1 - fg, fg])
    return ArraySubject("s", image, label, np.ones_like(label), outputs={"edd-maps": maps})


def test_candidates_are_the_small_components_labelled_by_overlap():
    sampler = SAMPLERS.build(
        "components", subjects=[_subject()], geometry=GEOMETRY, source="edd-maps", order="enumerate"
    )
    assert sampler.items() == 2 and sampler.counts() == {"lesions": 1, "false_positives": 1}
    subject = sampler.subjects[0]
    fg = subject.outputs["edd-maps"][1]
    seen = {}
    for index in range(2):
        example = sampler.example_at(index, np.random.default_rng(0))
        assert example["image"].shape == (4, 16, 16) and example["target"].shape == ()
        seen[int(example["target"])] = example["image"]
    # the lesion's centroid is (3, 3, 0), the false positive's (20.5 → 20, 21, 0)
    for label, centre in ((1, [3, 3, 0]), (0, [20, 21, 0])):
        expected = multiscale_patches_3d(subject.image, fg, np.array([centre]), slice_axis=2)[0]
        np.testing.assert_allclose(seen[label], expected, atol=1e-6)


def test_no_candidate_and_bad_options_fail_clearly():
    subject = _subject()
    with pytest.raises(ValueError, match="no component"):
        SAMPLERS.build(
            "components", subjects=[subject], geometry=GEOMETRY, source="edd-maps", max_size=5
        )
    with pytest.raises(ValueError, match="multi-scale"):
        from lesionseg.models import ModelGeometry

        SAMPLERS.build(
            "components", subjects=[subject], geometry=ModelGeometry(2, 1, 2), source="edd-maps"
        )
