"""Small perception sets and the demo model for the demo tests."""

from __future__ import annotations

import pytest
import torch

from craft_vla.demo.model import demo_config, demo_tokenizer
from craft_vla.models import build_policy
from craft_vla.sim import make_perception_set


@pytest.fixture(scope="session")
def tokenizer():
    return demo_tokenizer()


@pytest.fixture(scope="session")
def config(tokenizer):
    return demo_config(tokenizer)


@pytest.fixture(scope="session")
def scenes():
    """12 scenes with 6 questions each."""
    return make_perception_set(12, 6, seed=3, name="test")


@pytest.fixture
def policy(config):
    torch.manual_seed(0)
    return build_policy(config)
