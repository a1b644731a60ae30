"""The VLA-Adapter policy adapter: a tiny random checkpoint loaded as a ChunkPolicy, the preprocessing it
asks for, the refusals, and a whole run on the fake env (no simulator)."""

import json

import numpy as np
import pytest
import torch
from fake_libero import LineEnvFactory
from tiny_vla import INSTRUCTION, save_checkpoint, save_tiny_checkpoint

import craft_vla.eval.libero as libero_eval
from craft_vla.data.image import center_crop_box, crop_and_resize, resize_image
from craft_vla.data.normalize import StatisticsError
from craft_vla.eval.command import LiberoCommand, build_chunk_policy
from craft_vla.eval.libero import LiberoEvalConfig, evaluate_libero
from craft_vla.eval.libero_suites import LiberoTask
from craft_vla.eval.libero_vla_adapter import VLAAdapterChunkPolicy
from craft_vla.models import build_policy, get_config
from craft_vla.models.checkpoint import save_vla
from craft_vla.models.lora import apply_lora


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny"))


def observations(n):
    rng = np.random.default_rng(1)
    return [
        {
            "full_image": rng.integers(0, 256, (256, 256, 3), dtype=np.uint8),
            "wrist_image": rng.integers(0, 256, (256, 256, 3), dtype=np.uint8),
            "state": rng.normal(size=8),
            "instruction": INSTRUCTION,
            "suite": "libero_spatial_swap",
            "task_index": 0,
            "trial": i,
            "step": 0,
        }
        for i in range(n)
    ]


def test_the_adapter_asks_for_the_protocol_preprocessing(checkpoint):
    policy = VLAAdapterChunkPolicy.from_checkpoint(str(checkpoint), ["libero_spatial"], device="cpu")
    assert policy.sample_config.center_crop_area == 0.9 and policy.sample_config.resize_method == "lanczos"
    assert not policy.sample_config.augment
    uncropped = VLAAdapterChunkPolicy.from_checkpoint(str(checkpoint), ["libero_spatial"], center_crop=False)
    assert uncropped.sample_config.center_crop_area is None
    # centre crop of a ramp v[y, x] = 20 x (10 × 10), area 0.64: box [0.1, 0.9] samples pixel positions
    # 0.9 + 0.8 i, where the ramp is 18 + 16 i
    ramp = torch.broadcast_to(20 * torch.arange(10.0), (3, 10, 10)) / 255
    crop = crop_and_resize(ramp, center_crop_box(0.64)) * 255
    expected_crop = torch.broadcast_to(18 + 16 * torch.arange(10.0), (3, 10, 10))
    torch.testing.assert_close(crop, expected_crop, atol=1e-3, rtol=0)
    # the Lanczos resize 256 -> 224 reproduces a linear ramp away from the borders: output pixel j
    # samples input position (j + 0.5) · 256/224 − 0.5
    columns = np.broadcast_to(np.arange(256, dtype=np.uint8)[None, :, None], (256, 256, 3)).copy()
    row = resize_image(columns, 224, "lanczos")
    expected = (np.arange(224) + 0.5) * 256 / 224 - 0.5
    assert np.abs(row[100, 8:-8, 0] - expected[8:-8]).max() <= 1.0


def test_a_checkpoint_answers_a_batch_like_one_observation_at_a_time(checkpoint):
    policy = VLAAdapterChunkPolicy.from_checkpoint(str(checkpoint), ["libero_spatial_swap"], device="cpu")
    assert policy.unnorm_keys == {"libero_spatial_swap": "libero_spatial_no_noops"}
    batch = observations(3)
    chunks = policy.predict_chunks(batch)
    assert chunks.shape == (3, 8, 7) and np.isfinite(chunks).all()
    single = np.stack([policy.predict_chunks([obs])[0] for obs in batch])
    np.testing.assert_allclose(chunks, single, atol=1e-4, rtol=1e-4)
    assert policy.describe()["checkpoint"] == str(checkpoint)


