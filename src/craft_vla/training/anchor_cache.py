"""Building the anchor cache: the frozen snapshot's features for every sample, sharded over ranks.

Shard j of the build holds the samples `ids[j·S : (j+1)·S]` (S = `shard_size`) and is computed by
rank j mod world_size, so a 1-rank and an N-rank build write the same shards. A shard that already
exists is skipped: an interrupted build resumes where it stopped. `build.json`, written before any
shard, records the fingerprint, sample ids and shard size; a directory left by another build is refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from craft_vla.craft import AnchorSpec
from craft_vla.craft.cache import (
    META,
    AnchorCache,
    build_plan,
    finalize_cache,
    shard_is_intact,
    shard_name,
    start_build,
    write_shard,
)
from craft_vla.training.distributed import DistEnv, barrier


def weights_fingerprint(state_dict: Mapping[str, Tensor]) -> str:
    """sha256 over the names, shapes, dtypes and bytes of a state dict, in sorted key order."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


@torch.no_grad()
def compute_features(
    model: nn.Module,
    batch: Mapping[str, Tensor],
    spec: AnchorSpec,
    device: torch.device,
    autocast=contextlib.nullcontext,
) -> Tensor:
    """The anchor features (B, F) of one collated batch, float32 on the CPU, under
    the training run's autocast."""
    batch = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}
    with autocast():
        return model(batch, anchor_spec=spec).float().cpu()


def prefetched(
    load: Callable[[Sequence[int]], Mapping[str, Tensor]], chunks: Sequence[Sequence[int]]
) -> Iterator[Mapping[str, Tensor]]:
    """`load(chunk)` for each chunk in order, the next one loading in a thread while the caller computes.

    Decoding and collating overlap the forward (one process; worker processes: a DataLoader instead).
    """
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(load, chunks[0]) if chunks else None
        for k in range(len(chunks)):
            batch = pending.result()
            if k + 1 < len(chunks):
                pending = pool.submit(load, chunks[k + 1])
            yield batch


def build_anchor_cache(
    model: nn.Module,
    load_batches: Callable[[list[list[int]]], Iterable[Mapping[str, Tensor]]],
    sample_ids: Sequence[int],
    spec: AnchorSpec,
    out_dir: Path,
    fingerprint: Mapping[str, Any],
    part_dims: Mapping[str, int],
    env: DistEnv,
    batch_size: int = 32,
    shard_size: int = 4096,
    extra_meta: Mapping[str, Any] | None = None,
    autocast=contextlib.nullcontext,
) -> AnchorCache | None:
    """Write the cache for `sample_ids` into `out_dir`; returns it on rank 0 (None elsewhere).

    `load_batches(chunks)` yields, in order, the collated un-augmented model inputs of each chunk of ids
    (e.g. `prefetched(load_one_batch, chunks)`, or a DataLoader with `batch_sampler=chunks`).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    start_build(out_dir, build_plan(fingerprint, sample_ids, shard_size), write=env.is_main)
    barrier()  # no rank writes a shard before build.json exists
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    num_shards = max(1, math.ceil(len(sample_ids) / shard_size))
    mine = [j for j in range(num_shards) if j % env.world_size == env.rank]
    todo = {j: list(sample_ids[j * shard_size : (j + 1) * shard_size]) for j in mine}
    todo = {j: ids for j, ids in todo.items() if not shard_is_intact(out_dir / shard_name(j, num_shards))}
    damaged = [shard_name(j, num_shards) for j in todo if (out_dir / shard_name(j, num_shards)).exists()]
    if damaged:
        print(
            f"{out_dir}: {damaged} differ from their recorded checksums (altered "
            "or truncated): rebuilding them"
        )
    barrier()  # every rank has checked its shards before meta.json of an earlier build goes
    if todo and (out_dir / META).exists():
        (out_dir / META).unlink(missing_ok=True)  # the cache is incomplete until finalize writes it again
    chunks = [ids[k : k + batch_size] for ids in todo.values() for k in range(0, len(ids), batch_size)]
    batches = iter(load_batches(chunks))
    total = sum(len(ids) for ids in todo.values())
    start = time.perf_counter()
    with tqdm(
        total=total,
        desc=f"anchor cache (rank {env.rank})",
        unit="sample",
        disable=not env.is_main and total == 0,
    ) as bar:
        for j, ids in todo.items():
            features = []
            for _ in range(math.ceil(len(ids) / batch_size)):
                features.append(compute_features(model, next(batches), spec, env.device, autocast))
                bar.update(len(features[-1]))
                bar.set_postfix(
                    samples_per_s=f"{bar.n / max(time.perf_counter() - start, 1e-9):.1f}", refresh=False
                )
            write_shard(
                out_dir / shard_name(j, num_shards), torch.tensor(ids, dtype=torch.int64), torch.cat(features)
            )
    barrier()
    if not env.is_main:
        return None
    meta = finalize_cache(out_dir, fingerprint, num_shards, part_dims, extra_meta)
    cache = AnchorCache(out_dir)
    expected = sorted(int(i) for i in sample_ids)
    if cache.sample_ids.tolist() != expected:
        raise RuntimeError(
            f"{out_dir}: the cache holds {meta['num_samples']} ids, expected "
            f"exactly the {len(expected)} requested"
        )
    return cache


@dataclass
class CacheCommand:
    """`craft-vla cache info|verify PATH`: what an anchor cache was built from;
    whether every shard is intact."""

    path: Path = Path(".")  # the cache directory (--craft_cache_path of build-cache)


def cache_info(cmd: CacheCommand) -> int:
    """Print the cache's meta.json (fingerprint, spread S, sample count) without the shard list; a damaged
    cache raises CacheError (exit 1) rather than describing data that is not there."""
    meta = dict(AnchorCache(cmd.path, verify_checksums=True).meta)
    meta["shards"] = len(meta["shards"])
    print(json.dumps(meta, indent=2, sort_keys=True))
    return 0


def cache_verify(cmd: CacheCommand) -> int:
    """Check every shard against its recorded checksum; a damaged cache raises CacheError (exit 1)."""
    cache = AnchorCache(cmd.path, verify_checksums=True)
    print(f"OK: {cmd.path}: {len(cache)} samples in {len(cache.meta['shards'])} shards, checksums match")
    return 0
