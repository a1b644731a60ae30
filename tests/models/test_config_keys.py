"""The real configuration, built on the meta device, has exactly the public checkpoints' keys and shapes."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from craft_vla.models import build_policy, get_config
from craft_vla.models.config import config_from_dict, config_to_dict

KEYS = Path(__file__).resolve().parents[1] / "fixtures" / "vla_adapter_keys"


def read_layout(name: str) -> dict[str, tuple[int, ...]]:
    layout = {}
    for line in (KEYS / name).read_text().splitlines():
        key, shape, _dtype = line.split("\t")
        layout[key] = tuple(int(s) for s in shape.strip("()").split(",") if s.strip())
    return layout


def shapes(module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


@pytest.fixture(scope="module")
def real_pro():
    return build_policy(get_config("vla-adapter-qwen25-0.5b"), device="meta")


def test_vla_and_pro_head_match_release(real_pro):
    assert shapes(real_pro.vla) == read_layout("vla_hf_model.tsv")
    assert shapes(real_pro.action_head) == read_layout("action_head_pro.tsv")
    assert shapes(real_pro.proprio_projector) == read_layout("proprio_projector.tsv")
    assert all(p.is_meta for p in real_pro.parameters())


def test_original_head_matches_release():
    policy = build_policy(get_config("vla-adapter-qwen25-0.5b", use_pro_version=False), device="meta")
    assert shapes(policy.action_head) == read_layout("action_head_v1.tsv")


def test_real_sizes_are_the_spec_numbers():
    config = get_config("vla-adapter-qwen25-0.5b")
    assert (config.vision_dim, config.hidden_size, config.num_patches) == (2176, 896, 512)
    assert (config.chunk_length, config.action_dim, config.proprio_dim, config.num_action_queries) == (
        8,
        7,
        8,
        64,
    )
    assert config.num_head_blocks == 24


def test_config_round_trip_and_overrides():
    config = get_config("tiny", action_dim=4, chunk_length=5)
    config = replace(config, llm=replace(config.llm, vocab_size=300))
    assert config_from_dict(config_to_dict(config)) == config
    policy = build_policy(config, device="meta")
    assert policy.action_head.model.fc2.weight.shape == (4, config.hidden_size)
    assert policy.vla.language_model.model.embed_tokens.weight.shape == (300, config.hidden_size)
    with pytest.raises(ValueError, match="unknown model preset"):
        get_config("nope")
    with pytest.raises(ValueError, match="bridge_layout"):
        get_config("tiny", bridge_layout="middle")


def test_blocks_are_the_repeated_layers(real_pro):
    blocks = real_pro.blocks()
    assert len(blocks) == 24 + 27 + 24 + 24  # DINOv2-L, SigLIP-so400m, Qwen2.5-0.5B, head
    assert blocks[-1] is real_pro.action_head.model.mlp_resnet_blocks[-1]
