"""The anchor cache format: round trip, spread, fingerprints, truncation and alteration."""

import json

import numpy as np
import pytest
import torch

from craft_vla.craft.cache import (
    AnchorCache,
    CacheError,
    feature_spread,
    finalize_cache,
    shard_name,
    write_shard,
)

FINGERPRINT = {"weights_sha256": "abc", "raw_layer": 2, "aq_layer": 4, "pool": "mean", "datasets": ["toy"]}


def build(tmp_path, num_shards=2, n=10, dim=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randperm(1000, generator=gen)[:n]
    feats = torch.randn(n, dim, generator=gen)
    for i, (id_chunk, f_chunk) in enumerate(zip(ids.chunk(num_shards), feats.chunk(num_shards))):
        write_shard(tmp_path / shard_name(i, num_shards), id_chunk, f_chunk)
    meta = finalize_cache(tmp_path, FINGERPRINT, num_shards, {"raw": dim // 2, "aq": dim - dim // 2})
    return ids, feats, meta


def test_round_trip_by_id(tmp_path):
    ids, feats, meta = build(tmp_path)
    cache = AnchorCache(tmp_path, verify_checksums=True)
    assert len(cache) == 10 and meta["num_samples"] == 10
    order = torch.tensor([7, 0, 3])
    assert torch.equal(cache.features(ids[order]), feats[order])
    with pytest.raises(CacheError, match="not in the cache"):
        cache.features(torch.tensor([5000]))


def test_spread_matches_definition(tmp_path):
    _, feats, meta = build(tmp_path)
    f = feats.double().numpy()
    expected = np.mean(np.sum((f - f.mean(0)) ** 2, axis=1))
    assert meta["spread"]["all"] == pytest.approx(expected, rel=1e-10)
    assert meta["spread"]["raw"] + meta["spread"]["aq"] == pytest.approx(expected, rel=1e-10)
    assert feature_spread(np.ones((4, 3)), {"all": 3})["all"] == 0.0


def test_fingerprint_mismatch_names_each_field(tmp_path):
    build(tmp_path)
    cache = AnchorCache(tmp_path)
    cache.check_fingerprint(dict(FINGERPRINT))
    with pytest.raises(CacheError) as err:
        cache.check_fingerprint({**FINGERPRINT, "aq_layer": 3, "pool": "tokens"})
    assert "aq_layer" in str(err.value) and "pool" in str(err.value) and "raw_layer" not in str(err.value)


def test_truncated_and_altered_shards_are_detected(tmp_path):
    build(tmp_path)
    path = tmp_path / shard_name(1, 2)
    data = path.read_bytes()
    path.write_bytes(data[:-8])
    with pytest.raises(CacheError, match="truncated"):
        AnchorCache(tmp_path)
    altered = bytearray(data)
    altered[-1] ^= 0xFF
    path.write_bytes(bytes(altered))
    AnchorCache(tmp_path)  # same size: only the checksum can tell
    with pytest.raises(CacheError, match="checksum"):
        AnchorCache(tmp_path, verify_checksums=True)


def test_incomplete_build_is_refused(tmp_path):
    write_shard(tmp_path / shard_name(0, 2), torch.arange(3), torch.zeros(3, 4))
    with pytest.raises(CacheError, match="missing"):
        finalize_cache(tmp_path, FINGERPRINT, 2, {"raw": 2, "aq": 2})
    with pytest.raises(CacheError, match="did not finish"):
        AnchorCache(tmp_path)
    assert not (tmp_path / "meta.json").exists()
    assert json.dumps(FINGERPRINT)


@pytest.mark.parametrize("parts", ["both", "raw", "aq"])
def test_relative_epsilon_is_a_fraction_of_the_anchored_parts_spread(parts):
    """ε × S of the anchored part (float64 reference), the one rule the trainer and the demo share."""
    from craft_vla.craft.cache import feature_spread, resolve_epsilon

    rng = np.random.default_rng(0)
    features = rng.normal(size=(50, 7)) * np.arange(1, 8)
    dims = {"raw": 3, "aq": 4}
    spread = feature_spread(features, dims)
    columns = {"both": slice(0, 7), "raw": slice(0, 3), "aq": slice(3, 7)}[parts]
    f = features[:, columns]
    reference = 0.2 * float(((f - f.mean(axis=0)) ** 2).sum(axis=1).mean())
    assert resolve_epsilon(0.2, "relative", spread, parts) == pytest.approx(reference, rel=1e-12)
    assert resolve_epsilon(0.2, "absolute", spread, parts) == 0.2
    with pytest.raises(ValueError, match="epsilon mode must be one of"):
        resolve_epsilon(0.2, "fraction", spread, parts)


def test_balanced_epsilon_weighs_each_part_by_its_own_spread():
    """L_ret with `part_weights` = Σ_part ||Δf_part||² / S_part (float64 reference); ε = rel × the parts."""
    import torch

    from craft_vla.craft import retention_loss
    from craft_vla.craft.cache import feature_spread, part_weights, resolve_epsilon

    rng = np.random.default_rng(1)
    dims = {"raw": 5, "text": 2, "aq": 3}
    f_tilde = rng.normal(size=(40, 10)) * np.r_[np.full(5, 30.0), np.full(2, 0.1), np.full(3, 2.0)]
    f = f_tilde + rng.normal(size=(40, 10)) * 0.05
    spread = feature_spread(f_tilde, dims)
    reference, start = 0.0, 0
    for dim in dims.values():
        part = slice(start, start + dim)
        s_part = ((f_tilde[:, part] - f_tilde[:, part].mean(0)) ** 2).sum(1).mean()
        reference += ((f[:, part] - f_tilde[:, part]) ** 2).sum(1).mean() / s_part
        start += dim
    got = retention_loss(torch.tensor(f), torch.tensor(f_tilde), part_weights(spread, dims))
    assert float(got) == pytest.approx(reference, rel=1e-5)
    assert resolve_epsilon(0.2, "balanced", spread, "both") == pytest.approx(0.6)
