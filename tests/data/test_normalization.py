import numpy as np
import pytest
import torch

from craft_vla.data.normalize import (
    DatasetStatistics,
    NormStats,
    compute_norm_stats,
    load_dataset_statistics,
    normalize_bounds_q99,
    save_dataset_statistics,
    unnormalize_bounds_q99,
)
from craft_vla.data.rlds import RLDSReader
from craft_vla.data.statistics import compute_dataset_statistics
from craft_vla.data.transforms import libero_action, libero_proprio


def stats(q01, q99, mask, lo=None, hi=None):
    f = lambda v: np.asarray(v, dtype=np.float32)  # noqa: E731
    return NormStats(
        mean=f(q01),
        std=f(q01),
        max=f(hi if hi is not None else q99),
        min=f(lo if lo is not None else q01),
        q01=f(q01),
        q99=f(q99),
        mask=np.asarray(mask),
    )


def test_bounds_q99_on_hand_computed_values():
    s = stats(
        q01=[0.0, -1.0, 2.0, 0.0],
        q99=[2.0, 1.0, 6.0, 1.0],
        mask=[True, True, True, False],
        lo=[0.0, -1.0, 5.0, 0.0],
        hi=[2.0, 1.0, 5.0, 1.0],
    )  # dim 2 has min == max
    x = np.array([[1.0, 0.5, 3.0, 0.7], [3.0, -2.0, 4.0, 0.2]])
    # dim 0: 2(1-0)/2-1 = 0, 2(3-0)/2-1 = 2 -> clipped 1; dim 1: 2(0.5+1)/2-1 = 0.5, -2 -> -1
    # dim 2: min == max -> 0; dim 3: unmasked -> unchanged
    expected = np.array([[0.0, 0.5, 0.0, 0.7], [1.0, -1.0, 0.0, 0.2]])
    np.testing.assert_allclose(normalize_bounds_q99(x, s), expected, atol=1e-6)
    # the 1e-8 in the denominator matters when q99 - q01 is tiny: 2 * 5e-8 / 1.1e-7 - 1 = -1/11
    tiny = normalize_bounds_q99(np.array([5e-8]), stats([0.0], [1e-7], [True], hi=[1.0]))
    np.testing.assert_allclose(tiny, [-1 / 11], rtol=1e-5)


def test_unnormalize_inverts_on_masked_dims_numpy_and_torch():
    s = stats(q01=[-0.5, 0.0, 0.0], q99=[1.5, 4.0, 1.0], mask=[True, True, False], hi=[2, 5, 1])
    x = np.array([[0.25, 3.0, 0.6]], dtype=np.float32)
    y = normalize_bounds_q99(x, s)
    np.testing.assert_allclose(y, [[2 * 0.75 / 2 - 1, 2 * 3 / 4 - 1, 0.6]], atol=1e-6)
    np.testing.assert_allclose(unnormalize_bounds_q99(y, s), x, atol=1e-6)
    expected = 0.5 * (np.array([0.1, -0.3]) + 1) * (np.array([2.0, 4.0]) + 1e-8) + np.array([-0.5, 0.0])
    got = unnormalize_bounds_q99(torch.tensor([[0.1, -0.3, 0.9]]), s)
    assert isinstance(got, torch.Tensor)
    np.testing.assert_allclose(got.numpy()[0], [*expected, 0.9], atol=1e-6)


def test_compute_norm_stats_against_hand_quantiles():
    values = np.arange(101, dtype=np.float64)[:, None] * np.array([[1.0, -2.0]])
    s = compute_norm_stats(values)
    # quantile 0.01 of 0..100 (linear interpolation) is 1.0, 0.99 is 99.0
    np.testing.assert_allclose(s.q01, [1.0, -198.0])
    np.testing.assert_allclose(s.q99, [99.0, -2.0])
    np.testing.assert_allclose(s.mean, [50.0, -100.0])
    np.testing.assert_allclose(s.std, [np.sqrt(850.0), 2 * np.sqrt(850.0)], rtol=1e-6)
    assert s.mask.tolist() == [True, True]


def test_statistics_round_trip_vla_adapter_format(tmp_path):
    a = compute_norm_stats(np.random.default_rng(0).normal(size=(50, 7)), np.array([True] * 6 + [False]))
    p = compute_norm_stats(np.random.default_rng(1).normal(size=(50, 8)))
    saved = {"libero_spatial_no_noops": DatasetStatistics(a, p, 50, 3)}
    path = save_dataset_statistics(tmp_path, saved)
    assert path.name == "dataset_statistics.json"
    import json

    raw = json.loads(path.read_text())["libero_spatial_no_noops"]
    assert set(raw) == {"action", "proprio", "num_transitions", "num_trajectories"}
    assert set(raw["action"]) == {"mean", "std", "max", "min", "q01", "q99", "mask"}
    assert raw["action"]["mask"] == [True] * 6 + [False] and raw["num_transitions"] == 50
    loaded = load_dataset_statistics(path)["libero_spatial_no_noops"]
    for field in ("mean", "std", "max", "min", "q01", "q99", "mask"):
        np.testing.assert_array_equal(getattr(loaded.action, field), getattr(a, field))
        np.testing.assert_array_equal(getattr(loaded.proprio, field), getattr(p, field))
    assert (loaded.num_transitions, loaded.num_trajectories) == (50, 3)


def test_libero_transform():
    steps = {
        "action": np.array([[1, 2, 3, 4, 5, 6, -1.0], [0, 0, 0, 0, 0, 0, 1.0], [0, 0, 0, 0, 0, 0, 0.3]]),
        "observation/state": np.arange(16, dtype=np.float32).reshape(2, 8),
    }
    np.testing.assert_allclose(libero_action(steps)[:, -1], [1.0, 0.0, 0.7], atol=1e-7)
    np.testing.assert_array_equal(libero_action(steps)[0, :6], [1, 2, 3, 4, 5, 6])
    np.testing.assert_array_equal(
        libero_proprio(steps), [[0, 1, 2, 3, 4, 5, 6, 7], [8, 9, 10, 11, 12, 13, 14, 15]]
    )


def test_dataset_statistics_follow_the_libero_transform(libero_dir, episodes):
    reader = RLDSReader(libero_dir)
    s = compute_dataset_statistics(reader, "libero")
    actions = np.concatenate([e["steps"]["action"] for e in episodes])
    states = np.concatenate([e["steps"]["observation"]["state"] for e in episodes])
    gripper = 1 - np.clip(actions[:, -1], 0, 1)
    np.testing.assert_allclose(s.action.q99[-1], np.quantile(gripper, 0.99), atol=1e-6)
    np.testing.assert_allclose(s.action.q01[:6], np.quantile(actions[:, :6], 0.01, axis=0), atol=1e-6)
    np.testing.assert_allclose(
        s.proprio.max, np.concatenate([states[:, :6], states[:, -2:]], 1).max(0), atol=1e-6
    )
    assert s.action.mask.tolist() == [True] * 6 + [False] and s.proprio.mask.all()
    assert (s.num_transitions, s.num_trajectories) == (28, 5)
    cached = compute_dataset_statistics(reader, "libero")  # read from the cache this time
    np.testing.assert_array_equal(cached.action.q99, s.action.q99)
    with pytest.raises(ValueError, match="unknown dataset kind"):
        compute_dataset_statistics(reader, "nope")
