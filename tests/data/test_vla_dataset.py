import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from craft_vla.data.chunks import action_chunk
from craft_vla.data.collate import VLACollator
from craft_vla.data.dataset import SampleConfig, VLADataset
from craft_vla.data.ids import pack_sample_id, unpack_sample_id
from craft_vla.data.image import build_pixel_values
from craft_vla.data.normalize import normalize_bounds_q99
from craft_vla.data.prompt import vla_prompt_text
from craft_vla.data.rlds import RLDSReader
from craft_vla.data.rlds_writer import write_rlds_dataset
from craft_vla.data.sampler import EpochSampler
from craft_vla.data.tokenizers import WordTokenizer

TASKS = ["Pick up the black bowl", "open the drawer", "put the bowl on the plate", "push the red cube"]


@pytest.fixture
def tokenizer():
    return WordTokenizer.from_texts([vla_prompt_text(t) for t in TASKS])


@pytest.fixture
def mixture(libero_dir, tmp_path, make_episode):
    rng = np.random.default_rng(7)
    sim = [make_episode(rng, n, "push the red cube", image_size=24) for n in (4, 6)]
    sim_dir = write_rlds_dataset(tmp_path / "rlds", "aaa_sim", sim, image_format="png")
    return [RLDSReader(libero_dir), RLDSReader(sim_dir)]


def make_dataset(readers, tokenizer, **overrides):
    config = SampleConfig(image_size=16, chunk_len=3, num_action_queries=4, **overrides)
    return VLADataset(readers, tokenizer, config)


def test_sample_contents_match_an_independent_computation(libero_dir, episodes, tokenizer):
    dataset = make_dataset([RLDSReader(libero_dir)], tokenizer)
    sample = dataset[pack_sample_id(0, 1, 7)]
    assert sample["pixel_values"].shape == (12, 16, 16) and sample["pixel_values"].dtype == torch.float32
    stats = dataset.statistics["libero_toy_no_noops"]
    raw = episodes[1]["steps"]["action"]
    gripper = 1 - np.clip(raw[:, -1:], 0, 1)
    chunk = np.concatenate([raw[:, :6], gripper], 1)[[7, 8, 8]]
    np.testing.assert_allclose(sample["actions"].numpy(), normalize_bounds_q99(chunk, stats.action))
    assert sample["actions"][:, -1].tolist() == chunk[:, -1].tolist()  # gripper is not normalised
    state = episodes[1]["steps"]["observation"]["state"][7]
    np.testing.assert_allclose(
        sample["proprio"].numpy(), normalize_bounds_q99(state[[0, 1, 2, 3, 4, 5, 6, 7]], stats.proprio)
    )
    assert sample["instruction"] == "open the drawer" and int(sample["sample_id"]) == pack_sample_id(0, 1, 7)
    assert sample["input_ids"][-4:].tolist() == [tokenizer.placeholder_id] * 4


def test_mixture_orders_datasets_by_name_and_keeps_own_statistics(mixture, tokenizer):
    dataset = make_dataset(mixture, tokenizer, image_views=("primary",))
    assert dataset.dataset_names == ["aaa_sim", "libero_toy_no_noops"]
    assert len(dataset) == 10 + 28
    sim_sample, libero_sample = dataset[pack_sample_id(0, 1, 5)], dataset[pack_sample_id(1, 0, 0)]
    assert sim_sample["actions"].shape == libero_sample["actions"].shape == (3, 7)
    assert sim_sample["pixel_values"].shape == (6, 16, 16)
    assert dataset.statistics["aaa_sim"].action.mask.all()  # identity kind: every dim normalised
    assert not dataset.statistics["libero_toy_no_noops"].action.mask[-1]
    # each dataset is normalised with its own statistics
    raw = dataset.readers[0].step_fields(1)["action"][[5, 5, 5]]
    np.testing.assert_allclose(
        sim_sample["actions"], normalize_bounds_q99(raw, dataset.statistics["aaa_sim"].action)
    )


