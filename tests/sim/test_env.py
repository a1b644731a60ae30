"""The closed-loop environment: reset, step, success, the step limit."""

from __future__ import annotations

import numpy as np
import pytest

from craft_vla.sim.env import TabletopEnv


def test_env_reset_step_success_cycle():
    env = TabletopEnv(image_size=32)
    obs = env.reset("pick_up", 4)
    assert obs["image"].shape == (32, 32, 3) and obs["wrist_image"].shape == (32, 32, 3)
    assert obs["state"].shape == (4,) and obs["state"].dtype == np.float32
    assert isinstance(env.instruction, str) and not env.success()
    for _ in range(60):
        obs, reward, done, info = env.step(env.expert_action())
        if done:
            break
    assert info["success"] and reward == 1.0 and env.success() and obs["state"][3] == 1.0
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(2))


def test_env_needs_a_reset_and_a_known_task():
    env = TabletopEnv(render=False)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(3))
    with pytest.raises(ValueError, match="unknown task"):
        env.reset("juggle", 0)


def test_env_ends_after_max_steps():
    env = TabletopEnv(render=False, max_steps=5)
    env.reset("stack", 0)
    dones = [env.step(np.zeros(3))[2] for _ in range(5)]
    assert dones == [False] * 4 + [True] and not env.success()
