import pytest

from lesionseg.training.schedules import SCHEDULES, build_schedule


def test_fixed_halves_after_listed_epochs():
    s = build_schedule({"name": "fixed", "at": [2, 4]}, base_lr=1.0, epochs=6)
    lrs = [s.step(e, {}) for e in range(6)]
    assert lrs == [1.0, 0.5, 0.5, 0.25, 0.25, 0.25]


def test_plateau_halves_after_patience_without_improvement_and_skips_missing_values():
    s = build_schedule({"name": "plateau", "patience": 2}, base_lr=1.0, epochs=20)
    dice = [0.1, 0.2, None, 0.2, None, 0.19, 0.3, 0.3, 0.3]
    lrs = [s.step(e, {"val_dice": d, "loss": 1.0}) for e, d in enumerate(dice)]
    # epochs without improvement: 0.2 (idx 3), 0.19 (idx 5) -> drop at idx 5
    assert lrs == [1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25]


def test_plateau_on_loss_and_state_round_trip():
    s = build_schedule({"name": "plateau", "monitor": "loss", "patience": 1}, 1.0, 10)
    s.step(0, {"loss": 1.0})
    assert s.step(1, {"loss": 1.5}) == 0.5
    t = build_schedule({"name": "plateau", "monitor": "loss", "patience": 1}, 1.0, 10)
    t.load_state_dict(s.state_dict())
    assert t.step(2, {"loss": 2.0}) == s.step(2, {"loss": 2.0}) == 0.25


def test_poly_and_constant():
    s = build_schedule({"name": "poly", "power": 1.0}, 1.0, 4)
    assert [s.step(e, {}) for e in range(4)] == pytest.approx([0.75, 0.5, 0.25, 0.0])
    c = build_schedule({"name": "constant"}, 0.3, 4)
    assert c.step(0, {"loss": 9}) == 0.3
    assert set(SCHEDULES.names()) >= {"constant", "fixed", "plateau", "poly"}
