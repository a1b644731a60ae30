"""The loading shortcuts give bit-identical samples: the per-episode cache of normalised actions and proprio,
and the one-pass normalisation of all images for both towers, against the per-step, per-image computation."""

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF

from craft_vla.data.chunks import action_chunk
from craft_vla.data.dataset import SampleConfig, VLADataset
from craft_vla.data.ids import pack_sample_id, unpack_sample_id
from craft_vla.data.image import (
    ImageNormalization,
    augment_image,
    build_pixel_values,
    center_crop,
    normalize_dual,
    resize_image,
    sample_augment_params,
    to_uint8,
    to_unit_float,
)
from craft_vla.data.normalize import normalize_bounds_q99
from craft_vla.data.prompt import prompt_token_ids, vla_prompt_text
from craft_vla.data.rlds import RLDSReader
from craft_vla.data.rlds_writer import write_rlds_dataset
from craft_vla.data.tokenizers import WordTokenizer

TASKS = ["Pick up the black bowl", "open the drawer", "put the bowl on the plate", "push the red cube"]
OTHER_NORM = ImageNormalization((0.1, 0.2, 0.3), (0.31, 0.27, 0.2), (0.45, 0.5, 0.55), (0.26, 0.26, 0.27))


@pytest.fixture
def dataset(libero_dir, tmp_path, make_episode):
    """A mixture of a libero-kind dataset (5 episodes) and an identity-kind one (2 episodes)."""
    sim = [make_episode(np.random.default_rng(3), n, "push the red cube", image_size=24) for n in (4, 6)]
    sim_dir = write_rlds_dataset(tmp_path / "rlds", "aaa_sim", sim)
    tokenizer = WordTokenizer.from_texts([vla_prompt_text(t) for t in TASKS])
    config = SampleConfig(image_size=16, chunk_len=3, num_action_queries=4)
    return VLADataset([RLDSReader(libero_dir), RLDSReader(sim_dir)], tokenizer, config)


def per_step_targets(dataset: VLADataset, sample_id: int) -> dict[str, object]:
    """Actions, proprio, instruction and prompt ids of one sample computed from that
    step alone, nothing cached."""
    d, episode, step = unpack_sample_id(sample_id)
    reader, kind = dataset.readers[d], dataset.kinds[d]
    stats, fields = dataset.statistics[reader.name], reader.step_fields(episode)
    instruction = fields[kind.instruction_feature][step]
    config = dataset.config
    chunk = action_chunk(kind.action_fn(fields), step, config.chunk_len)
    prompt = prompt_token_ids(instruction, dataset.tokenizer, config.num_action_queries, config.system_prompt)
    return {
        "actions": torch.from_numpy(normalize_bounds_q99(chunk, stats.action)),
        "proprio": torch.from_numpy(normalize_bounds_q99(kind.proprio_fn(fields)[step], stats.proprio)),
        "instruction": instruction,
        "input_ids": torch.tensor(prompt),
    }


def assert_same_sample(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], torch.Tensor):
            assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key
        else:
            assert a[key] == b[key], key


@pytest.mark.parametrize("order", ["sequential", "reversed", "shuffled"])
def test_cached_episode_targets_equal_the_per_step_computation(dataset, order):
    ids = dataset.sample_ids.tolist()
    if order == "reversed":
        ids = ids[::-1]
    elif order == "shuffled":  # jumps between episodes and between the two datasets
        ids = np.random.default_rng(0).permutation(ids).tolist()
    for sample_id in ids:
        sample, expected = dataset[sample_id], per_step_targets(dataset, sample_id)
        for key in ("actions", "proprio", "input_ids"):
            assert sample[key].dtype == expected[key].dtype and torch.equal(sample[key], expected[key]), (
                sample_id,
                key,
            )
        assert sample["instruction"] == expected["instruction"]


def test_a_sample_read_again_or_after_others_is_unchanged(dataset):
    first = pack_sample_id(1, 1, 7)
    reference = dataset[first]
    assert_same_sample(dataset[first], reference)  # straight from the cache
    for other in (pack_sample_id(1, 1, 8), pack_sample_id(0, 1, 2), pack_sample_id(1, 3, 0)):
        dataset[other]
        assert_same_sample(dataset[first], reference)  # after the cache moved to other episodes and datasets


def test_samples_do_not_share_memory_with_the_cache(dataset):
    sample_id = pack_sample_id(1, 1, 4)
    sample = dataset[sample_id]
    expected = {key: sample[key].clone() for key in ("actions", "proprio")}
    sample["actions"].fill_(7.0)
    sample["proprio"].fill_(7.0)
    again = dataset[sample_id]
    assert torch.equal(again["actions"], expected["actions"]) and torch.equal(
        again["proprio"], expected["proprio"]
    )


def per_image_pixel_values(images, size, norm, augment=None, center_crop_area=None) -> torch.Tensor:
    """The image-by-image reference: resize, optional crop/augmentation, torchvision's
    normalize once per tower."""
    planes = []
    for image in images:
        pixels = torch.from_numpy(np.array(resize_image(image, size))).permute(2, 0, 1)
        if augment is not None:
            pixels = to_uint8(augment_image(to_unit_float(pixels), augment))
        elif center_crop_area is not None:
            pixels = center_crop(pixels, center_crop_area)
        pixels = pixels.float() / 255
        planes += [
            TF.normalize(pixels, list(norm.dino_mean), list(norm.dino_std)),
            TF.normalize(pixels, list(norm.siglip_mean), list(norm.siglip_std)),
        ]
    return torch.cat(planes)


@pytest.mark.parametrize("norm", [ImageNormalization(), OTHER_NORM])
@pytest.mark.parametrize("mode", ["plain", "augment", "center_crop"])
def test_one_pass_pixel_values_equal_per_image_normalisation(norm, mode):
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (40, 36, 3), dtype=np.uint8) for _ in range(3)]
    kwargs = (
        {"augment": sample_augment_params(0, 5, 2)}
        if mode == "augment"
        else {"center_crop_area": 0.9}
        if mode == "center_crop"
        else {}
    )
    got = build_pixel_values(images, 16, norm, **kwargs)
    expected = per_image_pixel_values(images, 16, norm, **kwargs)
    assert got.shape == (18, 16, 16) and got.dtype == torch.float32 and torch.equal(got, expected)
    # the memoised tower constants follow the normalisation asked for
    other = OTHER_NORM if norm == ImageNormalization() else ImageNormalization()
    assert torch.equal(
        build_pixel_values(images, 16, other, **kwargs), per_image_pixel_values(images, 16, other, **kwargs)
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_normalize_dual_matches_torchvision_in_the_images_dtype(dtype):
    image = torch.rand(3, 5, 7, dtype=dtype, generator=torch.Generator().manual_seed(0))
    norm = ImageNormalization()
    expected = torch.cat(
        [
            TF.normalize(image, list(norm.dino_mean), list(norm.dino_std)),
            TF.normalize(image, list(norm.siglip_mean), list(norm.siglip_std)),
        ]
    )
    got = normalize_dual(image, norm)
    assert got.dtype == dtype and torch.equal(got, expected)
