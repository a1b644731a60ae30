"""`craft-vla build-cache`: the frozen snapshot's anchor features for the run's data, with the run's flags.

Pass the same model, data and `--craft_*` flags as the fine-tuning run and `--craft_cache_path OUT`:
the fingerprint then matches by construction. Under torchrun every rank builds disjoint shards.
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader

from craft_vla.craft.cache import AnchorCache
from craft_vla.data.collate import VLACollator
from craft_vla.training import setup
from craft_vla.training.anchor_cache import build_anchor_cache, prefetched
from craft_vla.training.config import FinetuneConfig
from craft_vla.training.distributed import init_distributed


def build_cache(cfg: FinetuneConfig) -> AnchorCache | None:
    """Build (or resume building) the anchor cache at `cfg.craft_cache_path`; returns it on rank 0."""
    if not cfg.craft_cache_path:
        raise ValueError("pass --craft_cache_path DIR: where to write the anchor cache")
    env = init_distributed(cfg.distributed, cfg.threads)
    prepared = setup.prepare(cfg)  # exactly the model and data the fine-tuning run starts from
    tokenizer, policy, snapshot_sha256 = prepared.tokenizer, prepared.policy, prepared.snapshot_sha256
    setup.place_model(policy, cfg, env.device)
    dataset = setup.anchor_dataset(cfg, prepared)
    spec = setup.anchor_spec(cfg, policy.config.llm.num_hidden_layers)
    ids = dataset.sample_ids
    if cfg.craft_cache_max_samples and cfg.craft_cache_max_samples < len(ids):
        ids = np.sort(np.random.default_rng(cfg.seed).choice(ids, cfg.craft_cache_max_samples, replace=False))
    collate = VLACollator(pad_token_id=tokenizer.pad_token_id)
    hidden = policy.config.hidden_size
    tokens = 1 if spec.pool == "mean" else None
    part_dims = {
        "raw": hidden * (tokens or policy.config.num_patches) * len(spec.raw_layers),
        "text": hidden * len(spec.raw_layers),
        "aq": hidden * (tokens or policy.config.num_action_queries),
    }
    anchored = {"raw": spec.parts in ("both", "raw"), "text": spec.text, "aq": spec.parts in ("both", "aq")}
    part_dims = {k: v for k, v in part_dims.items() if anchored[k]}
    start = time.perf_counter()

    def load_batch(batch_ids: list[int]) -> dict:
        return collate([dataset[int(i)] for i in batch_ids])

    def load_batches(chunks: list[list[int]]):
        """The collated batches of these chunks of ids: `--num_workers` loader processes, else loaded in
        this process, with a prefetch thread when the model runs on an accelerator.

        On the CPU the forward needs the same cores and the interpreter lock as the loading: a thread
        cannot overlap them and only adds lock hand-offs (anchor_cache_throughput, tiny model: build
        at 0.59-0.66 x the forward with a thread, 0.72-0.74 x without).
        """
        if cfg.num_workers > 0:
            return DataLoader(dataset, batch_sampler=chunks, collate_fn=collate, num_workers=cfg.num_workers)
        return map(load_batch, chunks) if env.device.type == "cpu" else prefetched(load_batch, chunks)

    cache = build_anchor_cache(
        policy,
        load_batches,
        ids.tolist(),
        spec,
        Path(cfg.craft_cache_path),
        setup.anchor_fingerprint(
            spec, snapshot_sha256, dataset, tokenizer, "bf16" if setup.uses_bf16(cfg, env.device) else "fp32"
        ),
        part_dims,
        env,
        batch_size=cfg.batch_size,
        shard_size=cfg.craft_cache_shard_size,
        extra_meta={"command": " ".join(shlex.quote(a) for a in sys.argv)},
        autocast=setup.autocast_for(cfg, env.device),
    )
    if cache is not None:
        print(
            f"anchor cache {cfg.craft_cache_path}: {len(cache)} samples, "
            f"feature dim {cache.meta['feature_dim']}, "
            f"spread S {cache.spread['all']:.4g}, mean ||f~||² {cache.spread['mean_norm_sq']:.4g}, "
            f"{time.perf_counter() - start:.1f} s"
        )
    return cache