def test_checkpoints_that_do_not_fit_are_refused(checkpoint, tmp_path):
    with pytest.raises(ValueError, match="fine-tuned on libero_goal"):
        VLAAdapterChunkPolicy.from_checkpoint(str(checkpoint), ["libero_goal"])
    wrong_dim = save_tiny_checkpoint(tmp_path / "four", action_dim=4)
    with pytest.raises(ValueError, match="action dimension has size 4; LIBERO needs 7"):
        VLAAdapterChunkPolicy.from_checkpoint(str(wrong_dim), ["libero_spatial"])
    (tmp_path / "lora" / "lora_adapter").mkdir(parents=True)
    statistics = (checkpoint / "dataset_statistics.json").read_text()
    (tmp_path / "lora" / "dataset_statistics.json").write_text(statistics)
    with pytest.raises(ValueError, match="--base_vla_path"):
        VLAAdapterChunkPolicy.from_checkpoint(str(tmp_path / "lora"), ["libero_spatial"])
    with pytest.raises(StatisticsError, match="dataset_statistics.json"):
        VLAAdapterChunkPolicy.from_checkpoint(str(tmp_path), ["libero_spatial"])


def test_a_tiny_model_runs_whole_episodes_on_the_fake_env(checkpoint, tmp_path, monkeypatch):
    tasks = [LiberoTask("libero_spatial", 0, "task0", INSTRUCTION, "task0.bddl", "")]
    monkeypatch.setattr(libero_eval, "load_tasks", lambda suite: tasks)
    monkeypatch.setattr(libero_eval, "load_init_states", lambda task, n: np.array([[0.0, 5.0]] * n))
    policy = VLAAdapterChunkPolicy.from_checkpoint(str(checkpoint), ["libero_spatial"], device="cpu")
    config = LiberoEvalConfig(
        suite="libero_spatial", num_trials_per_task=2, max_steps=16, out_dir=tmp_path, progress=False
    )
    document = evaluate_libero(policy, config, env_factory=LineEnvFactory(), policy_info=policy.describe())
    assert [e["error"] for e in document["episodes"]] == ["", ""]
    assert document["config"]["policy"]["unnorm_keys"] == {"libero_spatial": "libero_spatial_no_noops"}


def test_a_lora_checkpoint_is_applied_to_the_vla_it_adapts(tmp_path):
    torch.manual_seed(0)
    policy = build_policy(get_config("tiny"))
    save_vla(policy.vla, tmp_path / "base")
    apply_lora(policy, rank=4)
    with torch.no_grad():  # make the adapter matter (peft starts lora_B at zero)
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5)
    save_checkpoint(policy, tmp_path / "lora")
    loaded = VLAAdapterChunkPolicy.from_checkpoint(
        str(tmp_path / "lora"), ["libero_spatial_swap"], base_vla_path=str(tmp_path / "base"), device="cpu"
    )
    full = save_tiny_checkpoint(tmp_path / "full")
    base_only = VLAAdapterChunkPolicy.from_checkpoint(str(full), ["libero_spatial_swap"])
    reference = VLAAdapterChunkPolicy(policy, loaded.tokenizer, loaded.statistics, loaded.unnorm_keys)
    batch = observations(2)
    expected = reference.predict_chunks(batch)
    np.testing.assert_allclose(loaded.predict_chunks(batch), expected, atol=1e-5, rtol=1e-5)
    assert not np.allclose(loaded.predict_chunks(batch), base_only.predict_chunks(batch), atol=1e-3)


@pytest.mark.parametrize("pro", [True, False])
def test_eval_libero_loads_either_head_type_from_its_keys(tmp_path, pro):
    """`craft-vla eval libero`'s loading path on a Pro and an original (MLPResNetBlock) head; the config.json
    says the other type, so only the head's keys can tell."""
    directory = save_tiny_checkpoint(tmp_path / "checkpoint", use_pro_version=pro)
    hf = json.loads((directory / "config.json").read_text())
    hf["craft_vla"]["use_pro_version"] = not pro
    (directory / "config.json").write_text(json.dumps(hf))
    command = LiberoCommand(pretrained_checkpoint=str(directory), suite="libero_spatial_swap", device="cpu")
    policy, info = build_chunk_policy(command)
    assert info["use_pro_version"] is pro and policy.policy.config.use_pro_version is pro
    torch.manual_seed(0)  # the weights save_tiny_checkpoint saved
    saved = build_policy(get_config("tiny", use_pro_version=pro))
    reference = VLAAdapterChunkPolicy(saved, policy.tokenizer, policy.statistics, policy.unnorm_keys)
    batch = observations(2)
    chunks = policy.predict_chunks(batch)
    assert chunks.shape == (2, 8, 7)
    np.testing.assert_allclose(chunks, reference.predict_chunks(batch), atol=1e-6, rtol=1e-6)
