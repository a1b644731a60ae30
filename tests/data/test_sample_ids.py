import numpy as np
import pytest
import torch

from craft_vla.data.ids import pack_sample_id, sample_ids_for_episodes, unpack_sample_id


def test_pack_matches_bit_layout():
    assert pack_sample_id(1, 2, 3) == 2**48 + 2 * 2**20 + 3
    assert pack_sample_id(2**15 - 1, 2**28 - 1, 2**20 - 1) == 2**63 - 1
    assert unpack_sample_id(2**48 + 2 * 2**20 + 3) == (1, 2, 3)


def test_vectorised_numpy_and_torch_round_trip():
    rng = np.random.default_rng(0)
    d, e, s = rng.integers(0, 2**15, 100), rng.integers(0, 2**28, 100), rng.integers(0, 2**20, 100)
    ids = pack_sample_id(d, e, s)
    assert ids.dtype == np.int64
    assert all(ids[i] == pack_sample_id(int(d[i]), int(e[i]), int(s[i])) for i in range(100))
    for got, want in zip(unpack_sample_id(ids), (d, e, s)):
        np.testing.assert_array_equal(got, want)
    tids = pack_sample_id(torch.from_numpy(d), torch.from_numpy(e), torch.from_numpy(s))
    assert tids.dtype == torch.int64 and torch.equal(tids, torch.from_numpy(ids))
    for got, want in zip(unpack_sample_id(tids), (d, e, s)):
        assert torch.equal(got, torch.from_numpy(want))


@pytest.mark.parametrize("args", [(2**15, 0, 0), (0, 2**28, 0), (0, 0, 2**20), (-1, 0, 0)])
def test_out_of_range_is_an_error(args):
    with pytest.raises(ValueError, match="must be in"):
        pack_sample_id(*args)


def test_sample_ids_for_episodes_enumerates_steps_in_order():
    ids = sample_ids_for_episodes(3, [2, 0, 3])
    assert [unpack_sample_id(int(i)) for i in ids] == [(3, 0, 0), (3, 0, 1), (3, 2, 0), (3, 2, 1), (3, 2, 2)]
