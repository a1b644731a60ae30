"""The offline anchor cache: the frozen snapshot's features f~ per sample id, fingerprinted.

A directory:
    build.json                         what the shards are computed for (fingerprint, sample ids, shard size)
    meta.json                          format version, fingerprint, feature spread S, shard list
    shard-00000-of-00002.safetensors   "sample_ids" int64 (N,), "features" (N, F)

`build.json` is written first, shards are written to a temporary name and renamed when complete, each
with its checksum beside it (`shard-....safetensors.sha256`), so an interrupted or repeated build skips
exactly the shards whose bytes still have their checksum (only if `build.json` matches: the shards of
another build are never reused) and rebuilds the others; `meta.json` is written last. The reader
memory-maps the shards.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

FORMAT_VERSION = 1
META = "meta.json"
BUILD = "build.json"
_NUMPY_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64}


REBUILD = "rerun the same `craft-vla build-cache` command: it rebuilds damaged or missing shards"


class CacheError(ValueError):
    """A cache that is incomplete, altered, or built for another model, data or preprocessing."""


def shard_name(index: int, count: int) -> str:
    return f"shard-{index:05d}-of-{count:05d}.safetensors"


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_shard(path: Path, sample_ids: torch.Tensor, features: torch.Tensor) -> None:
    """Write one shard atomically: (N,) int64 ids and (N, F) features, and its checksum beside it.

    The checksum is recorded before the shard takes its name, so every complete shard can be verified
    when a rerun of the build decides whether to keep it.
    """
    if sample_ids.ndim != 1 or features.ndim != 2 or len(sample_ids) != len(features):
        raise ValueError(
            "shard needs ids (N,) and features (N, F), got "
            f"{tuple(sample_ids.shape)} and {tuple(features.shape)}"
        )
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tensors = {"sample_ids": sample_ids.to(torch.int64).contiguous(), "features": features.contiguous()}
    save_file(tensors, str(tmp))
    _atomic_write_bytes(checksum_path(path), file_sha256(tmp).encode())
    os.replace(tmp, path)


def checksum_path(shard: Path) -> Path:
    return shard.with_name(shard.name + ".sha256")


def recorded_checksum(shard: Path) -> str | None:
    """The checksum written with `shard`, else the one its cache's meta.json lists, else None."""
    if checksum_path(shard).exists():
        return checksum_path(shard).read_text().strip()
    meta = shard.parent / META
    if meta.exists():
        listed = {s["file"]: s["sha256"] for s in json.loads(meta.read_text()).get("shards", [])}
        return listed.get(shard.name)
    return None


def shard_is_intact(shard: Path) -> bool:
    """Whether `shard` exists and its bytes have the checksum recorded when it was written."""
    recorded = recorded_checksum(shard)
    return shard.exists() and recorded is not None and file_sha256(shard) == recorded


def build_plan(fingerprint: Mapping[str, Any], sample_ids: Iterable[int], shard_size: int) -> dict[str, Any]:
    """What a build computes: the fingerprint, the ordered sample ids (hashed) and the shard size.

    Shard j holds ids[j·shard_size : (j+1)·shard_size], so two builds may share shards only if all three
    agree.
    """
    ids = np.asarray(list(sample_ids), dtype=np.int64)
    plan = {
        "format_version": FORMAT_VERSION,
        "fingerprint": dict(fingerprint),
        "num_samples": int(len(ids)),
        "sample_ids_sha256": hashlib.sha256(ids.tobytes()).hexdigest(),
        "shard_size": int(shard_size),
    }
    return json.loads(json.dumps(plan))  # the form it has after a round trip through build.json


def start_build(root: Path, plan: Mapping[str, Any], write: bool) -> None:
    """Claim `root` for the build `plan`, or refuse if its shards were computed for another build.

    A directory with `build.json` resumes only if the plans are equal; one with shards or `meta.json`
    but no `build.json` is of unknown origin and refused. With `write` (one rank), record the plan.
    """
    root = Path(root)
    path = root / BUILD
    if path.exists():
        found = json.loads(path.read_text())
        differ = compare_fingerprints(found.get("fingerprint", {}), plan["fingerprint"])
        differ += [m for m in compare_fingerprints(found, plan) if m.field != "fingerprint"]
        if differ:
            lines = "\n".join(
                f"  {m.field}: directory has {m.cache!r}, this build has {m.run!r}" for m in differ
            )
            raise CacheError(
                f"{root} holds the shards of another build:\n{lines}\n"
                "Build into a new --craft_cache_path, or delete this directory to rebuild it."
            )
        return
    leftovers = sorted(p.name for p in root.glob("shard-*.safetensors")) + (
        [META] if (root / META).exists() else []
    )
    if leftovers:
        raise CacheError(
            f"{root} holds {leftovers[:3]}... but no {BUILD}: they may come from another build and cannot be "
            "resumed. Build into a new --craft_cache_path, or delete this directory."
        )
    if write:
        _atomic_write_bytes(path, json.dumps(dict(plan), indent=2, sort_keys=True).encode())


