"""A run whose config directory has a preprocessor_config.json normalises images with the processor's
constants everywhere: the training dataset (and so the anchor cache built from it) and inference."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from craft_vla.data.dataset import VLADataset
from craft_vla.data.ids import unpack_sample_id
from craft_vla.data.image import ImageNormalization, build_pixel_values
from craft_vla.data.prompt import vla_prompt_text
from craft_vla.data.tokenizers import WordTokenizer
from craft_vla.models import build_policy, get_config
from craft_vla.models.inference import (
    Observation,
    inference_sample_config,
    observation_sample,
    predict_actions,
)
from craft_vla.training import setup
from craft_vla.training.config import FinetuneConfig

PROCESSOR = ImageNormalization((0.25, 0.5, 0.75), (0.125, 0.25, 0.375), (0.5, 0.25, 0.5), (0.75, 0.5, 0.25))


@pytest.fixture
def config_dir(tmp_path):
    params = [
        {"mean": list(PROCESSOR.dino_mean), "std": list(PROCESSOR.dino_std)},
        {"mean": list(PROCESSOR.siglip_mean), "std": list(PROCESSOR.siglip_std)},
    ]
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"tvf_normalize_params": params}))
    return tmp_path


def training_dataset(rlds_root, config_dir, augment: bool = False) -> VLADataset:
    cfg = FinetuneConfig(
        model="tiny",
        data_root_dir=str(rlds_root),
        dataset_name="toy_tabletop",
        config_file_path=str(config_dir) if config_dir else "",
    )
    readers = setup.open_readers(cfg)
    tokenizer = WordTokenizer.from_texts(
        vla_prompt_text(i) for i in sorted(setup.episode_instructions(readers[0]))
    )
    return VLADataset(readers, tokenizer, setup.sample_config(cfg, get_config("tiny"), augment))


def step_images(dataset: VLADataset, sample_id: int) -> list[np.ndarray]:
    _, episode, step = unpack_sample_id(sample_id)
    reader, kind = dataset.readers[0], dataset.kinds[0]
    return [reader.step_image(episode, step, kind.image_features[v]) for v in dataset.config.image_views]


def test_the_training_dataset_uses_the_processors_constants(rlds_root, config_dir):
    for augment in (False, True):
        dataset = training_dataset(rlds_root, config_dir, augment)
        assert dataset.normalization == PROCESSOR  # what the anchor-cache fingerprint records
    dataset = training_dataset(rlds_root, config_dir)
    sample_id = int(dataset.sample_ids[3])
    expected = build_pixel_values(step_images(dataset, sample_id), dataset.config.image_size, PROCESSOR)
    assert torch.equal(dataset[sample_id]["pixel_values"], expected)
    assert (
        training_dataset(rlds_root, None).normalization == ImageNormalization()
    )  # no processor: the release's


def test_inference_uses_the_processors_constants_like_training(rlds_root, config_dir):
    dataset = training_dataset(rlds_root, config_dir)
    sample_id = int(dataset.sample_ids[3])
    trained = dataset[sample_id]
    statistics = dataset.statistics["toy_tabletop"]
    model = dataclasses.replace(
        get_config("tiny"), llm=dataclasses.replace(get_config("tiny").llm, vocab_size=64)
    )
    model = dataclasses.replace(model, action_dim=statistics.action.dim, proprio_dim=statistics.proprio.dim)
    observation = Observation(
        step_images(dataset, sample_id), trained["instruction"], np.zeros(statistics.proprio.dim)
    )
    sample = inference_sample_config(
        model, image_normalization=ImageNormalization.from_directories(config_dir)
    )
    assert torch.equal(
        observation_sample(observation, dataset.tokenizer, statistics, sample)["pixel_values"],
        trained["pixel_values"],
    )
    # predict_actions' `normalization` (the LIBERO adapter passes the checkpoint's processor) does the same
    torch.manual_seed(0)
    policy = build_policy(model).eval()
    via_config = predict_actions(policy, [observation], dataset.tokenizer, statistics, sample)
    via_argument = predict_actions(
        policy,
        [observation],
        dataset.tokenizer,
        statistics,
        inference_sample_config(model),
        normalization=PROCESSOR,
    )
    defaults = predict_actions(
        policy, [observation], dataset.tokenizer, statistics, inference_sample_config(model)
    )
    np.testing.assert_array_equal(via_argument, via_config)
    assert not np.array_equal(defaults, via_config)
