"""The real-size model (Qwen2.5-0.5B, DINOv2-L + SigLIP-so400m, 2 images at 224 px) on CPU: one forward."""

from __future__ import annotations

import time

import pytest
import torch

from craft_vla.craft import AnchorSpec
from craft_vla.models import build_policy, get_config

from .conftest import make_batch


@pytest.mark.slow
def test_real_size_forward_on_cpu():
    config = get_config("vla-adapter-qwen25-0.5b")
    torch.manual_seed(0)
    start = time.perf_counter()
    policy = build_policy(config).eval()
    built = time.perf_counter()
    batch = make_batch(config, prompt_lengths=(40,))
    with torch.no_grad():
        out = policy(batch)
        forward = time.perf_counter()
        features = policy(batch, anchor_spec=AnchorSpec(12, 24))
    anchored = time.perf_counter()
    print(
        f"\nbuild {built - start:.1f} s, forward {forward - built:.1f} s, "
        f"anchor pass {anchored - forward:.1f} s"
    )
    assert out.actions.shape == (1, 8, 7) and torch.isfinite(out.actions).all()
    assert out.raw_latents[24].shape == (1, 512, 896) and out.aq_latents[24].shape == (1, 64, 896)
    assert features.shape == (1, 2 * 896) and torch.isfinite(features).all()
