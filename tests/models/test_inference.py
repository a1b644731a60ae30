"""Inference on the real LIBERO observation with a tiny model, and its preprocessing
== the training dataset's."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from craft_vla.data.collate import VLACollator
from craft_vla.data.dataset import VLADataset
from craft_vla.data.normalize import DatasetStatistics, compute_norm_stats
from craft_vla.data.rlds import RLDSReader
from craft_vla.data.rlds_writer import write_rlds_dataset
from craft_vla.data.tokenizers import TiktokenQwenTokenizer
from craft_vla.models import build_policy, get_config
from craft_vla.models.inference import (
    Observation,
    inference_sample_config,
    observation_sample,
    predict_action,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture(scope="module")
def libero():
    data = np.load(FIXTURES / "libero_spatial_observation.npz")
    instruction = json.loads((FIXTURES / "libero_spatial_observation.json").read_text())["task_description"]
    return Observation([data["full_image"], data["wrist_image"]], instruction, data["state"])


@pytest.fixture(scope="module")
def tokenizer():
    return TiktokenQwenTokenizer()


@pytest.fixture(scope="module")
def statistics():
    rng = np.random.default_rng(0)
    action_mask = np.array([True] * 6 + [False])  # LIBERO: the gripper is not normalised
    return DatasetStatistics(
        action=compute_norm_stats(rng.normal(size=(200, 7)) * [0.5] * 6 + [[0] * 6 + [0.5]], action_mask),
        proprio=compute_norm_stats(rng.normal(size=(200, 8)) * 0.2),
        num_transitions=200,
        num_trajectories=4,
    )


@pytest.fixture(scope="module")
def policy():
    config = get_config("tiny")
    config = replace(config, llm=replace(config.llm, vocab_size=151936))  # the real Qwen2.5 token ids
    torch.manual_seed(0)
    return build_policy(config).eval()


def test_libero_observation_gives_an_unnormalised_chunk(policy, libero, tokenizer, statistics):
    chunk = predict_action(policy, libero.images, libero.instruction, libero.proprio, tokenizer, statistics)
    assert chunk.shape == (8, 7) and chunk.dtype == np.float32 and np.isfinite(chunk).all()
    sample = observation_sample(libero, tokenizer, statistics, inference_sample_config(policy.config))
    with torch.no_grad():
        normalised = policy(VLACollator(tokenizer.pad_token_id)([sample])).actions[0].numpy()
    stats = statistics.action
    expected = 0.5 * (normalised + 1) * (stats.q99 - stats.q01 + 1e-8) + stats.q01
    np.testing.assert_allclose(chunk[:, :6], expected[:, :6], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(chunk[:, 6], normalised[:, 6])  # unmasked gripper passes through


def test_inference_inputs_are_the_training_dataset_inputs(
    policy, libero, tokenizer, statistics, tmp_path, monkeypatch
):
    """The same observation stored as a LIBERO RLDS step (lossless PNG) and read by the training dataset."""
    monkeypatch.setenv("CRAFT_VLA_CACHE", str(tmp_path / "cache"))
    episode = {
        "steps": {
            "observation": {
                "image": libero.images[0][None],
                "wrist_image": libero.images[1][None],
                "state": libero.proprio[None].astype(np.float32),
            },
            "action": np.zeros((1, 7), dtype=np.float32),
            "language_instruction": libero.instruction,
            "is_first": np.array([True]),
            "is_last": np.array([True]),
            "is_terminal": np.array([True]),
        },
        "episode_metadata": {"file_path": "fixture.hdf5"},
    }
    directory = write_rlds_dataset(
        tmp_path / "rlds", "libero_spatial_no_noops", [episode], image_format="png"
    )
    sample_config = inference_sample_config(policy.config, center_crop_area=0.9)
    dataset = VLADataset(
        [RLDSReader(directory)], tokenizer, sample_config, statistics={"libero_spatial_no_noops": statistics}
    )
    trained = dataset[int(dataset.sample_ids[0])]
    libero32 = replace(libero, proprio=libero.proprio.astype(np.float32))  # RLDS stores float32
    ours = observation_sample(libero32, tokenizer, statistics, sample_config)
    for key in ("pixel_values", "input_ids", "proprio"):
        assert torch.equal(ours[key], trained[key]), key
    assert ours["input_ids"][-8:].tolist() == [tokenizer.placeholder_id] * 8


def test_preprocessing_that_does_not_fit_is_refused(policy, libero, tokenizer, statistics):
    augmented = replace(inference_sample_config(policy.config), augment=True)
    with pytest.raises(ValueError, match="augment"):
        predict_action(
            policy,
            libero.images,
            libero.instruction,
            libero.proprio,
            tokenizer,
            statistics,
            sample_config=augmented,
        )
    wrong_size = inference_sample_config(policy.config, image_size=224)
    with pytest.raises(ValueError, match="image_size"):
        predict_action(
            policy,
            libero.images,
            libero.instruction,
            libero.proprio,
            tokenizer,
            statistics,
            sample_config=wrong_size,
        )