def _memmap_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Read-only numpy views of the tensors in a safetensors file, without loading them."""
    with open(path, "rb") as f:
        header_len = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(header_len))
    size = path.stat().st_size
    arrays = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        if 8 + header_len + end > size:
            raise CacheError(f"{path}: truncated (tensor {name!r} ends past the end of the file); {REBUILD}")
        dtype = _NUMPY_DTYPES.get(info["dtype"])
        if dtype is None:
            raise CacheError(
                f"{path}: tensor {name!r} has dtype {info['dtype']}; the cache stores F32, F16 or I64"
            )
        arrays[name] = np.memmap(
            path, dtype=dtype, mode="r", offset=8 + header_len + start, shape=tuple(info["shape"])
        )
    return arrays


def feature_spread(features: np.ndarray, part_dims: Mapping[str, int]) -> dict[str, float]:
    """S = mean over samples of ||f − mean f||², overall and per part (e.g. {"raw": D, "aq": D}), float64."""
    f = np.asarray(features, dtype=np.float64)
    centred_sq = ((f - f.mean(axis=0)) ** 2).sum(axis=0) / len(f)  # per feature dim
    spread = {"all": float(centred_sq.sum()), "mean_norm_sq": float((f**2).sum(axis=1).mean())}
    start = 0
    for name, dim in part_dims.items():
        spread[name] = float(centred_sq[start : start + dim].sum())
        start += dim
    return spread


EPSILON_MODES = ("relative", "balanced", "absolute")


def part_names(spread: Mapping[str, float]) -> list[str]:
    """The anchored parts a cache records a spread for ("raw", "text", "aq"), in feature order."""
    return [name for name in spread if name not in ("all", "mean_norm_sq")]


def part_weights(spread: Mapping[str, float], part_dims: Mapping[str, int]) -> torch.Tensor:
    """(F,) float32: 1/S_part for every feature of each part, so that each part's drift counts in units of
    its own spread (the balanced ε mode): parts of very different scales (per-token patch states, the
    mean of a few text tokens) then each weigh as much in L_ret."""
    return torch.cat([torch.full((dim,), 1.0 / spread[name]) for name, dim in part_dims.items()]).float()


def resolve_epsilon(epsilon: float, mode: str, spread: Mapping[str, float], parts: str) -> float:
    """The budget ε in L_ret's units: `absolute` as given, `relative` as a fraction of the spread S of the
    anchored parts (S of "raw" or "aq" alone when only that part is anchored, of all features for "both"),
    `balanced` as a fraction of each part's own spread (L_ret weighted by `part_weights`, ε × the number of
    parts)."""
    if mode == "absolute":
        return epsilon
    if mode == "balanced":
        return epsilon * len(part_names(spread))
    if mode != "relative":
        raise ValueError(f"epsilon mode must be one of {EPSILON_MODES}, got {mode!r}")
    part = "all" if parts == "both" else parts
    if part not in spread:
        raise CacheError(
            f"the cache records no feature spread for part {part!r} (it has {sorted(spread)}); rebuild it"
        )
    return epsilon * spread[part]


def finalize_cache(
    root: Path,
    fingerprint: Mapping[str, Any],
    num_shards: int,
    part_dims: Mapping[str, int],
    extra: Mapping[str, Any] | None = None,
) -> dict:
    """Check that every shard is there, compute S, write meta.json last (atomically)."""
    root = Path(root)
    names = [shard_name(i, num_shards) for i in range(num_shards)]
    missing = [n for n in names if not (root / n).exists()]
    if missing:
        raise CacheError(f"{root}: shards missing: {missing}; rerun the build to complete them")
    damaged = [n for n in names if not shard_is_intact(root / n)]
    if damaged:
        raise CacheError(f"{root}: shards {damaged} differ from their recorded checksums; {REBUILD}")
    arrays = [_memmap_safetensors(root / n) for n in names]
    ids = np.concatenate([a["sample_ids"] for a in arrays])
    features = np.concatenate([a["features"] for a in arrays])
    if len(np.unique(ids)) != len(ids):
        raise CacheError(f"{root}: some sample ids appear in more than one row")
    meta = {
        "format_version": FORMAT_VERSION,
        "fingerprint": dict(fingerprint),
        "num_samples": int(len(ids)),
        "feature_dim": int(features.shape[1]),
        "feature_dtype": str(features.dtype),
        "part_dims": dict(part_dims),
        "spread": feature_spread(features, part_dims),
        "shards": [
            {"file": n, "num_samples": int(len(a["sample_ids"])), "sha256": file_sha256(root / n)}
            for n, a in zip(names, arrays)
        ],
        **dict(extra or {}),
    }
    _atomic_write_bytes(root / META, json.dumps(meta, indent=2, sort_keys=True).encode())
    return meta


@dataclass
class FingerprintMismatch:
    field: str
    cache: Any
    run: Any


def compare_fingerprints(cache: Mapping[str, Any], run: Mapping[str, Any]) -> list[FingerprintMismatch]:
    """Every field whose value differs between the cache's fingerprint and the run's."""
    return [
        FingerprintMismatch(k, cache.get(k), run.get(k))
        for k in sorted(set(cache) | set(run))
        if cache.get(k) != run.get(k)
    ]


class AnchorCache:
    """Read side: f~ for a batch of sample ids, from memory-mapped shards."""

    def __init__(self, root: Path | str, verify_checksums: bool = False) -> None:
        self.root = Path(root)
        meta_path = self.root / META
        if not meta_path.exists():
            raise CacheError(
                f"{self.root}: no {META}; the build did not finish (rerun it to "
                "resume) or this is not a cache"
            )
        self.meta = json.loads(meta_path.read_text())
        if self.meta.get("format_version") != FORMAT_VERSION:
            raise CacheError(
                f"{self.root}: cache format {self.meta.get('format_version')}, this craft-vla "
                f"reads {FORMAT_VERSION}; rebuild it"
            )
        if verify_checksums:
            self.verify()
        arrays = []
        for shard in self.meta["shards"]:
            path = self.root / shard["file"]
            if not path.exists():
                raise CacheError(f"{path}: shard missing; {REBUILD}")
            a = _memmap_safetensors(path)
            if len(a["sample_ids"]) != shard["num_samples"]:
                raise CacheError(
                    f"{path}: {len(a['sample_ids'])} samples, meta.json says "
                    f"{shard['num_samples']}; {REBUILD}"
                )
            arrays.append(a)
        self._features = [a["features"] for a in arrays]
        ids = np.concatenate([a["sample_ids"] for a in arrays])
        shard_of = np.concatenate([np.full(len(a["sample_ids"]), i) for i, a in enumerate(arrays)])
        row_of = np.concatenate([np.arange(len(a["sample_ids"])) for a in arrays])
        order = np.argsort(ids, kind="stable")
        self.sample_ids = ids[order]
        self._shard, self._row = shard_of[order], row_of[order]

    def verify(self) -> None:
        """Recompute every shard's checksum against meta.json; raise naming the first altered shard."""
        for shard in self.meta["shards"]:
            path = self.root / shard["file"]
            if not path.exists():
                raise CacheError(f"{path}: shard missing; {REBUILD}")
            if file_sha256(path) != shard["sha256"]:
                raise CacheError(f"{path}: checksum differs from meta.json (truncated or altered); {REBUILD}")

    def __len__(self) -> int:
        return len(self.sample_ids)

    @property
    def fingerprint(self) -> dict[str, Any]:
        return self.meta["fingerprint"]

    @property
    def spread(self) -> dict[str, float]:
        return self.meta["spread"]

    @property
    def part_dims(self) -> dict[str, int]:
        """Feature dims of each anchored part, in feature order."""
        return self.meta["part_dims"]

    def check_fingerprint(self, run: Mapping[str, Any], ignore: Iterable[str] = ()) -> None:
        """Refuse a cache built from another model, layers, pooling, preprocessing or data."""
        ignored = set(ignore)
        mismatches = [m for m in compare_fingerprints(self.fingerprint, run) if m.field not in ignored]
        if mismatches:
            lines = "\n".join(
                f"  {m.field}: cache has {m.cache!r}, this run has {m.run!r}" for m in mismatches
            )
            raise CacheError(
                f"anchor cache {self.root} does not match this run:\n{lines}\n"
                "Rebuild it with `craft-vla build-cache` for this run's settings."
            )

    def features(self, sample_ids: Iterable[int] | torch.Tensor) -> torch.Tensor:
        """f~ (N, F) float32 for these sample ids (every id must be in the cache)."""
        ids = np.asarray(torch.as_tensor(sample_ids).cpu(), dtype=np.int64)
        pos = np.searchsorted(self.sample_ids, ids)
        pos = np.minimum(pos, len(self.sample_ids) - 1)
        missing = ids[self.sample_ids[pos] != ids]
        if len(missing):
            raise CacheError(
                f"{self.root}: sample ids not in the cache: "
                f"{missing[:5].tolist()}... (built for another dataset?)"
            )
        rows = [self._features[s][r] for s, r in zip(self._shard[pos], self._row[pos])]
        return torch.from_numpy(np.stack(rows).astype(np.float32))
