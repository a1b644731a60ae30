"""A tiny random VLA-Adapter checkpoint in VLA-Adapter's layout, with LIBERO-sized statistics."""

import numpy as np
import torch

from craft_vla.data.normalize import DatasetStatistics, compute_norm_stats
from craft_vla.data.tokenizers import WordTokenizer
from craft_vla.models import build_policy, get_config
from craft_vla.models.checkpoint import save_policy_checkpoint

INSTRUCTION = "pick up the black bowl and place it on the plate"


def tiny_statistics(action_dim=7, name="libero_spatial_no_noops"):
    """{name: statistics as JSON}: the gripper (last action dim) unmasked, as for LIBERO."""
    rng = np.random.default_rng(0)
    stats = DatasetStatistics(
        compute_norm_stats(rng.normal(size=(50, action_dim)), np.arange(action_dim) < action_dim - 1),
        compute_norm_stats(rng.normal(size=(50, 8))),
        50,
        2,
    )
    return {name: stats.to_json()}


def save_checkpoint(policy, directory, statistics_name="libero_spatial_no_noops"):
    """Write `policy` in VLA-Adapter's layout with LIBERO-sized statistics and a word tokenizer."""
    save_policy_checkpoint(
        policy,
        directory,
        step="latest",
        dataset_statistics=tiny_statistics(policy.config.action_dim, statistics_name),
    )
    tokenizer = WordTokenizer.from_texts([INSTRUCTION, "what action should the robot take to"])
    tokenizer.save(directory / "word_tokenizer.json")
    return directory


def save_tiny_checkpoint(directory, statistics_name="libero_spatial_no_noops", **overrides):
    """A randomly initialised tiny model (seed 0) saved with full weights."""
    torch.manual_seed(0)
    return save_checkpoint(build_policy(get_config("tiny", **overrides)), directory, statistics_name)
