"""The learning-rate schedule is VLA-Adapter's warm-up (10 to 100 percent) and MultiStepLR decay."""

import pytest

from craft_vla.training.step import warmup_then_decay


def vla_adapter_warmup(step: int, warmup_steps: float) -> float:
    """vla-scripts/finetune.py: lr_progress = min((gradient_step_idx + 1) / lr_warmup_steps, 1)."""
    if warmup_steps <= 0:
        return 1.0
    return 0.1 + 0.9 * min((step + 1) / warmup_steps, 1.0)


@pytest.mark.parametrize("warmup", [0, 1, 4, 50])
def test_warmup_equals_vla_adapters_and_decay_is_tenfold(warmup):
    factor = warmup_then_decay(warmup, decay_step=60)
    for step in range(80):
        expected = vla_adapter_warmup(step, warmup) * (0.1 if step >= 60 else 1.0)
        assert factor(step) == pytest.approx(expected, rel=1e-15), step
    assert factor(0) == pytest.approx(0.1 + 0.9 / warmup if warmup else 1.0)
