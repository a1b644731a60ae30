"""`craft-vla build-cache`: features equal a frozen forward, 2 ranks equal 1, kill -9 resumes, damage and
foreign fingerprints are refused, and a directory left by another build is never reused."""

import dataclasses
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import SEED_FORMULATION, cli_args, torchrun

from craft_vla.cli import build_cache as build_cache_cli
from craft_vla.cli.main import main as craft_vla
from craft_vla.craft import AnchorSpec
from craft_vla.craft.cache import BUILD, META, AnchorCache, CacheError
from craft_vla.data.collate import VLACollator
from craft_vla.training import setup
from craft_vla.training.build_cache import build_cache
from craft_vla.training.config import FinetuneConfig
from craft_vla.training.finetune import build_run

RAW, AQ = 2, 4


def cache_config(data_root: Path, tmp: Path, **overrides) -> FinetuneConfig:
    base = FinetuneConfig(
        model="tiny",
        data_root_dir=data_root,
        dataset_name="toy_tabletop",
        run_root_dir=tmp / "runs",
        use_lora=False,
        image_aug=False,
        use_craft=True,
        craft_raw_layer=RAW,
        craft_aq_layer=AQ,
        batch_size=4,
        craft_cache_shard_size=8,
        craft_cache_path=str(tmp / "cache"),
        **SEED_FORMULATION,
    )
    return dataclasses.replace(base, **overrides)


@pytest.fixture(scope="module")
def built(rlds_root, tmp_path_factory):
    """A 1-rank build of the toy dataset in several shards (38 samples, 8 per shard)."""
    cfg = cache_config(rlds_root, tmp_path_factory.mktemp("built"))
    cache = build_cache(cfg)
    assert len(cache.meta["shards"]) >= 4
    return cfg, cache


def file_stamps(root: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime) of every complete shard: both change when a shard is rewritten."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in root.glob("shard-*.safetensors")}


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, S, D), (B, S) bool -> (B, D)."""
    return (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)


def spread(f: torch.Tensor) -> float:
    """S = mean over samples of ||f - mean f||², f (N, F)."""
    return ((f - f.mean(0)) ** 2).sum(1).mean().item()


def test_cached_features_equal_a_direct_frozen_forward(built):
    cfg, cache = built
    run = build_run(dataclasses.replace(cfg, use_craft=False, run_id_override="reference"))
    policy, dataset = run.state.model.eval(), run.dataset
    assert cache.fingerprint["weights_sha256"] == run.snapshot_sha256
    assert sorted(cache.sample_ids.tolist()) == sorted(dataset.sample_ids.tolist())
    collate = VLACollator(pad_token_id=dataset.tokenizer.pad_token_id)
    cached, direct = [], []
    with torch.no_grad():
        for ids in np.array_split(dataset.sample_ids, 7):  # other batches than the build's
            batch = collate([dataset[int(i)] for i in ids])
            features = policy(batch, anchor_spec=AnchorSpec(RAW, AQ))
            # by hand from the full (untruncated) forward: masked means of layer m at C_R, layer M at C_AQ
            hidden = policy.vla.hidden_states(batch)
            raw_mask, aq_mask = policy.bridge_positions(
                batch["attention_mask"], policy.vla.num_patches(batch["pixel_values"])
            )
            by_hand = torch.cat([masked_mean(hidden[RAW], raw_mask), masked_mean(hidden[AQ], aq_mask)], dim=1)
            torch.testing.assert_close(features, by_hand, rtol=1e-5, atol=1e-5)
            cached.append(cache.features(ids))
            direct.append(features)
    cached, direct = torch.cat(cached), torch.cat(direct)
    assert cached.dtype == torch.float32 and cached.shape == (len(dataset), 2 * policy.config.hidden_size)
    torch.testing.assert_close(cached, direct, rtol=1e-5, atol=1e-6)
    f, d = cached.double(), policy.config.hidden_size
    for part, columns in {"all": slice(None), "raw": slice(0, d), "aq": slice(d, None)}.items():
        assert cache.spread[part] == pytest.approx(spread(f[:, columns]), rel=1e-9), part
    assert cache.spread["mean_norm_sq"] == pytest.approx((f**2).sum(1).mean().item(), rel=1e-9)


def test_per_token_layers_and_text_are_cached_with_their_part_sizes(rlds_root, tmp_path):
    """Patch tokens of two layers and the text mean at both: one cache row equals the policy's features,
    and meta.json records each part's size and spread (the balanced ε reads them)."""
    cfg = cache_config(
        rlds_root, tmp_path, craft_pool="tokens", craft_raw_layer=-1, craft_raw_layers=(1, 3), craft_text=True
    )
    cfg = dataclasses.replace(cfg, craft_parts="raw")
    cache = build_cache(cfg)
    run = build_run(dataclasses.replace(cfg, use_craft=False, run_id_override="reference"))
    policy, dataset = run.state.model.eval(), run.dataset
    d, patches = policy.config.hidden_size, policy.config.num_patches
    assert cache.part_dims == {"raw": 2 * patches * d, "text": 2 * d}
    assert cache.fingerprint["raw_layer"] == [1, 3] and cache.fingerprint["text"] is True
    ids = dataset.sample_ids[:5]
    batch = VLACollator(pad_token_id=dataset.tokenizer.pad_token_id)([dataset[int(i)] for i in ids])
    with torch.no_grad():
        features = policy(batch, anchor_spec=setup.anchor_spec(cfg, policy.config.llm.num_hidden_layers))
    torch.testing.assert_close(cache.features(ids), features, rtol=1e-5, atol=1e-6)
    f = cache.features(cache.sample_ids).double()
    assert cache.spread["text"] == pytest.approx(spread(f[:, -2 * d :]), rel=1e-9)


