"""Epoch sampler over sample ids: seeded shuffles, disjoint equal shares per rank, resumable cursor.

Epoch e's order is a permutation of all ids drawn from (seed, e); rank r of W takes positions
r, r + W, r + 2W, ... of it. With `remainder="drop"` (default) the last N mod W ids of the
permutation are left out of that epoch (a different few each epoch), so every rank gets
N // W ids and no id is seen twice; with "pad" the permutation is extended by its first ids so
every id is seen and each rank gets ceil(N / W) (a few ids twice per epoch).

The sampler yields (sample_id, epoch) pairs (the epoch seeds the augmentation of `VLADataset`).
Prefetching DataLoaders draw ahead of training, so the position saved in a checkpoint is the one
the trainer reports: call `advance(n)` after n samples of this rank were consumed (optimizer
step done); `state_dict()` returns that position and `load_state_dict()` restarts there. With a
DataLoader that drops the last partial batch, call `set_epoch(e)` when epoch e begins so the
dropped tail is not counted as pending.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from torch.utils.data import Sampler


class EpochSampler(Sampler):
    """Shuffled (or ordered), rank-sharded epochs over `sample_ids` with a saveable cursor."""

    def __init__(
        self,
        sample_ids: np.ndarray,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        remainder: str = "drop",
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), found {rank}")
        if remainder not in ("drop", "pad"):
            raise ValueError(f"remainder must be 'drop' or 'pad', found {remainder!r}")
        self.sample_ids = np.asarray(sample_ids, dtype=np.int64)
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.shuffle, self.remainder = shuffle, remainder
        n = len(self.sample_ids)
        self.samples_per_rank = n // world_size if remainder == "drop" else -(-n // world_size)
        if self.samples_per_rank == 0:
            raise ValueError(f"{n} samples cannot give every one of {world_size} ranks a sample")
        self._start = (0, 0)  # (epoch, position) where the next iteration starts
        self._consumed = (0, 0)  # (epoch, position) reported by the trainer

    def epoch_ids(self, epoch: int) -> np.ndarray:
        """This rank's ids for `epoch`, in order: (samples_per_rank,) int64."""
        n = len(self.sample_ids)
        order = np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle else np.arange(n)
        total = self.samples_per_rank * self.world_size
        order = np.resize(order, total) if total > n else order[:total]
        return self.sample_ids[order[self.rank :: self.world_size]]

    def __len__(self) -> int:
        return self.samples_per_rank - self._start[1]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, position = self._start
        for sample_id in self.epoch_ids(epoch)[position:]:
            yield int(sample_id), epoch
        self._start = (epoch + 1, 0)

    def set_epoch(self, epoch: int) -> None:
        """Start the next iteration in `epoch`: at its beginning, or where a restored state left it."""
        if self._start[0] != epoch:
            self._start = (epoch, 0)
        if self._consumed[0] != epoch:
            self._consumed = (epoch, 0)

    def advance(self, num_samples: int) -> None:
        """Record that `num_samples` more samples of this rank were consumed by training."""
        epoch, position = self._consumed
        position += num_samples
        epoch, position = epoch + position // self.samples_per_rank, position % self.samples_per_rank
        self._consumed = (epoch, position)

    def state_dict(self) -> dict[str, Any]:
        epoch, position = self._consumed
        return {
            "epoch": epoch,
            "position": position,
            "seed": self.seed,
            "world_size": self.world_size,
            "num_samples": len(self.sample_ids),
            "shuffle": self.shuffle,
            "remainder": self.remainder,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume at a saved position; the sampler's configuration must match the saved one."""
        mine = self.state_dict()
        mismatched = {
            k: (state.get(k), mine[k])
            for k in ("seed", "world_size", "num_samples", "shuffle", "remainder")
            if state.get(k) != mine[k]
        }
        if mismatched:
            raise ValueError(
                f"sampler state does not match this sampler (saved, current): {mismatched}; resume with the "
                "same data, seed and number of ranks"
            )
        self._start = self._consumed = (int(state["epoch"]), int(state["position"]))
