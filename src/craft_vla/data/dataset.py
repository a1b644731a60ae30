"""Map-style torch Dataset over stable sample ids: RLDS steps -> VLA-Adapter training samples.

Keys are sample ids (see `ids`), or (sample_id, epoch) pairs as `EpochSampler` yields them (the
epoch only varies the augmentation). Each sample is decoded on demand, in the DataLoader worker
that asks for it: the episode's record is read and parsed, and its actions and proprio normalised,
once for all its steps (both kept for the next steps); only that step's images are decoded.
Several datasets are mixed by concatenation; the dataset index of a sample id is the dataset's
position in the name-sorted list, and each dataset keeps its own transform ("kind") and statistics.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from craft_vla.data.chunks import action_chunk
from craft_vla.data.ids import sample_ids_for_episodes, unpack_sample_id
from craft_vla.data.image import AugmentConfig, ImageNormalization, build_pixel_values, sample_augment_params
from craft_vla.data.normalize import DatasetStatistics, StatisticsError, normalize_bounds_q99, statistics_for
from craft_vla.data.prompt import OPENVLA_QWEN_SYSTEM_PROMPT, PromptTokenizer, prompt_token_ids
from craft_vla.data.rlds import RLDSReader
from craft_vla.data.statistics import compute_dataset_statistics
from craft_vla.data.transforms import DatasetKind, get_dataset_kind, infer_dataset_kind


@dataclass
class SampleConfig:
    """How a step becomes a sample (names follow VLA-Adapter's finetune flags where they exist).

    `image_views` name the cameras of the dataset kind ("primary", "wrist"); `center_crop_area`
    applies the inference centre crop when `augment` is off (set it to the training crop area
    for policies trained with augmentation); `image_normalization` holds the vision towers'
    constants (for a model with a processor, `ImageNormalization.from_directories(...)`);
    `action_dim` (optional) is checked against the data.
    """

    image_size: int = 224
    image_views: tuple[str, ...] = ("primary", "wrist")
    use_proprio: bool = True
    augment: bool = False
    augment_config: AugmentConfig = field(default_factory=AugmentConfig)
    center_crop_area: float | None = None
    chunk_len: int = 8
    num_action_queries: int = 64
    seed: int = 0
    resize_method: str = "bicubic"
    image_normalization: ImageNormalization = field(default_factory=ImageNormalization)
    system_prompt: str | None = OPENVLA_QWEN_SYSTEM_PROMPT
    action_dim: int | None = None


@dataclass(frozen=True)
class EpisodeTargets:
    """One episode's per-step inputs other than images, prepared once for all its steps.

    actions (T, A) and proprio (T, P) float32 are BOUNDS_Q99-normalised (elementwise, so a step's
    rows are bit-identical to normalising that step alone); proprio is None without `use_proprio`.
    """

    actions: np.ndarray
    proprio: np.ndarray | None
    instructions: Sequence[str]


class VLADataset(Dataset):
    """Samples {pixel_values (6·I, H, W), input_ids (S,), proprio (P,), actions (T, A), sample_id (),
    instruction str, dataset_name str} keyed by sample id.

    `statistics` maps dataset names to statistics (e.g. `load_dataset_statistics(...)`); when None
    they are computed (once, cached) from the data. `kinds` maps dataset names to transform kinds;
    by default a kind is inferred from the name ("libero*" -> libero, else identity).
    """

    def __init__(
        self,
        readers: Sequence[RLDSReader],
        tokenizer: PromptTokenizer,
        config: SampleConfig | None = None,
        statistics: Mapping[str, DatasetStatistics] | None = None,
        kinds: Mapping[str, str | DatasetKind] | None = None,
        statistics_source: str = "statistics",
    ) -> None:
        self.config = config or SampleConfig()
        self.tokenizer = tokenizer
        self.readers = sorted(readers, key=lambda r: r.name)
        names = [r.name for r in self.readers]
        if len(set(names)) != len(names):
            raise ValueError(f"dataset names must be unique in a mixture, found {names}")
        kinds = kinds or {}
        self.kinds = [get_dataset_kind(kinds[n]) if n in kinds else infer_dataset_kind(n) for n in names]
        if statistics is None:
            statistics = {r.name: compute_dataset_statistics(r, k) for r, k in zip(self.readers, self.kinds)}
        self.statistics = {n: statistics_for(statistics, n, statistics_source) for n in names}
        for reader, kind in zip(self.readers, self.kinds):
            self._check_compatible(reader, kind, statistics_source)
        dims = {
            n: (s.action.dim, s.proprio.dim if s.proprio is not None and self.config.use_proprio else None)
            for n, s in self.statistics.items()
        }
        if len(set(dims.values())) > 1:
            raise ValueError(f"datasets in one mixture must share action and proprio dims; found {dims}")
        self._prompt_cache: dict[str, torch.Tensor] = {}
        self._last_episode: tuple[tuple[int, int], EpisodeTargets] | None = None
        ids = [sample_ids_for_episodes(d, reader.episode_lengths) for d, reader in enumerate(self.readers)]
        self.sample_ids = np.concatenate(ids) if ids else np.zeros(0, dtype=np.int64)

    @property
    def normalization(self) -> ImageNormalization:
        """The image constants of the samples (`config.image_normalization`)."""
        return self.config.image_normalization

    @property
    def dataset_names(self) -> list[str]:
        return [r.name for r in self.readers]

    def _check_compatible(self, reader: RLDSReader, kind: DatasetKind, source: str) -> None:
        for view in self.config.image_views:
            if view not in kind.image_features:
                raise ValueError(
                    f"dataset kind {kind.name!r} has no camera {view!r}; it has {sorted(kind.image_features)}"
                )
            feature = f"steps/{kind.image_features[view]}"
            if feature not in reader.features or reader.features[feature].kind != "image":
                images = [k for k, s in reader.features.items() if s.kind == "image"]
                raise ValueError(
                    f"{reader.data_dir}: camera {view!r} expects image feature {feature!r}; found {images}"
                )
        action_spec = reader.features.get("steps/action")
        if action_spec is None:
            raise ValueError(f"{reader.data_dir}: no 'steps/action' feature in features.json")
        stats = self.statistics[reader.name]
        probe = {"action": np.zeros((1, *action_spec.shape), dtype=np.float32)}
        action_dim = kind.action_fn(probe).shape[-1]
        for what, expected in (
            ("the statistics", stats.action.dim),
            ("config.action_dim", self.config.action_dim),
        ):
            if expected is not None and expected != action_dim:
                raise StatisticsError(
                    f"{reader.data_dir}: action dimension {action_dim} (features.json {action_spec.shape} "
                    f"after the {kind.name!r} transform) does not match {what} ({expected}; {source}); use "
                    "statistics and a model configured for this dataset"
                )
        if self.config.use_proprio and stats.proprio is None:
            raise StatisticsError(
                f"{source}: dataset {reader.name!r} has no 'proprio' statistics but use_proprio is on"
            )

    def __len__(self) -> int:
        return len(self.sample_ids)

    def _prompt_ids(self, instruction: str) -> torch.Tensor:
        """Token ids of the prompt for `instruction`, memoised (a dataset has few distinct instructions)."""
        if instruction not in self._prompt_cache:
            ids = prompt_token_ids(
                instruction, self.tokenizer, self.config.num_action_queries, self.config.system_prompt
            )
            self._prompt_cache[instruction] = torch.tensor(ids, dtype=torch.int64)
        return self._prompt_cache[instruction]

    def _episode_targets(self, dataset: int, episode: int) -> EpisodeTargets:
        """The normalised actions, proprio and instructions of one episode; the last episode asked for is
        kept, as consecutive sample ids (a cache build, an evaluation pass) mostly share it."""
        if self._last_episode is not None and self._last_episode[0] == (dataset, episode):
            return self._last_episode[1]
        reader, kind = self.readers[dataset], self.kinds[dataset]
        stats, fields = self.statistics[reader.name], reader.step_fields(episode)
        proprio = (
            normalize_bounds_q99(kind.proprio_fn(fields), stats.proprio) if self.config.use_proprio else None
        )
        targets = EpisodeTargets(
            normalize_bounds_q99(kind.action_fn(fields), stats.action),
            proprio,
            fields[kind.instruction_feature],
        )
        self._last_episode = ((dataset, episode), targets)
        return targets

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        sample_id, epoch = (int(key[0]), int(key[1])) if isinstance(key, (tuple, list)) else (int(key), 0)
        dataset, episode, step = unpack_sample_id(sample_id)
        if dataset >= len(self.readers):
            raise IndexError(
                f"sample id {sample_id}: dataset index {dataset} but the mixture has {len(self.readers)}"
            )
        reader, kind = self.readers[dataset], self.kinds[dataset]
        targets = self._episode_targets(dataset, episode)
        if not 0 <= step < len(targets.actions):
            raise IndexError(
                f"sample id {sample_id}: step {step} out of range for episode {episode} of {reader.name}"
            )
        augment = (
            sample_augment_params(self.config.seed, sample_id, epoch, self.config.augment_config)
            if self.config.augment
            else None
        )
        images = [reader.step_image(episode, step, kind.image_features[v]) for v in self.config.image_views]
        instruction = targets.instructions[step]
        sample = {
            "pixel_values": build_pixel_values(
                images,
                self.config.image_size,
                self.normalization,
                augment,
                None if augment else self.config.center_crop_area,
                self.config.resize_method,
            ),
            "input_ids": self._prompt_ids(instruction),
            "actions": torch.from_numpy(action_chunk(targets.actions, step, self.config.chunk_len)),
            "sample_id": torch.tensor(sample_id, dtype=torch.int64),
            "instruction": instruction,
            "dataset_name": reader.name,
        }
        if targets.proprio is not None:
            sample["proprio"] = torch.from_numpy(
                targets.proprio[step].copy()
            )  # a copy: samples never alias the cache
        return sample
