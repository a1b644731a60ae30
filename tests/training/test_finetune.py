"""The fine-tuning loop: plain SFT bit for bit, exact resume, CRaFT through the anchor cache."""

import dataclasses
import json
import math
import shutil

import pytest
import torch
from helpers import SEED_FORMULATION, synthetic_episodes
from helpers import toy_config as config
from safetensors.torch import load_file

from craft_vla.data.collate import VLACollator
from craft_vla.data.dataset import VLADataset
from craft_vla.data.rlds_writer import write_rlds_dataset
from craft_vla.data.sampler import EpochSampler
from craft_vla.training import setup
from craft_vla.training.build_cache import build_cache
from craft_vla.training.finetune import build_run, finetune
from craft_vla.training.step import warmup_then_decay


def final_weights(run_dir, step):
    return load_file(str(run_dir / f"step-{step:06d}" / "training_state" / "trainable.safetensors"))


def embedding_penalty(model, step):
    """A stand-in for the demo's co-training loss: it depends on the step and reaches pretrained weights."""
    return 0.1 * (step + 1) * model.vla.language_model.get_input_embeddings().weight.square().mean()


@pytest.mark.parametrize("aux_loss", [None, embedding_penalty], ids=["sft", "sft+aux_loss"])
def test_craft_off_equals_plain_sft_bit_for_bit(rlds_root, tmp_path, aux_loss):
    cfg = config(rlds_root, tmp_path)
    ours = final_weights(finetune(cfg, aux_loss=aux_loss), cfg.max_steps)
    # the plain VLA-Adapter SFT loop, written out with the same pieces and seed
    torch.manual_seed(cfg.seed)
    readers = setup.open_readers(cfg)
    tokenizer = setup.load_tokenizer(cfg, readers)
    probe = VLADataset(readers, tokenizer, setup.sample_config(cfg, setup.get_config("tiny"), False))
    stats = probe.statistics["toy_tabletop"]
    policy, _ = setup.build_model(cfg, stats.action.dim, stats.proprio.dim, tokenizer.vocab_size)
    dataset = VLADataset(
        readers, tokenizer, setup.sample_config(cfg, policy.config, True), statistics=probe.statistics
    )
    sampler = EpochSampler(dataset.sample_ids, seed=cfg.seed)
    loader = setup.batch_loader(
        dataset, sampler, cfg.batch_size, VLACollator(tokenizer.pad_token_id), 0, cfg.seed
    )
    optimizer = torch.optim.AdamW(policy.parameters(), lr=cfg.learning_rate, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_then_decay(2, 3))
    batches = iter(loader)
    for step in range(cfg.max_steps):
        policy(next(batches)).loss.backward()
        if aux_loss is not None:
            aux_loss(policy, step).backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
    plain = policy.state_dict()
    assert set(ours) <= set(plain)
    for name, tensor in ours.items():
        assert torch.equal(tensor, plain[name]), name


def test_head_learning_rate_is_a_group_of_its_own(rlds_root, tmp_path):
    run = build_run(config(rlds_root, tmp_path, head_learning_rate=3e-3))
    vlm_group, head_group = run.state.optimizer.param_groups
    policy = run.state.model
    head = {
        id(p)
        for m in (policy.action_head, policy.proprio_projector, policy.vla.action_queries)
        for p in m.parameters()
        if p.requires_grad
    }
    assert {id(p) for p in head_group["params"]} == head
    assert len(vlm_group["params"]) + len(head_group["params"]) == len(run.state.trainable)
    assert head_group["lr"] / vlm_group["lr"] == pytest.approx(3.0)  # both scaled by the same schedule


def test_head_learning_rate_equal_to_learning_rate_changes_nothing(rlds_root, tmp_path):
    cfg = config(rlds_root, tmp_path)
    plain = final_weights(finetune(cfg), cfg.max_steps)
    split = final_weights(
        finetune(dataclasses.replace(cfg, head_learning_rate=cfg.learning_rate, run_id_override="split")),
        cfg.max_steps,
    )
    assert plain.keys() == split.keys()
    for name in plain:
        assert torch.equal(plain[name], split[name]), name


