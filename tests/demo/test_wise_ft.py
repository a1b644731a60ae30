"""WiSE-FT: the interpolation is exact at its ends, and α is chosen on the action error alone."""

import pytest
import torch

from craft_vla.demo.wise_ft import choose_alpha, interpolate
from craft_vla.models.policy import unwrap_vlm


def test_interpolation_is_the_snapshot_at_zero_the_run_at_one_and_linear_between(policy):
    vlm = unwrap_vlm(policy.vla)
    base = {k: v.clone() for k, v in vlm.state_dict().items()}
    tuned = {k: v + 1.0 if v.is_floating_point() else v for k, v in base.items()}
    for alpha in (0.0, 0.25, 1.0):
        interpolate(policy, base, tuned, alpha)
        for name, value in vlm.state_dict().items():
            if value.is_floating_point():
                torch.testing.assert_close(value, base[name] + alpha, rtol=0, atol=1e-6)


def test_the_smallest_alpha_within_tolerance_of_sft_is_chosen_whatever_the_answers():
    sweep = [
        {"alpha": 0.2, "action_l1": 0.50, "qa_not_needed": 0.85},
        {"alpha": 0.6, "action_l1": 0.104, "qa_not_needed": 0.30},
        {"alpha": 0.8, "action_l1": 0.102, "qa_not_needed": 0.10},
        {"alpha": 1.0, "action_l1": 0.100, "qa_not_needed": 0.00},
    ]
    assert choose_alpha(sweep)["alpha"] == 0.6
    assert choose_alpha(sweep, tolerance=0.03)["alpha"] == 0.8
    assert choose_alpha(sweep[-1:])["alpha"] == 1.0
    with pytest.raises(ValueError, match="needs α = 1"):
        choose_alpha(sweep[:1])