def test_mixture_with_different_action_dims_is_refused(libero_dir, tmp_path, tokenizer, make_episode):
    other = [make_episode(np.random.default_rng(1), 4, "push the red cube", action_dim=4)]
    other_dir = write_rlds_dataset(tmp_path / "rlds", "aaa_other", other)
    with pytest.raises(ValueError, match="must share action and proprio dims"):
        make_dataset([RLDSReader(libero_dir), RLDSReader(other_dir)], tokenizer)


def test_get_by_id_equals_iteration(mixture, tokenizer):
    dataset = make_dataset(mixture, tokenizer)
    iterated, episode_actions = {}, {}
    for d, reader in enumerate(dataset.readers):
        for episode, step, fields in reader.iter_steps():
            iterated[pack_sample_id(d, episode, step)] = fields
            episode_actions.setdefault((d, episode), []).append(fields["action"])
    assert sorted(iterated) == sorted(dataset.sample_ids.tolist())
    for sample_id in np.random.default_rng(0).permutation(dataset.sample_ids)[:12].tolist():
        sample, fields = dataset[sample_id], iterated[sample_id]
        d, episode, step = unpack_sample_id(sample_id)
        images = [fields["observation"]["image"], fields["observation"]["wrist_image"]]
        assert torch.equal(sample["pixel_values"], build_pixel_values(images, 16))
        kind, stats = dataset.kinds[d], dataset.statistics[dataset.dataset_names[d]]
        actions = kind.action_fn({"action": np.stack(episode_actions[(d, episode)])})
        expected = normalize_bounds_q99(action_chunk(actions, step, 3), stats.action)
        assert torch.equal(sample["actions"], torch.from_numpy(expected))
        assert sample["instruction"] == fields["language_instruction"]


def test_dataloader_with_two_workers_matches_single_process(mixture, tokenizer):
    dataset = make_dataset(mixture, tokenizer, augment=True)
    collate = VLACollator(tokenizer.pad_token_id)

    def batches(num_workers):
        sampler = EpochSampler(dataset.sample_ids, seed=11, rank=0, world_size=1)
        loader = DataLoader(
            dataset, batch_size=5, sampler=sampler, collate_fn=collate, num_workers=num_workers
        )
        return [b for _ in range(2) for b in loader]

    serial, parallel = batches(0), batches(2)
    assert len(serial) == len(parallel) == 16
    for a, b in zip(serial, parallel):
        assert (
            a.keys()
            == b.keys()
            == {"pixel_values", "input_ids", "attention_mask", "actions", "proprio", "sample_id"}
        )
        for key in a:
            assert torch.equal(a[key], b[key]), key
    first = serial[0]
    assert first["attention_mask"].dtype == torch.bool and first["sample_id"].dtype == torch.int64
    lengths = first["attention_mask"].sum(1)
    for row, length in enumerate(lengths.tolist()):
        assert (first["input_ids"][row, length:] == tokenizer.pad_token_id).all()
        assert (first["input_ids"][row, length - 4 : length] == tokenizer.placeholder_id).all()
    # epoch 1 re-augments: same ids in another order, different pixels for the same id
    epoch0 = {int(i): p for b in serial[:8] for i, p in zip(b["sample_id"], b["pixel_values"])}
    epoch1 = {int(i): p for b in serial[8:] for i, p in zip(b["sample_id"], b["pixel_values"])}
    common = sorted(set(epoch0) & set(epoch1))
    assert common and not torch.equal(epoch0[common[0]], epoch1[common[0]])


def test_collator_mixed_lengths():
    samples = [
        {"input_ids": torch.tensor([5, 6, 7]), "sample_id": torch.tensor(1), "instruction": "a"},
        {"input_ids": torch.tensor([8]), "sample_id": torch.tensor(2), "instruction": "b"},
    ]
    batch = VLACollator(pad_token_id=0, keep_text=True)(samples)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[True, True, True], [True, False, False]]
    assert batch["sample_id"].tolist() == [1, 2] and batch["instruction"] == ["a", "b"]


def test_unknown_camera_is_a_clear_error(libero_dir, tokenizer):
    with pytest.raises(ValueError, match="no camera 'left'"):
        make_dataset([RLDSReader(libero_dir)], tokenizer, image_views=("left",))
