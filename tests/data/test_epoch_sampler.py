import numpy as np
import pytest

from craft_vla.data.sampler import EpochSampler

IDS = np.arange(1000, 1023, dtype=np.int64) * 7  # 23 ids


def ranks(world_size, **kw):
    return [EpochSampler(IDS, seed=5, rank=r, world_size=world_size, **kw) for r in range(world_size)]


def test_each_epoch_covers_every_id_once_across_two_ranks():
    even = IDS[:22]
    samplers = [EpochSampler(even, seed=5, rank=r, world_size=2) for r in range(2)]
    for epoch in range(3):
        pairs = [list(s) for s in samplers]
        assert {e for rank in pairs for _, e in rank} == {epoch}
        seen = [[sid for sid, _ in rank] for rank in pairs]
        assert len(seen[0]) == len(seen[1]) == 11
        assert sorted(seen[0] + seen[1]) == sorted(even.tolist())
    orders = [[sid for sid, _ in EpochSampler(even, seed=5).__iter__()] for _ in range(2)]
    assert orders[0] == orders[1]


def test_epochs_reshuffle_and_yield_their_epoch():
    sampler = EpochSampler(IDS, seed=1)
    first, second = list(sampler), list(sampler)
    assert {e for _, e in first} == {0} and {e for _, e in second} == {1}
    assert [s for s, _ in first] != [s for s, _ in second]
    assert sorted(s for s, _ in first) == sorted(IDS.tolist())


def test_remainder_drop_and_pad():
    dropped = [set(s.epoch_ids(0).tolist()) for s in ranks(2)]
    assert len(dropped[0]) == len(dropped[1]) == 11 and not dropped[0] & dropped[1]
    padded = [s.epoch_ids(0).tolist() for s in ranks(2, remainder="pad")]
    assert len(padded[0]) == len(padded[1]) == 12 and set(padded[0] + padded[1]) == set(IDS.tolist())


def test_restoring_the_cursor_reproduces_the_rest_of_the_epoch():
    sampler = EpochSampler(IDS, seed=3, rank=1, world_size=2)
    list(sampler)  # epoch 0
    full_epoch = list(sampler)  # epoch 1
    resumed_from = EpochSampler(IDS, seed=3, rank=1, world_size=2)
    resumed_from.set_epoch(1)
    for _ in range(2):
        resumed_from.advance(3)  # two batches of 3 consumed
    state = resumed_from.state_dict()
    assert (state["epoch"], state["position"]) == (1, 6)
    fresh = EpochSampler(IDS, seed=3, rank=1, world_size=2)
    fresh.load_state_dict(state)
    fresh.set_epoch(1)  # a trainer's per-epoch call keeps the restored position
    assert len(fresh) == 11 - 6
    assert list(fresh) == full_epoch[6:]
    assert [e for _, e in fresh] == [2] * 11  # then the next epoch starts
    fresh.advance(11 + 11 - 6)
    assert (fresh.state_dict()["epoch"], fresh.state_dict()["position"]) == (3, 0)


def test_state_of_another_configuration_is_refused():
    state = EpochSampler(IDS, seed=3).state_dict()
    with pytest.raises(ValueError, match="seed"):
        EpochSampler(IDS, seed=4).load_state_dict(state)
