"""Inference: observations -> unnormalised action chunks, with the training preprocessing minus augmentation.

The sample is built by the same `craft_vla.data` functions the training dataset uses (image resize and
6-channel normalisation, prompt with action-query placeholders, BOUNDS_Q99 proprio normalisation, the
collator), then goes through `VLAAdapterPolicy.forward`, so training and inference read the bridge
conditions at the same positions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor

from craft_vla.data.collate import VLACollator
from craft_vla.data.dataset import SampleConfig
from craft_vla.data.image import ImageNormalization, build_pixel_values
from craft_vla.data.normalize import DatasetStatistics, normalize_bounds_q99, unnormalize_bounds_q99
from craft_vla.data.prompt import PromptTokenizer, prompt_token_ids
from craft_vla.models.config import VLAAdapterConfig
from craft_vla.models.policy import VLAAdapterPolicy


@dataclass(frozen=True)
class Observation:
    """One observation: uint8 (H, W, 3) images in the training camera order (primary, wrist, ...),
    the instruction, and the raw proprio (P,) in the model's layout (None for policies without proprio)."""

    images: Sequence[np.ndarray]
    instruction: str
    proprio: np.ndarray | None = None


def inference_sample_config(config: VLAAdapterConfig, **fields: object) -> SampleConfig:
    """The data SampleConfig matching the model, augmentation off; `fields` set the rest (e.g.
    center_crop_area, image_normalization)."""
    base = SampleConfig(
        image_size=config.image_size,
        image_views=("primary", "wrist")[: config.num_images_in_input],
        use_proprio=config.use_proprio,
        chunk_len=config.chunk_length,
        num_action_queries=config.num_action_queries,
        action_dim=config.action_dim,
    )
    return replace(base, augment=False, **fields)


def check_sample_config(
    config: VLAAdapterConfig, sample: SampleConfig, statistics: DatasetStatistics
) -> None:
    """Refuse preprocessing that does not fit the model, with what differs."""
    if sample.augment:
        raise ValueError("inference uses the training preprocessing without augmentation: set augment=False")
    expected = {
        "image_size": config.image_size,
        "num_action_queries": config.num_action_queries,
        "use_proprio": config.use_proprio,
        "number of cameras": config.num_images_in_input,
        "action dim of the statistics": config.action_dim,
    }
    found = {
        "image_size": sample.image_size,
        "num_action_queries": sample.num_action_queries,
        "use_proprio": sample.use_proprio,
        "number of cameras": len(sample.image_views),
        "action dim of the statistics": statistics.action.dim,
    }
    wrong = {k: (expected[k], found[k]) for k in expected if expected[k] != found[k]}
    if wrong:
        raise ValueError(f"preprocessing does not fit the model (name: (model, given)): {wrong}")


def observation_sample(
    observation: Observation,
    tokenizer: PromptTokenizer,
    statistics: DatasetStatistics,
    sample: SampleConfig,
) -> dict[str, Tensor]:
    """The model inputs of one observation, as the training dataset builds them with augmentation off."""
    if len(observation.images) != len(sample.image_views):
        raise ValueError(
            f"expected {len(sample.image_views)} images {sample.image_views}, got {len(observation.images)}"
        )
    out = {
        "pixel_values": build_pixel_values(
            observation.images,
            sample.image_size,
            sample.image_normalization,
            None,
            sample.center_crop_area,
            sample.resize_method,
        ),
        "input_ids": torch.tensor(
            prompt_token_ids(
                observation.instruction, tokenizer, sample.num_action_queries, sample.system_prompt
            ),
            dtype=torch.int64,
        ),
    }
    if sample.use_proprio:
        if observation.proprio is None or statistics.proprio is None:
            raise ValueError(
                "this policy uses proprio: give Observation.proprio and statistics with 'proprio'"
            )
        out["proprio"] = torch.from_numpy(normalize_bounds_q99(observation.proprio, statistics.proprio))
    return out


@torch.no_grad()
def predict_actions(
    policy: VLAAdapterPolicy,
    observations: Sequence[Observation],
    tokenizer: PromptTokenizer,
    statistics: DatasetStatistics,
    sample_config: SampleConfig | None = None,
    normalization: ImageNormalization | None = None,
) -> np.ndarray:
    """(N,) observations -> (N, T, A) float32 action chunks, unnormalised with `statistics.action`.

    `sample_config`: the training run's SampleConfig (augmentation is refused); default from the model
    config with no centre crop. `normalization`, when given, replaces the sample config's image constants
    (for a released checkpoint, `ImageNormalization.from_directories(directory)`).
    """
    config = policy.config
    sample = sample_config or inference_sample_config(config)
    if normalization is not None:
        sample = replace(sample, image_normalization=normalization)
    check_sample_config(config, sample, statistics)
    samples = [observation_sample(o, tokenizer, statistics, sample) for o in observations]
    batch = VLACollator(tokenizer.pad_token_id)(samples)
    weight = policy.action_head.model.fc2.weight
    batch = {
        k: v.to(weight.device, weight.dtype if v.is_floating_point() else v.dtype) for k, v in batch.items()
    }
    was_training = policy.training
    policy.eval()
    try:
        actions = policy(batch).actions.float().cpu().numpy()
    finally:
        policy.train(was_training)
    return unnormalize_bounds_q99(actions, statistics.action)


def predict_action(
    policy: VLAAdapterPolicy,
    images: Sequence[np.ndarray],
    instruction: str,
    proprio: np.ndarray | None,
    tokenizer: PromptTokenizer,
    statistics: DatasetStatistics,
    sample_config: SampleConfig | None = None,
    normalization: ImageNormalization | None = None,
) -> np.ndarray:
    """One observation -> (T, A) unnormalised chunk (gripper still in the training convention)."""
    observation = Observation(images, instruction, proprio)
    return predict_actions(policy, [observation], tokenizer, statistics, sample_config, normalization)[0]