def test_head_only_steps_keep_the_vlm_then_warm_it_up(rlds_root, tmp_path):
    """LP-FT: for the first K steps the VLM's weights stay bit for bit those it started from, while the new
    weights learn; from step K the VLM learns, its rate warming up from 0.1 x."""
    cfg = config(rlds_root, tmp_path, head_only_steps=2, max_steps=2, lr_warmup_steps=4)
    start = build_run(dataclasses.replace(cfg, run_id_override="start")).state.model
    initial = {n: p.detach().clone() for n, p in start.named_parameters()}
    new = {n for n, p in start.named_parameters() if any(p is q for q in start.new_parameters())}
    assert any(n.startswith("vla.action_queries") for n in new)
    after = final_weights(finetune(cfg), 2)
    assert new < set(after)
    for name, tensor in after.items():
        assert torch.equal(tensor, initial[name]) == (name not in new), name
    vlm, head = build_run(dataclasses.replace(cfg, run_id_override="schedule")).state.scheduler.lr_lambdas
    # the ×0.1 decay stays at its absolute step (3 in this config) for both groups
    assert [vlm(step) for step in range(4)] == pytest.approx([0, 0, 0.325, 0.055])
    assert [head(step) for step in range(4)] == pytest.approx([0.325, 0.55, 0.775, 0.1])


def test_resume_is_exact_across_the_end_of_head_only_steps(rlds_root, tmp_path):
    cfg = config(rlds_root, tmp_path, head_only_steps=2, max_steps=4, run_id_override="lpft")
    assert_resume_is_exact(cfg, finetune(cfg), stop_at=2)


def assert_resume_is_exact(cfg, full_dir, stop_at: int) -> None:
    """A run of `cfg` stopped after `stop_at` steps and resumed ends with the weights and metrics of the
    uninterrupted run in `full_dir`."""
    half = dataclasses.replace(cfg, max_steps=stop_at, run_id_override=f"{cfg.run_id_override}-resumed")
    finetune(half)
    resumed_dir = finetune(dataclasses.replace(half, max_steps=cfg.max_steps, resume=True))
    a, b = final_weights(full_dir, cfg.max_steps), final_weights(resumed_dir, cfg.max_steps)
    for name in a:
        assert torch.equal(a[name], b[name]), name
    metrics = [(full_dir / "metrics.jsonl").read_text(), (resumed_dir / "metrics.jsonl").read_text()]
    assert metrics[0] == metrics[1]


def test_resume_continues_exactly(rlds_root, tmp_path):
    cfg = config(rlds_root, tmp_path, max_steps=6, run_id_override="full")
    assert_resume_is_exact(cfg, finetune(cfg), stop_at=3)


@pytest.fixture
def craft_cfg(rlds_root, tmp_path):
    cfg = config(
        rlds_root,
        tmp_path,
        use_craft=True,
        image_aug=False,
        craft_cache_path=str(tmp_path / "cache"),
        craft_raw_layer=2,
        craft_aq_layer=4,
        max_steps=5,
        **SEED_FORMULATION,
    )
    build_cache(cfg)
    return cfg


def test_craft_run_logs_every_key_and_starts_at_zero_drift(craft_cfg):
    run_dir = finetune(craft_cfg)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    keys = {
        "loss",
        "curr_action_l1_loss",
        "next_actions_l1_loss",
        "lr",
        "grad_norm",
        "craft/lambda",
        "craft/L_ret",
        "craft/L_act",
        "craft/cos",
        "craft/conflict",
        "craft/proj_coef",
        "craft/g_act_norm",
        "craft/g_ret_norm",
        "craft/epsilon",
        "craft/L_ret/epsilon",
    }
    assert keys <= set(records[0])
    cache_meta = json.loads(open(f"{craft_cfg.craft_cache_path}/meta.json").read())
    assert records[0]["craft/L_ret"] < 1e-6 * cache_meta["spread"]["mean_norm_sq"]
    assert records[0]["craft/epsilon"] == pytest.approx(0.05 * cache_meta["spread"]["all"])
    assert all(math.isfinite(r["craft/lambda"]) for r in records)
    assert records[-1]["craft/L_ret"] > 0  # the model moved


