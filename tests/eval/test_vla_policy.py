"""A VLA in memory as the closed loop's policy: the same chunks as `predict_actions`, statistics per suite,
and the tabletop loop feeding it what a plain step-by-step loop would."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from craft_vla.data.normalize import DatasetStatistics, compute_norm_stats
from craft_vla.demo.evaluate import closed_loop
from craft_vla.demo.model import demo_config, demo_tokenizer
from craft_vla.eval.tabletop import TabletopEvaluator
from craft_vla.eval.vla_policy import VLAChunkPolicy
from craft_vla.models import build_policy
from craft_vla.models.inference import Observation, predict_actions
from craft_vla.sim.env import TabletopEnv
from craft_vla.sim.episodes import EVAL_SEED


@pytest.fixture(scope="module")
def model():
    tokenizer = demo_tokenizer()
    torch.manual_seed(0)
    policy = build_policy(demo_config(tokenizer)).eval()
    with torch.no_grad():  # a head that moves: random actions that differ from step to step
        for param in policy.action_head.parameters():
            param.mul_(3.0)
    return policy, tokenizer


def statistics(scale):
    rng = np.random.default_rng(0)
    return DatasetStatistics(
        compute_norm_stats(rng.uniform(-1, 1, (100, 3)) * scale),
        compute_norm_stats(rng.uniform(0, 1, (100, 4))),
        100,
        10,
    )


def observations(n, suites):
    rng = np.random.default_rng(1)
    return [
        {
            "full_image": rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
            "wrist_image": rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
            "state": rng.uniform(0, 1, 4).astype(np.float32),
            "instruction": "pick up the red cube",
            "suite": suites[i % len(suites)],
        }
        for i in range(n)
    ]


def as_observation(obs):
    return Observation([obs["full_image"], obs["wrist_image"]], obs["instruction"], obs["state"])


def test_chunks_are_predict_actions_with_each_suites_statistics(model):
    policy, tokenizer = model
    stats = {"small": statistics([0.1, 0.1, 1.0]), "large": statistics([0.5, 0.5, 1.0])}
    chunk_policy = VLAChunkPolicy(policy, tokenizer, stats, unnorm_keys={"a": "small", "b": "large"})
    batch = observations(4, ["a", "b"])
    chunks = chunk_policy.predict_chunks(batch)
    assert chunks.shape == (4, 8, 3)
    for key, rows in (("small", [0, 2]), ("large", [1, 3])):
        expected = predict_actions(policy, [as_observation(batch[i]) for i in rows], tokenizer, stats[key])
        np.testing.assert_array_equal(chunks[rows], expected)
    assert not np.allclose(chunks[0], chunks[1], atol=1e-3)
    single = VLAChunkPolicy(policy, tokenizer, {"only": stats["small"]}).predict_chunks(batch[:1])
    np.testing.assert_allclose(single, chunks[:1], atol=1e-4, rtol=1e-4)  # batch of 1: the last bits differ
    with pytest.raises(ValueError, match="pass unnorm_keys"):
        VLAChunkPolicy(policy, tokenizer, stats)


class Recording(VLAChunkPolicy):
    def __init__(self, *args):
        super().__init__(*args)
        self.chunks = []

    def predict_chunks(self, observations):
        self.chunks.append(super().predict_chunks(observations))
        return self.chunks[-1]


def plain_loop(policy, tokenizer, stats, task, seed, max_steps, execute_steps, split="train"):
    """One episode step by step, calling `predict_actions` as the demo did before the shared loop."""
    env = TabletopEnv(64, split, max_steps=max_steps)
    obs, chunks, done = env.reset(task, seed), [], False
    while not done:
        observation = Observation([obs["image"], obs["wrist_image"]], env.instruction, obs["state"])
        chunks.append(predict_actions(policy, [observation], tokenizer, stats))
        for action in chunks[-1][0, :execute_steps]:
            obs, _, done, info = env.step(action)
            if done:
                break
    return chunks, (info["success"], info["steps"])


def test_the_tabletop_loop_asks_the_policy_what_a_plain_loop_asks(model):
    policy, tokenizer = model
    stats = statistics([0.3, 0.3, 1.0])
    recording = Recording(policy, tokenizer, {"tabletop": stats})
    [episode] = TabletopEvaluator(64, num_envs=1, max_steps=10).run(
        recording, tasks=("reach",), episodes_per_task=1, execute_steps=3, progress=False
    )
    chunks, outcome = plain_loop(policy, tokenizer, stats, "reach", EVAL_SEED, 10, 3)
    assert (episode.success, episode.steps) == outcome and len(recording.chunks) == len(chunks) == 4
    for ours, reference in zip(recording.chunks, chunks):
        np.testing.assert_array_equal(ours, reference)


def test_the_demos_success_rates_are_the_plain_loops(model):
    policy, tokenizer = model
    stats = statistics([0.3, 0.3, 1.0])
    rates = closed_loop(
        policy, tokenizer, stats, 64, 1, ("train", "heldout"), ("reach",), num_envs=1, execute_steps=4
    )
    for split in ("train", "heldout"):
        _, (success, _) = plain_loop(policy, tokenizer, stats, "reach", EVAL_SEED, 60, 4, split)
        assert rates[split] == {"success_rate": float(success), "per_task": {"reach": float(success)}}
