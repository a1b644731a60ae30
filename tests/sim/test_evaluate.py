"""Closed-loop evaluation of chunking policies."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from craft_vla.sim.env import TabletopEnv
from craft_vla.sim.evaluate import Evaluator, evaluate_policy, expert_chunk_policy
from craft_vla.sim.tasks import TASK_NAMES


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


def test_expert_chunks_succeed_everywhere():
    evaluator = Evaluator(image_size=32, num_envs=6)
    result = evaluator.run(expert_chunk_policy(evaluator.envs, chunk=8), episodes_per_task=3, progress=False)
    assert result.per_task() == {task: 1.0 for task in TASK_NAMES}
    assert len(result.outcomes) == 3 * len(TASK_NAMES)
    assert [(o.task, o.seed) for o in result.outcomes[:4]] == [
        ("reach", 1_000_000),
        ("reach", 1_000_001),
        ("reach", 1_000_002),
        ("pick_up", 1_000_000),
    ]
    json.dumps(result.to_dict())


@pytest.mark.slow
def test_expert_chunks_succeed_on_50_episodes_per_task_at_64px():
    for split in ("train", "heldout"):
        evaluator = Evaluator(image_size=64, split=split, num_envs=16)
        result = evaluator.run(
            expert_chunk_policy(evaluator.envs, chunk=8), episodes_per_task=50, progress=False
        )
        assert min(result.per_task().values()) >= 0.95


def test_outcomes_do_not_depend_on_the_number_of_envs():
    outcomes = []
    for num_envs in (1, 5):
        evaluator = Evaluator(image_size=32, num_envs=num_envs)
        policy = expert_chunk_policy(evaluator.envs, chunk=3)
        outcomes.append(
            evaluator.run(policy, tasks=("stack", "push_side"), episodes_per_task=3, progress=False).outcomes
        )
    assert outcomes[0] == outcomes[1]


def test_chunks_run_open_loop_and_execute_steps_limits_them():
    calls = []

    def still(batch):
        calls.append(len(batch["state"]))
        assert batch["image"].shape[1:] == (32, 32, 3) and len(batch["instruction"]) == len(batch["state"])
        return torch.zeros(len(batch["state"]), 4, 3)  # a tensor is accepted too

    result = evaluate_policy(
        still, tasks=("reach",), episodes_per_task=2, image_size=32, num_envs=2, max_steps=8, progress=False
    )
    assert len(calls) == 2 and result.success_rate() == 0.0
    assert [o.steps for o in result.outcomes] == [8, 8]
    calls.clear()
    evaluate_policy(
        still,
        tasks=("reach",),
        episodes_per_task=2,
        image_size=32,
        num_envs=2,
        max_steps=8,
        execute_steps=1,
        progress=False,
    )
    assert len(calls) == 8


def test_random_policy_rarely_succeeds():
    rng = np.random.default_rng(0)
    result = evaluate_policy(
        lambda b: rng.uniform(-1, 1, (len(b["state"]), 8, 3)),
        episodes_per_task=4,
        image_size=32,
        progress=False,
    )
    assert result.success_rate() < 0.2


def test_a_policy_of_the_wrong_shape_is_refused_clearly():
    with pytest.raises(ValueError, match=r"\(N=2, T, A=3\)"):
        evaluate_policy(
            lambda b: np.zeros((2, 3)), tasks=("reach",), episodes_per_task=2, image_size=32, progress=False
        )
