"""The shared closed loop on the tabletop backend: episode order, open-loop chunks, replanning, results."""

from __future__ import annotations

import hashlib
import json
import zlib

import numpy as np
import pytest
import torch

from craft_vla.eval.results import results_document, success_rates, summarise
from craft_vla.eval.tabletop import ExpertChunkPolicy, TabletopEvaluator
from craft_vla.sim.env import TabletopEnv
from craft_vla.sim.episodes import EVAL_SEED
from craft_vla.sim.tasks import TASK_NAMES

# Outcomes (success, steps) of `NoisyExpert` on the held-out split, 3 episodes per task, chunks of 6 with
# 4 executed, 5 environments at 32 px, and a digest of the environments in every batch: computed with the
# evaluator this loop replaced (craft_vla.sim.evaluate, before the closed loop was shared with LIBERO).
NOISY_OUTCOMES = [
    (1, 32),
    (1, 16),
    (1, 43),
    (1, 50),
    (0, 60),
    (1, 30),
    (0, 60),
    (0, 60),
    (1, 53),
    (1, 42),
    (0, 60),
    (1, 36),
    (1, 60),
    (1, 35),
    (0, 60),
    (0, 60),
    (1, 35),
    (0, 60),
    (0, 60),
    (1, 44),
    (0, 60),
    (0, 60),
    (0, 60),
    (0, 60),
    (0, 60),
    (1, 29),
    (1, 29),
]
NOISY_BATCHES_SHA1 = "f08bd928f714f506b245bf6e1b9bc4eeae4c2ebb"  # of json.dumps([[env_index, ...] per call])


class NoisyExpert(ExpertChunkPolicy):
    """The expert's chunks plus noise seeded by each observation's pixels, so some episodes fail."""

    def __init__(self, envs, chunk, noise):
        super().__init__(envs, chunk)
        self.noise, self.batches = noise, []

    def predict_chunks(self, observations):
        self.batches.append([obs["env_index"] for obs in observations])
        chunks = super().predict_chunks(observations)
        for chunk, obs in zip(chunks, observations):
            seed = zlib.crc32(obs["full_image"].tobytes()) + zlib.crc32(obs["wrist_image"].tobytes())
            chunk += np.random.default_rng(seed).normal(0, self.noise, chunk.shape)
        return chunks


class Still:
    """Zero actions (T = 4); records the batch sizes; answers with a tensor, which the loop accepts too."""

    def __init__(self):
        self.calls = []

    def predict_chunks(self, observations):
        self.calls.append(len(observations))
        assert observations[0]["full_image"].shape == (32, 32, 3) and observations[0]["state"].shape == (4,)
        return torch.zeros(len(observations), 4, 3)


def expert_episode_length(split, task, seed):
    """Outcome of the expert acting step by step (the world is deterministic: open-loop chunks match it)."""
    env = TabletopEnv(split=split, render=False)
    env.reset(task, seed)
    done = False
    while not done:
        _, _, done, info = env.step(env.expert_action())
    return info["success"], info["steps"]


def outcomes(episodes):
    return [(e.suite, e.task, e.trial, e.success, e.steps) for e in episodes]


def test_expert_chunks_succeed_everywhere_in_the_expert_episode_length():
    evaluator = TabletopEvaluator(image_size=32, num_envs=6)
    episodes = evaluator.run(ExpertChunkPolicy(evaluator.envs, chunk=8), episodes_per_task=3, progress=False)
    assert [(e.task, e.trial) for e in episodes] == [(t, EVAL_SEED + i) for t in TASK_NAMES for i in range(3)]
    assert [(e.success, e.steps) for e in episodes] == [
        expert_episode_length("train", e.task, e.trial) for e in episodes
    ]
    all_succeed = {"success_rate": 1.0, "per_task": dict.fromkeys(TASK_NAMES, 1.0)}
    assert success_rates(episodes) == {"tabletop_train": all_succeed}
    assert {e.suite for e in episodes} == {"tabletop_train"} and episodes[3].task_index == 1
    json.dumps(results_document(episodes, {"suite": evaluator.suite}))


