"""The dual variable against a float64 trajectory computed here."""

import math

import pytest

from craft_vla.craft import DualVariable


def test_dual_trajectory_over_50_steps():
    eps, lr, cap = 0.05, 0.7, 2.0
    losses = [0.05 + 0.04 * math.sin(0.3 * t) + (0.1 if 10 <= t < 20 else 0.0) for t in range(50)]
    dual, capped = DualVariable(eps, lr), DualVariable(eps, lr, max_value=cap)
    lam = lam_capped = 0.0
    for loss in losses:
        lam = max(0.0, lam + lr * (loss - eps))
        lam_capped = min(max(0.0, lam_capped + lr * (loss - eps)), cap)
        assert dual.update(loss) == pytest.approx(lam, abs=1e-12)
        assert capped.update(loss) == pytest.approx(lam_capped, abs=1e-12)
    assert dual.num_updates == 50
    assert any(v == 0.0 for v in [DualVariable(eps, lr).update(0.0)])


def test_state_dict_round_trip():
    dual = DualVariable(0.1, 0.5, init=0.3)
    dual.update(0.4)
    other = DualVariable(0.1, 0.5)
    other.load_state_dict(dual.state_dict())
    assert other.value == dual.value and other.num_updates == 1
    assert other.update(0.2) == dual.update(0.2)


def test_bad_values_are_refused():
    with pytest.raises(ValueError):
        DualVariable(-1.0, 0.1)
    with pytest.raises(FloatingPointError):
        DualVariable(0.1, 0.1).update(float("nan"))