def test_bf16_craft_run_on_the_cpu_starts_at_zero_drift(craft_cfg):
    cfg = dataclasses.replace(
        craft_cfg, precision="bf16", craft_cache_path=craft_cfg.craft_cache_path + "-bf16"
    )
    cache = build_cache(cfg)
    assert cache.meta["fingerprint"]["precision"] == "bf16"
    run = build_run(cfg)  # the cache builder and the trainer place the model alike: attention as matmuls
    assert {
        m.config._attn_implementation
        for m in run.state.model.modules()
        if hasattr(m, "set_attn_implementation")
    } == {"eager"}
    records = [json.loads(line) for line in (finetune(cfg) / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["craft/L_ret"] < 1e-6 * cache.spread["mean_norm_sq"]
    assert records[-1]["craft/L_ret"] > 0


def test_foreign_cache_is_refused_naming_the_field(craft_cfg):
    with pytest.raises(ValueError, match="aq_layer"):
        build_run(dataclasses.replace(craft_cfg, craft_aq_layer=3))
    with pytest.raises(ValueError, match="weights_sha256"):
        build_run(dataclasses.replace(craft_cfg, seed=8))


def test_online_anchor_source_with_lora(rlds_root, tmp_path):
    cfg = config(
        rlds_root,
        tmp_path,
        use_craft=True,
        use_lora=True,
        lora_rank=4,
        craft_anchor_source="online",
        craft_epsilon_mode="absolute",
        craft_epsilon=1e-3,
        image_aug=False,
        max_steps=3,
    )
    run_dir = finetune(cfg)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["craft/L_ret"] == 0.0  # B = 0 at init: the LoRA model is the snapshot
    assert (run_dir / "step-000003" / "lora_adapter" / "adapter_model.safetensors").exists()


def test_correction_mode_runs_logs_its_step_and_resumes_exactly(craft_cfg):
    cfg = dataclasses.replace(
        craft_cfg,
        craft_correction_rate=0.5,
        craft_epsilon=1e-9,  # a budget every step after the first exceeds, so corrections happen
        craft_epsilon_mode="absolute",
        run_id_override="correction",
    )
    full_dir = finetune(cfg)
    records = [json.loads(line) for line in (full_dir / "metrics.jsonl").read_text().splitlines()]
    assert all(r["craft/lambda"] == 0.0 for r in records)  # λ is not used in this mode
    assert any(r["craft/correction"] > 0 for r in records[1:])
    assert_resume_is_exact(cfg, full_dir, stop_at=3)


def test_one_raw_layer_and_a_list_of_them_are_refused_together():
    from craft_vla.training.config import FinetuneConfig

    with pytest.raises(ValueError, match="use --craft_raw_layers 2 for that layer alone"):
        FinetuneConfig(model="tiny", use_craft=True, craft_raw_layer=2, craft_raw_layers=(1, 2)).validate()
    FinetuneConfig(model="tiny", use_craft=True, craft_raw_layers=(1, 2), craft_cache_path="cache").validate()


def test_anchor_inputs_from_another_dataset(rlds_root, tmp_path):
    """--craft_anchor_dataset_name: the cache holds that dataset's samples (its words in the vocabulary),
    training reads them at zero drift and resumes exactly, and a cache of the training data is refused."""
    root = tmp_path / "data"
    shutil.copytree(rlds_root / "toy_tabletop", root / "toy_tabletop")
    episodes = list(synthetic_episodes(2, seed=7))
    for episode in episodes:
        episode["steps"]["language_instruction"] = "which colour is the sphere"
    write_rlds_dataset(root, "toy_reference", episodes)
    cfg = config(
        root,
        tmp_path,
        use_craft=True,
        image_aug=False,
        craft_cache_path=str(tmp_path / "cache"),
        craft_anchor_dataset_name="toy_reference",
        max_steps=4,
        run_id_override="reference",
    )
    cache = build_cache(cfg)
    reference_samples = sum(len(e["steps"]["action"]) for e in episodes)
    assert len(cache) == reference_samples
    assert set(cache.fingerprint["datasets"]) == {"toy_reference"}
    tokenizer = setup.prepare(cfg).tokenizer
    assert tokenizer.unk_token_id not in tokenizer.encode("which colour is the sphere")
    run_dir = finetune(cfg)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["craft/L_ret"] < 1e-6 * cache.spread["mean_norm_sq"]
    assert_resume_is_exact(cfg, run_dir, stop_at=2)  # the anchor sampler over the other dataset resumes too
    training_cache = dataclasses.replace(
        cfg, craft_anchor_dataset_name="", craft_cache_path=str(tmp_path / "training-cache")
    )
    build_cache(training_cache)
    with pytest.raises(ValueError, match="datasets"):
        build_run(dataclasses.replace(cfg, craft_cache_path=training_cache.craft_cache_path, overwrite=True))
