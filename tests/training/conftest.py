"""A tiny RLDS dataset in the TFDS layout, written once per session, for the trainer tests."""

from pathlib import Path

import numpy as np
import pytest

from craft_vla.data.rlds_writer import write_rlds_dataset

INSTRUCTIONS = ("put the red cube on the plate", "push the blue ball left", "open the drawer")


def synthetic_episodes(num_episodes: int, seed: int = 0, image_size: int = 32):
    rng = np.random.default_rng(seed)
    for e in range(num_episodes):
        t = int(rng.integers(5, 9))
        base = rng.uniform(0, 255, size=(1, image_size, image_size, 3))
        images = np.clip(base + rng.normal(0, 20, size=(t, image_size, image_size, 3)), 0, 255).astype(
            np.uint8
        )
        state = rng.normal(size=(t, 8)).astype(np.float32)
        action = np.concatenate(
            [np.tanh(state[:, :6] + 0.1 * rng.normal(size=(t, 6))), rng.uniform(-1, 1, (t, 1))], 1
        )
        yield {
            "steps": {
                "observation": {"image": images, "wrist_image": images[:, ::-1].copy(), "state": state},
                "action": action.astype(np.float32),
                "language_instruction": INSTRUCTIONS[e % len(INSTRUCTIONS)],
                "reward": np.zeros(t, np.float32),
                "discount": np.ones(t, np.float32),
                "is_first": np.arange(t) == 0,
                "is_last": np.arange(t) == t - 1,
                "is_terminal": np.arange(t) == t - 1,
            },
            "episode_metadata": {"file_path": f"synthetic/{e}"},
        }


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