def test_two_rank_build_equals_one_rank_build(built, tmp_path):
    cfg, cache = built
    # loading in a worker process per rank (the DataLoader path; the 1-rank build uses the prefetch thread)
    two = dataclasses.replace(cfg, distributed="ddp", num_workers=1, craft_cache_path=str(tmp_path / "two"))
    torchrun(two, module="craft_vla.cli.build_cache")
    other = AnchorCache(two.craft_cache_path, verify_checksums=True)
    assert other.fingerprint == cache.fingerprint
    assert [s["file"] for s in other.meta["shards"]] == [s["file"] for s in cache.meta["shards"]]
    assert other.sample_ids.tolist() == cache.sample_ids.tolist()
    torch.testing.assert_close(
        other.features(other.sample_ids), cache.features(cache.sample_ids), rtol=1e-6, atol=1e-7
    )


def test_kill_minus_nine_then_rerun_resumes_and_equals_uninterrupted(rlds_root_large, tmp_path):
    cfg = cache_config(
        rlds_root_large,
        tmp_path,
        batch_size=1,
        craft_cache_shard_size=1,
        craft_cache_path=str(tmp_path / "killed"),
    )
    args, root = cli_args(cfg), Path(cfg.craft_cache_path)
    cmd = [sys.executable, "-m", "craft_vla.cli.build_cache", *args]
    proc = subprocess.Popen(
        cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 120
    while proc.poll() is None and time.time() < deadline and not any(root.glob("shard-*.safetensors")):
        time.sleep(0.001)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = sorted(root.glob("shard-*.safetensors"))
    assert done, "the build wrote no shard within 120 s"
    if (root / META).exists():  # it finished before the kill landed: interrupt it by hand instead
        for path in [*done[len(done) // 2 :], root / META]:
            path.unlink()
    before = file_stamps(root)
    assert build_cache_cli.main(args) == 0  # the same command again
    after = file_stamps(root)
    assert {name: after[name] for name in before} == before  # complete shards were skipped, not recomputed
    assert not list(root.glob("*.tmp"))
    whole = tmp_path / "whole"
    assert build_cache_cli.main(cli_args(dataclasses.replace(cfg, craft_cache_path=str(whole)))) == 0
    resumed, uninterrupted = (json.loads((r / META).read_text()) for r in (root, whole))
    assert len(after) == len(uninterrupted["shards"]) > len(before)
    for key in ("fingerprint", "spread", "num_samples", "shards"):  # shard checksums equal: the same bytes
        assert resumed[key] == uninterrupted[key], key


def damage(shard: Path, how: str) -> None:
    data = bytearray(shard.read_bytes())
    if how == "truncate":
        data = data[:-100]
    else:
        data[-1] ^= 0x40  # one bit of the last feature value
    shard.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["truncate", "alter"])
def test_damaged_shard_is_detected_by_verify_and_by_training(built, tmp_path, capsys, how):
    cfg, cache = built
    root = tmp_path / "cache"
    shutil.copytree(cache.root, root)
    assert craft_vla(["cache", "verify", str(root)]) == 0
    shard = root / cache.meta["shards"][2]["file"]
    damage(shard, how)
    capsys.readouterr()
    assert craft_vla(["cache", "verify", str(root)]) == 1
    assert shard.name in capsys.readouterr().err
    assert craft_vla(["cache", "info", str(root)]) == 1  # never describes data that is not there
    assert shard.name in capsys.readouterr().err
    with pytest.raises(CacheError, match=re.escape(shard.name)):
        build_run(dataclasses.replace(cfg, craft_cache_path=str(root)))


@pytest.mark.parametrize("interrupted", [False, True])
@pytest.mark.parametrize("how", ["truncate", "alter"])
def test_a_rerun_rebuilds_a_damaged_shard_and_never_hides_it(built, tmp_path, capsys, how, interrupted):
    """The README's resume step on a finished (or interrupted) cache with one damaged shard: the rerun finds
    the shard by its recorded checksum, rebuilds it, and ends with the uninterrupted build's bytes."""
    cfg, cache = built
    root = interrupted_copy(cache, tmp_path / "cache") if interrupted else tmp_path / "cache"
    if not interrupted:
        shutil.copytree(cache.root, root)
    damaged = root / cache.meta["shards"][1]["file"]
    damage(damaged, how)
    capsys.readouterr()
    assert build_cache_cli.main(cli_args(dataclasses.replace(cfg, craft_cache_path=str(root)))) == 0
    assert damaged.name in capsys.readouterr().out  # said so on the console
    assert damaged.read_bytes() == (cache.root / damaged.name).read_bytes()
    rebuilt = json.loads((root / META).read_text())
    for key in ("fingerprint", "spread", "num_samples", "shards"):
        assert rebuilt[key] == cache.meta[key], key
    assert craft_vla(["cache", "verify", str(root)]) == 0


def test_a_bit_flip_in_any_shard_is_rebuilt_by_a_rerun(built, tmp_path, capsys):
    """Every shard in turn, one flipped bit at a seeded position: found, rebuilt, the original bytes back."""
    import numpy as np

    cfg, cache = built
    root = tmp_path / "cache"
    shutil.copytree(cache.root, root)
    rng = np.random.default_rng(18)
    for shard in cache.meta["shards"]:
        path = root / shard["file"]
        data = bytearray(path.read_bytes())
        position = int(rng.integers(len(data)))
        data[position] ^= 1 << int(rng.integers(8))
        path.write_bytes(bytes(data))
        capsys.readouterr()
        assert build_cache_cli.main(cli_args(dataclasses.replace(cfg, craft_cache_path=str(root)))) == 0
        assert path.name in capsys.readouterr().out, (path.name, position)
        assert path.read_bytes() == (cache.root / path.name).read_bytes()
    assert craft_vla(["cache", "verify", str(root)]) == 0


def foreign_config(cfg: FinetuneConfig, field: str, tmp_path: Path, other_data: Path) -> FinetuneConfig:
    """A run that differs from the cache in `field` only."""
    if field == "image_size":  # a cache built for 64 px images
        root = tmp_path / "cache"
        shutil.copytree(cfg.craft_cache_path, root)
        meta = json.loads((root / META).read_text())
        meta["fingerprint"]["image_size"] = 64
        (root / META).write_text(json.dumps(meta))
        return dataclasses.replace(cfg, craft_cache_path=str(root))
    changes = {
        "raw_layer": {"craft_raw_layer": 1},
        "aq_layer": {"craft_aq_layer": 3},
        "pool": {"craft_pool": "tokens"},
        "weights_sha256": {"seed": 8},  # another random initialisation: other snapshot weights
        "datasets": {"data_root_dir": other_data},  # same dataset name, other episodes: other statistics
    }
    return dataclasses.replace(cfg, **changes[field])


@pytest.mark.parametrize(
    "field", ["raw_layer", "aq_layer", "pool", "image_size", "datasets", "weights_sha256"]
)
def test_each_fingerprint_mismatch_is_refused_naming_the_field(built, rlds_root_large, tmp_path, field):
    cfg, _ = built
    with pytest.raises(CacheError) as err:
        build_run(foreign_config(cfg, field, tmp_path, rlds_root_large))
    assert re.findall(r"^  (\w+): cache has", str(err.value), flags=re.M) == [field]


def interrupted_copy(cache: AnchorCache, root: Path) -> Path:
    """A copy of `cache` as an interrupted build leaves it: no meta.json, the last shard missing."""
    shutil.copytree(cache.root, root)
    (root / META).unlink()
    (root / cache.meta["shards"][-1]["file"]).unlink()
    return root


@pytest.mark.parametrize(
    "change, fields",
    [
        ({"craft_aq_layer": 3}, ["aq_layer"]),
        ({"craft_cache_max_samples": 37}, ["num_samples", "sample_ids_sha256"]),
        ({"craft_cache_shard_size": 9}, ["shard_size"]),
    ],
)
def test_build_refuses_the_shards_of_another_build(built, tmp_path, change, fields):
    cfg, cache = built
    n, size = len(cache), cfg.craft_cache_shard_size
    assert math.ceil(
        min(n, change.get("craft_cache_max_samples", n)) / change.get("craft_cache_shard_size", size)
    ) == math.ceil(n / size)
    root = interrupted_copy(
        cache, tmp_path / "cache"
    )  # same shard file names, other contents: must not be reused
    stamps = file_stamps(root)
    with pytest.raises(CacheError) as err:
        build_cache(dataclasses.replace(cfg, craft_cache_path=str(root), **change))
    assert re.findall(r"^  (\w+): directory has", str(err.value), flags=re.M) == fields
    assert file_stamps(root) == stamps and not (root / META).exists()


def test_build_refuses_shards_without_a_build_record(built, tmp_path, capsys):
    cfg, cache = built
    root = interrupted_copy(cache, tmp_path / "cache")
    (root / BUILD).unlink()
    assert build_cache_cli.main(cli_args(dataclasses.replace(cfg, craft_cache_path=str(root)))) == 1
    assert f"no {BUILD}" in capsys.readouterr().err
    assert not (root / META).exists() and not (root / BUILD).exists()


def test_prefetched_yields_every_chunk_in_order_and_raises_the_loaders_error():
    """The GPU loading path: `prefetched` equals loading in a loop, and a failing load surfaces."""
    from craft_vla.training.anchor_cache import prefetched

    chunks = [[0, 1], [2], [3, 4, 5]]
    loaded = list(prefetched(lambda ids: {"ids": torch.tensor(ids)}, chunks))
    assert [batch["ids"].tolist() for batch in loaded] == chunks
    assert list(prefetched(lambda ids: {}, [])) == []

    def broken(ids):
        if ids == [2]:
            raise ValueError("corrupt sample 2")
        return {"ids": torch.tensor(ids)}

    batches = prefetched(broken, chunks)
    assert next(batches)["ids"].tolist() == [0, 1]
    with pytest.raises(ValueError, match="corrupt sample 2"):
        next(batches)
