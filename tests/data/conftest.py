"""Fixtures for the data tests: LIBERO-shaped episodes and small datasets written in the TFDS layout."""

from __future__ import annotations

import numpy as np
import pytest

from craft_vla.data.rlds_writer import write_rlds_dataset


def _make_episode(
    rng: np.random.Generator,
    num_steps: int,
    instruction: str,
    image_size: int = 32,
    state_dim: int = 8,
    action_dim: int = 7,
) -> dict:
    """A LIBERO-shaped episode with smooth images (so JPEG stays close) and random numbers."""
    ramp = np.linspace(0, 200, image_size, dtype=np.float32)
    images = np.empty((num_steps, image_size, image_size, 3), dtype=np.uint8)
    for t in range(num_steps):
        images[t, ..., 0] = ramp[None, :] + 5 * t
        images[t, ..., 1] = ramp[:, None]
        images[t, ..., 2] = 100 + 10 * t
    action = rng.uniform(-1, 1, (num_steps, action_dim)).astype(np.float32)
    action[:, -1] = np.where(rng.random(num_steps) < 0.5, -1.0, 1.0)
    last = np.arange(num_steps) == num_steps - 1
    return {
        "steps": {
            "observation": {
                "image": images,
                "wrist_image": images[:, ::-1].copy(),
                "state": rng.normal(size=(num_steps, state_dim)).astype(np.float32),
                "joint_state": rng.normal(size=(num_steps, 7)).astype(np.float32),
            },
            "action": action,
            "language_instruction": instruction,
            "reward": last.astype(np.float32),
            "discount": np.ones(num_steps, dtype=np.float32),
            "is_first": np.arange(num_steps) == 0,
            "is_last": last,
            "is_terminal": last,
        },
        "episode_metadata": {"file_path": f"/data/demo_{instruction.replace(' ', '_')}_{num_steps}.hdf5"},
    }


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    """Keep index and statistics caches out of the home directory."""
    monkeypatch.setenv("CRAFT_VLA_CACHE", str(tmp_path / "cache"))


@pytest.fixture(name="make_episode")
def make_episode_fixture():
    """make_episode(rng, num_steps, instruction, image_size=32, state_dim=8, action_dim=7) -> episode dict."""
    return _make_episode


@pytest.fixture
def episodes() -> list[dict]:
    rng = np.random.default_rng(0)
    lengths_and_tasks = [
        (5, "Pick up the black bowl"),
        (9, "open the drawer"),
        (3, "Pick up the black bowl"),
        (7, "put the bowl on the plate"),
        (4, "open the drawer"),
    ]
    return [_make_episode(rng, n, task) for n, task in lengths_and_tasks]


@pytest.fixture
def libero_dir(tmp_path, episodes):
    """`<tmp>/rlds/libero_toy_no_noops/1.0.0` with the episodes above in 3 shards."""
    return write_rlds_dataset(tmp_path / "rlds", "libero_toy_no_noops", episodes, num_shards=3)