def test_noisy_expert_outcomes_and_batches_match_the_evaluator_before_the_shared_loop():
    evaluator = TabletopEvaluator(image_size=32, split="heldout", num_envs=5)
    policy = NoisyExpert(evaluator.envs, chunk=6, noise=1.5)
    episodes = evaluator.run(policy, episodes_per_task=3, execute_steps=4, progress=False)
    assert [(int(e.success), e.steps) for e in episodes] == NOISY_OUTCOMES
    assert hashlib.sha1(json.dumps(policy.batches).encode()).hexdigest() == NOISY_BATCHES_SHA1
    assert len(policy.batches) == 69
    rates = success_rates(episodes)["tabletop_heldout"]
    assert rates["success_rate"] == sum(s for s, _ in NOISY_OUTCOMES) / 27
    assert rates["per_task"]["place_relation"] == 0.0 and rates["per_task"]["reach"] == 1.0


@pytest.mark.slow
def test_expert_chunks_succeed_on_50_episodes_per_task_at_64px():
    for split in ("train", "heldout"):
        evaluator = TabletopEvaluator(image_size=64, split=split, num_envs=16)
        policy = ExpertChunkPolicy(evaluator.envs, chunk=8)
        episodes = evaluator.run(policy, episodes_per_task=50, progress=False)
        assert min(success_rates(episodes)[evaluator.suite]["per_task"].values()) >= 0.95


def test_outcomes_do_not_depend_on_the_number_of_envs():
    results = []
    for num_envs in (1, 5):
        evaluator = TabletopEvaluator(image_size=32, num_envs=num_envs)
        policy = NoisyExpert(evaluator.envs, chunk=3, noise=1.0)
        results.append(
            outcomes(
                evaluator.run(
                    policy, tasks=("stack", "push_side"), episodes_per_task=3, execute_steps=2, progress=False
                )
            )
        )
    assert results[0] == results[1]
    assert 0 < sum(r[3] for r in results[0]) < len(results[0])  # the comparison covers both outcomes


def test_chunks_run_open_loop_and_execute_steps_limits_them():
    still = Still()
    evaluator = TabletopEvaluator(image_size=32, num_envs=2, max_steps=8)
    episodes = evaluator.run(still, tasks=("reach",), episodes_per_task=2, progress=False)
    assert still.calls == [2, 2] and [(e.success, e.steps) for e in episodes] == [(False, 8), (False, 8)]
    still.calls.clear()
    evaluator.run(still, tasks=("reach",), episodes_per_task=2, execute_steps=1, progress=False)
    assert still.calls == [2] * 8
    with pytest.raises(ValueError, match="between 1 and the chunk length 4"):
        evaluator.run(still, tasks=("reach",), episodes_per_task=1, execute_steps=5, progress=False)


def test_random_policy_rarely_succeeds():
    class Random:
        rng = np.random.default_rng(0)

        def predict_chunks(self, observations):
            return self.rng.uniform(-1, 1, (len(observations), 8, 3))

    episodes = TabletopEvaluator(image_size=32).run(Random(), episodes_per_task=4, progress=False)
    assert summarise(episodes)["suites"][0]["success_rate"] < 0.2


def test_a_policy_of_the_wrong_shape_is_refused_clearly():
    class Flat:
        def predict_chunks(self, observations):
            return np.zeros((len(observations), 3))

    with pytest.raises(ValueError, match=r"\(N=2, T, A=3\): the tabletop's action is \(dx, dy, grip\)"):
        TabletopEvaluator(32, num_envs=2).run(Flat(), tasks=("reach",), episodes_per_task=2, progress=False)


def test_results_label_a_task_of_many_phrasings_by_its_name():
    evaluator = TabletopEvaluator(image_size=32, num_envs=3)
    policy = ExpertChunkPolicy(evaluator.envs)
    episodes = evaluator.run(policy, tasks=("reach",), episodes_per_task=3, progress=False)
    assert len({e.instruction for e in episodes}) > 1
    [row] = summarise(episodes)["tasks"]
    assert (row["task"], row["instruction"], row["successes"], row["trials"]) == ("reach", "reach", 3, 3)
