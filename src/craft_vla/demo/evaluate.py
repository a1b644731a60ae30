"""Evaluate one fine-tuned demo run: action error, closed-loop success, retention of the VLM's knowledge."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

import torch

from craft_vla.data.collate import VLACollator
from craft_vla.data.dataset import VLADataset
from craft_vla.data.normalize import load_dataset_statistics
from craft_vla.data.rlds import RLDSReader, resolve_dataset_dir
from craft_vla.eval.results import success_rates
from craft_vla.eval.tabletop import TabletopEvaluator
from craft_vla.eval.vla_policy import VLAChunkPolicy
from craft_vla.models import VLAAdapterPolicy
from craft_vla.models.loading import load_finetuned_checkpoint
from craft_vla.sim.world import WorldConfig
from craft_vla.training import setup
from craft_vla.training.config import FinetuneConfig


def load_finetuned(cfg: FinetuneConfig, run_dir: Path) -> tuple[VLAAdapterPolicy, Any, Any]:
    """The policy of a finished run (its last checkpoint, loaded as the evaluation loads it), its tokenizer
    and its dataset statistics."""
    checkpoint = load_finetuned_checkpoint(run_dir / f"step-{cfg.max_steps:06d}")
    statistics = load_dataset_statistics(run_dir / "dataset_statistics.json")
    return checkpoint.policy, checkpoint.tokenizer, statistics


@torch.no_grad()
def action_l1(
    policy: VLAAdapterPolicy,
    cfg: FinetuneConfig,
    tokenizer,
    statistics,
    data_root: Path,
    name: str,
    batch_size: int = 64,
) -> dict[str, float]:
    """L1 of the normalised action chunks on a held-out demonstration set, and of
    predicting the mean chunk."""
    reader = RLDSReader(resolve_dataset_dir(data_root, name))
    train_stats = statistics[setup.dataset_names(cfg)[0]]
    sample = dataclasses.replace(setup.sample_config(cfg, policy.config, augment=False))
    dataset = VLADataset([reader], tokenizer, sample, statistics={name: train_stats})
    collate = VLACollator(tokenizer.pad_token_id)
    errors, targets = [], []
    for start in range(0, len(dataset), batch_size):
        batch = collate([dataset[int(i)] for i in dataset.sample_ids[start : start + batch_size]])
        predicted = policy(batch).actions.float()
        errors.append((predicted - batch["actions"]).abs().mean(dim=(1, 2)))
        targets.append(batch["actions"])
    targets = torch.cat(targets)
    mean_chunk = targets.mean(dim=0, keepdim=True)
    return {
        "action_l1": float(torch.cat(errors).mean()),
        "mean_prediction_l1": float((targets - mean_chunk).abs().mean()),
    }


def closed_loop(
    policy: VLAAdapterPolicy,
    tokenizer,
    stats,
    image_size: int,
    episodes_per_task: int,
    splits: tuple[str, ...],
    tasks: tuple[str, ...],
    world: WorldConfig | None = None,
    num_envs: int = 32,
    execute_steps: int | None = None,
) -> dict[str, Any]:
    """Success rate per split (training tasks on training-like scenes, and held-out variants) with the
    training preprocessing; the policy replans after `execute_steps` actions of each chunk (None: the whole
    chunk)."""
    chunk_policy = VLAChunkPolicy(policy, tokenizer, {"tabletop": stats})
    results = {}
    for split in splits:
        evaluator = TabletopEvaluator(image_size, split, num_envs, config=world)
        episodes = evaluator.run(
            chunk_policy, tasks, episodes_per_task, execute_steps=execute_steps, progress=False
        )
        results[split] = success_rates(episodes)[evaluator.suite]
    return results


@functools.lru_cache(maxsize=2)
def retention_sets(image_size: int, scenes: int) -> tuple[Any, Any]:
    """Held-out perception scenes for the probe's fit and for every retention measurement (fixed streams)."""
    from craft_vla.sim import make_perception_set

    fit = make_perception_set(scenes, 1, seed=0, name="retention-fit", image_size=image_size)
    test = make_perception_set(scenes // 2, 8, seed=0, name="retention-test", image_size=image_size)
    return fit, test


@functools.lru_cache(maxsize=1)
def snapshot_policy(snapshot_dir: str, action_dim: int, proprio_dim: int) -> VLAAdapterPolicy:
    """The frozen snapshot as a policy (its VLM; the head is unused by the drift measurements)."""
    from craft_vla.demo.pretrain import load_snapshot

    vlm, _ = load_snapshot(snapshot_dir)
    config = dataclasses.replace(vlm.config, action_dim=action_dim, proprio_dim=proprio_dim)
    return VLAAdapterPolicy(config, vla=vlm).eval()


@torch.no_grad()
def retention_report(
    policy: VLAAdapterPolicy, cfg: FinetuneConfig, tokenizer, snapshot_dir: Path, scenes: int = 400
) -> dict[str, Any]:
    """QA accuracy through the LM head, a linear probe on the anchor features, drift per
    layer and of the anchors."""
    from craft_vla.craft import retention_loss
    from craft_vla.demo.retention import (
        anchor_features_of,
        feature_drift,
        linear_probe,
        probe_batches,
        qa_accuracy,
    )

    config = policy.config
    fit, test = retention_sets(config.image_size, scenes)
    snapshot = snapshot_policy(str(snapshot_dir), config.action_dim, config.proprio_dim)
    qa = qa_accuracy(policy, test, tokenizer)
    probe = linear_probe(policy, fit, test, tokenizer)
    spec = setup.anchor_spec(cfg, config.llm.num_hidden_layers)
    batches = list(probe_batches(test, tokenizer, config.num_action_queries, config.image_size))
    anchor_drift = retention_loss(
        anchor_features_of(policy, batches, spec), anchor_features_of(snapshot, batches, spec)
    )
    return {
        "qa": qa,
        "probe_accuracy": probe["accuracy"],
        "probe": probe,
        "anchor_drift": float(anchor_drift),
        "drift_per_layer": feature_drift(snapshot, policy, batches),
    }
