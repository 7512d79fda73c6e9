"""Random search of the CRF parameters."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from lesionseg.errors import LesionsegError
from lesionseg.postprocess.crf import CRFParams
from lesionseg.postprocess.crf.tune import TuningCase, dice_score, random_search, save_result


def _case(seed):
    """A lesion with a noisy probability map that has false-positive specks."""
    rng = np.random.default_rng(seed)
    shape = (20, 20, 20)
    lesion = np.zeros(shape, bool)
    lesion[6:14, 5:13, 7:15] = True
    image = (lesion * 1.5 + rng.normal(0, 0.4, shape))[None].astype(np.float32)
    image = (image - image.mean()) / image.std()
    logit = 4 * (lesion - 0.5) + 2.5 * ndi.gaussian_filter(rng.normal(size=shape), 0.7) / 0.3
    fg = (1 / (1 + np.exp(-logit))).astype(np.float32)
    return TuningCase(
        f"c{seed}", np.stack([1 - fg, fg]), image, (1.0, 1.0, 1.0), lesion.astype(np.uint8)
    )


def test_dice_score():
    a = np.array([0, 1, 1, 2, 0])
    b = np.array([0, 1, 0, 2, 2])
    assert dice_score(a, b, 3) == pytest.approx((2 / 3 + 2 / 3) / 2)
    assert dice_score(np.zeros(4), np.zeros(4), 2) == 1.0


def test_search_is_seeded_and_never_worse_than_defaults_or_no_crf(tmp_path):
    cases = [_case(0), _case(1)]
    result = random_search(cases, trials=5, seed=3)
    again = random_search(cases, trials=5, seed=3)
    assert [t.params for t in result.trials] == [t.params for t in again.trials]
    assert [t.params for t in random_search(cases, trials=5, seed=4).trials][2:] != [
        t.params for t in result.trials
    ][2:]
    assert result.trials[0].params == CRFParams()
    assert (
        result.trials[1].params.appearance_weight == 0 == result.trials[1].params.smoothness_weight
    )
    best = result.best.mean_dice
    assert best >= result.trials[0].mean_dice and best >= np.mean(result.no_crf_dice)
    # trial 1 (CRF off) reproduces the Dice of the unrefined probabilities
    assert result.trials[1].dice == pytest.approx(result.no_crf_dice)
    table = result.table()
    assert "mean Dice" in table and f"{best:.4f}" in table and len(table.splitlines()) == 5 + 3
    path = tmp_path / "best.json"
    save_result(result, path)
    assert CRFParams.load(path) == result.best.params


def test_search_rejects_bad_settings():
    with pytest.raises(LesionsegError):
        random_search([], trials=3)
    with pytest.raises(LesionsegError, match="trials"):
        random_search([_case(0)], trials=1)
