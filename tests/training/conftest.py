"""A tiny RLDS dataset in the TFDS layout, written once per session, for the trainer tests."""

from pathlib import Path

import pytest
from helpers import synthetic_episodes

from craft_vla.data.rlds_writer import write_rlds_dataset


@pytest.fixture(scope="session")
def rlds_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("rlds")
    write_rlds_dataset(root, "toy_tabletop", list(synthetic_episodes(6)), num_shards=2)
    return root


@pytest.fixture(scope="session")
def rlds_root_large(tmp_path_factory) -> Path:
    """The same task with 30 other episodes (about 200 samples, other statistics than `rlds_root`)."""
    root = tmp_path_factory.mktemp("rlds_large")
    write_rlds_dataset(root, "toy_tabletop", list(synthetic_episodes(30, seed=1)), num_shards=2)
    return root
