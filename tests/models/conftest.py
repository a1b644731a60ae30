"""Tiny VLA-Adapter policies and batches for the model tests."""

from __future__ import annotations

import pytest
import torch

from craft_vla.models import VLAAdapterConfig, build_policy, get_config


def make_batch(
    config: VLAAdapterConfig, prompt_lengths=(9, 5), seed: int = 0, with_actions: bool = True
) -> dict:
    """A right-padded batch as data/ collates it: prompt tokens then the action-query placeholders."""
    g = torch.Generator().manual_seed(seed)
    q = config.num_action_queries
    lengths = [n + q for n in prompt_lengths]
    seq = max(lengths)
    batch_size = len(lengths)
    input_ids = torch.randint(0, config.llm.vocab_size, (batch_size, seq), generator=g)
    attention_mask = torch.arange(seq).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    size = config.image_size
    batch = {
        "pixel_values": torch.randn(batch_size, 6 * config.num_images_in_input, size, size, generator=g),
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "proprio": torch.rand(batch_size, config.proprio_dim, generator=g) * 2 - 1,
        "sample_id": torch.arange(batch_size),
    }
    if with_actions:
        batch["actions"] = torch.rand(batch_size, config.chunk_length, config.action_dim, generator=g) * 2 - 1
    return batch


@pytest.fixture
def tiny_config() -> VLAAdapterConfig:
    return get_config("tiny")


@pytest.fixture
def tiny_policy(tiny_config):
    torch.manual_seed(0)
    return build_policy(tiny_config).eval()


@pytest.fixture
def tiny_batch(tiny_config) -> dict:
    return make_batch(tiny_config)
