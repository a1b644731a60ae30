"""What every dataset reader shares (RLDS, LeRobot): sizes, its name in messages, and its index files."""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np


class EpisodeReader:
    """Base of the readers: a subclass sets `name`, `version`, `split`, `data_dir`, `index_dir` and
    `episode_lengths` (steps per episode of the split), `episode_cache_size` and an empty OrderedDict
    `_cache`, and defines `read_episode` and `get_step`."""

    name: str
    version: str
    split: str
    data_dir: Path
    index_dir: Path
    episode_lengths: np.ndarray
    episode_cache_size: int
    _cache: OrderedDict[int, Any]

    @property
    def num_episodes(self) -> int:
        return len(self.episode_lengths)

    @property
    def num_steps(self) -> int:
        return int(self.episode_lengths.sum())

    def __len__(self) -> int:
        return self.num_episodes

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.name} {self.version} {self.split}: "
            f"{self.num_episodes} episodes, {self.num_steps} steps)"
        )

    def cache_path(self, suffix: str) -> Path:
        """A file in the index directory that belongs to this dataset split (`suffix` tells what it holds)."""
        digest = hashlib.sha1(str(self.data_dir.resolve()).encode()).hexdigest()[:16]
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{self.name}-{self.version}-{self.split}-{digest}-{suffix}")
        return self.index_dir / f"{safe}.json"

    def _cached_record(self, episode: int) -> Any | None:
        """The parsed record of `episode` if it is among the last `episode_cache_size` read, else None."""
        if episode not in self._cache:
            return None
        self._cache.move_to_end(episode)
        return self._cache[episode]

    def _remember(self, episode: int, record: Any) -> Any:
        """Keep `record` among the last `episode_cache_size` records read (at least one); returns it."""
        self._cache[episode] = record
        while len(self._cache) > max(self.episode_cache_size, 1):
            self._cache.popitem(last=False)
        return record

    def read_episode(self, episode: int, decode_images: bool = True) -> dict[str, Any]:
        raise NotImplementedError

    def get_step(self, episode: int, step: int) -> dict[str, Any]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for episode in range(self.num_episodes):
            yield self.read_episode(episode)

    def iter_steps(self) -> Iterator[tuple[int, int, dict[str, Any]]]:
        """(episode, step, step dict) for every step, in storage order."""
        for episode, length in enumerate(self.episode_lengths):
            for step in range(int(length)):
                yield episode, step, self.get_step(episode, step)
