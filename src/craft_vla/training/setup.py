"""Build everything a fine-tuning run needs from a resolved `FinetuneConfig`.

Model (preset, Prismatic VLM run dir, or HF-format VLA dir), tokenizer, datasets, LoRA, the
anchor set for CRaFT. The loop in `finetune.py` only wires these together.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from craft_vla.craft import AnchorSpec
from craft_vla.craft.cache import AnchorCache, CacheError
from craft_vla.data.collate import VLACollator
from craft_vla.data.dataset import SampleConfig, VLADataset
from craft_vla.data.formats import Reader, open_reader, reader_format, reader_statistics
from craft_vla.data.image import ImageNormalization
from craft_vla.data.normalize import DatasetStatistics
from craft_vla.data.prompt import vla_prompt_text
from craft_vla.data.sampler import EpochSampler
from craft_vla.data.tokenizers import WordTokenizer
from craft_vla.data.transforms import infer_dataset_kind
from craft_vla.models import VLAAdapterConfig, VLAAdapterPolicy, build_policy, get_config, loading
from craft_vla.models.attention import set_matmul_attention
from craft_vla.training.anchor_cache import weights_fingerprint
from craft_vla.training.config import FinetuneConfig

VIEWS = ("primary", "wrist")
IMAGE_PREPROCESSING_VERSION = 2


def dataset_names(cfg: FinetuneConfig) -> list[str]:
    return sorted(n for n in cfg.dataset_name.split("+") if n)


def open_readers(cfg: FinetuneConfig, split: str = "train") -> list[Reader]:
    """The datasets <data_root_dir>/<name>, each RLDS or LeRobot (`--dataset_format`, default: its layout)."""
    root, features = Path(cfg.data_root_dir), cfg.lerobot_features or None
    return [
        open_reader(root / name, split, dataset_format=cfg.dataset_format, lerobot_features=features)
        for name in dataset_names(cfg)
    ]


def tokenizer_sources(cfg: FinetuneConfig) -> list[str]:
    """Where the run's tokenizer is read, in order: --tokenizer_path, --config_file_path (VLA-Adapter's
    directory of the processor and tokenizer files), --vlm_path."""
    return [p for p in (cfg.tokenizer_path, cfg.config_file_path, cfg.vlm_path) if p]


def processor_sources(cfg: FinetuneConfig) -> list[str]:
    """Where the run's image constants (preprocessor_config.json) are read, in order: --config_file_path,
    --vlm_path; none holding one: the release's constants."""
    return [p for p in (cfg.config_file_path, cfg.vlm_path) if p]


def base_config(cfg: FinetuneConfig) -> VLAAdapterConfig:
    """The architecture before the run's data-dependent fields: the VLM directory's (--model wins)."""
    return loading.vlm_config(cfg.vlm_path, cfg.model) if cfg.vlm_path else get_config(cfg.model)


def load_tokenizer(cfg: FinetuneConfig, readers: Sequence[Reader]):
    """The run's tokenizer (`models.loading.load_tokenizer` over `tokenizer_sources`), or, for a preset model
    without any of those paths, a word-level vocabulary of the datasets' instructions."""
    sources = tokenizer_sources(cfg)
    if sources:
        return loading.load_tokenizer(sources, base_config(cfg).llm.vocab_size)
    instructions = sorted({str(i) for reader in readers for i in episode_instructions(reader)})
    return WordTokenizer.from_texts(vla_prompt_text(i) for i in instructions)


def episode_instructions(reader: Reader) -> set[str]:
    """Every language instruction of a dataset (records are parsed, images not decoded)."""
    found: set[str] = set()
    for episode in range(reader.num_episodes):
        values = reader.read_episode(episode, decode_images=False)["steps"]["language_instruction"]
        found.update(v.decode() if isinstance(v, bytes) else str(v) for v in np.atleast_1d(values))
    return found


def model_config(
    cfg: FinetuneConfig,
    base: VLAAdapterConfig,
    action_dim: int,
    proprio_dim: int | None,
    vocab_size: int | None,
) -> VLAAdapterConfig:
    """The model configuration with this run's data-dependent fields."""
    fields: dict[str, Any] = dict(
        num_images_in_input=cfg.num_images_in_input,
        use_proprio=cfg.use_proprio,
        use_pro_version=cfg.use_pro_version,
        action_dim=action_dim,
        head_input_noise_std=cfg.head_input_noise_std,
    )
    if proprio_dim is not None:
        fields["proprio_dim"] = proprio_dim
    config = dataclasses.replace(base, **fields)
    if vocab_size is not None and vocab_size > config.llm.vocab_size:
        raise ValueError(
            f"the tokenizer has {vocab_size} tokens but the model's vocabulary has {config.llm.vocab_size}"
        )
    return config


def build_model(
    cfg: FinetuneConfig, action_dim: int, proprio_dim: int | None, vocab_size: int
) -> tuple[VLAAdapterPolicy, str]:
    """The policy to fine-tune and the sha256 of its VLM weights (the snapshot's fingerprint)."""
    if cfg.vlm_path:
        vlm = loading.load_vlm(cfg.vlm_path, cfg.model)
        config = model_config(cfg, vlm.config, action_dim, proprio_dim, vocab_size)
        policy = VLAAdapterPolicy(config, vla=vlm)
    else:
        base = get_config(cfg.model)
        base = dataclasses.replace(base, llm=dataclasses.replace(base.llm, vocab_size=max(vocab_size, 8)))
        policy = build_policy(model_config(cfg, base, action_dim, proprio_dim, None))
    return policy, weights_fingerprint(policy.vla.state_dict())


@dataclass
class Prepared:
    """What finetune and build-cache build first from a config: the data, its tokenizer and statistics, and
    the model."""

    readers: list[Reader]
    tokenizer: Any
    statistics: dict[str, DatasetStatistics]
    policy: VLAAdapterPolicy
    snapshot_sha256: str  # of the VLM weights the run starts from: the anchor cache's fingerprint
    anchor_readers: list[Reader]  # --craft_anchor_dataset_name's datasets; empty: anchors on `readers`


def prepare(cfg: FinetuneConfig) -> Prepared:
    """Readers, tokenizer, statistics and model, in one order and under one seed, so that build-cache's
    snapshot is exactly the model fine-tuning starts from (a preset's random initialisation included)."""
    torch.manual_seed(cfg.seed)  # the same initialisation in every command and on every rank
    readers, anchors = open_readers(cfg), anchor_readers(cfg)
    tokenizer = load_tokenizer(cfg, readers + anchors)  # a word vocabulary covers both
    statistics = {r.name: reader_statistics(r, infer_dataset_kind(r.name)) for r in readers}
    action_dims = {s.action.dim for s in statistics.values()}
    if len(action_dims) != 1:
        raise ValueError(
            f"the datasets of a mixture must share an action dimension, found {sorted(action_dims)}"
        )
    first = statistics[min(statistics)]
    proprio_dim = first.proprio.dim if cfg.use_proprio and first.proprio is not None else None
    policy, snapshot_sha256 = build_model(cfg, action_dims.pop(), proprio_dim, tokenizer.vocab_size)
    return Prepared(readers, tokenizer, statistics, policy, snapshot_sha256, anchors)


def sample_config(cfg: FinetuneConfig, model: VLAAdapterConfig, augment: bool) -> SampleConfig:
    return SampleConfig(
        image_size=model.image_size,
        image_views=VIEWS[: cfg.num_images_in_input],
        use_proprio=cfg.use_proprio,
        augment=augment,
        chunk_len=model.chunk_length,
        num_action_queries=model.num_action_queries,
        seed=cfg.seed,
        action_dim=model.action_dim,
        image_normalization=ImageNormalization.from_directories(*processor_sources(cfg)),
    )


class StepBatches(Sampler):
    """Batches of `batch_size` (sample_id, epoch) keys from an EpochSampler, continuing across epochs.

    A batch may span an epoch boundary, so `sampler.advance(batch_size)` after each consumed batch
    keeps the saved cursor exact.
    """

    def __init__(self, sampler: EpochSampler, batch_size: int) -> None:
        self.sampler, self.batch_size = sampler, batch_size

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        batch: list[tuple[int, int]] = []
        while True:
            for key in self.sampler:
                batch.append(key)
                if len(batch) == self.batch_size:
                    yield batch
                    batch = []


def batch_loader(
    dataset: VLADataset,
    sampler: EpochSampler,
    batch_size: int,
    collate: VLACollator,
    num_workers: int,
    seed: int,
) -> DataLoader:
    """A DataLoader over `sampler` with its own generator, so creating it draws no global random numbers."""
    return DataLoader(
        dataset,
        batch_sampler=StepBatches(sampler, batch_size),
        collate_fn=collate,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=num_workers > 0,
    )


def anchor_readers(cfg: FinetuneConfig) -> list[Reader]:
    """The readers of `--craft_anchor_dataset_name` (none when the anchors are read on the training data, or
    CRaFT is off: plain SFT stays bit-identical whatever this flag says)."""
    if not (cfg.use_craft and cfg.craft_anchor_dataset_name):
        return []
    return open_readers(dataclasses.replace(cfg, dataset_name=cfg.craft_anchor_dataset_name))


def anchor_dataset(cfg: FinetuneConfig, prepared: Prepared) -> VLADataset:
    """The anchor inputs, un-augmented: the training datasets, or `--craft_anchor_dataset_name`'s samples.

    Another dataset is normalised with the training statistics: the anchor features read images and the
    prompt only (the VLM never sees actions or proprio), so its own statistics would change nothing."""
    readers, statistics = prepared.readers, prepared.statistics
    if prepared.anchor_readers:
        first = statistics[min(statistics)]
        readers = prepared.anchor_readers
        statistics = {r.name: first for r in readers}
    config = sample_config(cfg, prepared.policy.config, augment=False)
    return VLADataset(readers, prepared.tokenizer, config, statistics=statistics)


def to_device(batch: dict, device: torch.device) -> dict:
    return {
        k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()
    }


def anchor_spec(cfg: FinetuneConfig, num_layers: int) -> AnchorSpec:
    """m = L/2 (or the layers of --craft_raw_layers) and M = L unless given."""
    raw = cfg.craft_raw_layer if cfg.craft_raw_layer >= 0 else num_layers // 2
    if cfg.craft_raw_layers:
        raw = tuple(cfg.craft_raw_layers)
    aq = cfg.craft_aq_layer if cfg.craft_aq_layer >= 0 else num_layers
    spec = AnchorSpec(raw, aq, cfg.craft_pool, cfg.craft_parts, text=cfg.craft_text)
    if max(spec.layers) > num_layers:
        raise ValueError(f"anchor layers m={raw}, M={aq} exceed the LLM's {num_layers} layers")
    return spec


def uses_bf16(cfg: FinetuneConfig, device: torch.device) -> bool:
    """bf16 autocast on CUDA unless `--precision fp32`; float32 on CPU unless `--precision bf16`."""
    return cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")


def autocast_for(cfg: FinetuneConfig, device: torch.device):
    """A context-manager factory for the run's precision (the anchor cache is built under the same one)."""
    if not uses_bf16(cfg, device):
        return contextlib.nullcontext
    return lambda: torch.autocast(device.type, dtype=torch.bfloat16)


def place_model(policy: VLAAdapterPolicy, cfg: FinetuneConfig, device: torch.device) -> VLAAdapterPolicy:
    """Move the policy to `device`; bf16 on a CPU computes attention with matmuls (`models.attention`).

    The trainer and the cache builder both place the model here, so they run the same kernels.
    """
    if uses_bf16(cfg, device) and device.type == "cpu":
        set_matmul_attention(policy)
    return policy.to(device)


def anchor_fingerprint(
    spec: AnchorSpec, snapshot_sha256: str, dataset: VLADataset, tokenizer: Any, precision: str = "fp32"
) -> dict[str, Any]:
    """What an anchor cache must have been built from to serve this run (compared field by field)."""
    c = dataset.config
    fingerprint = {
        "weights_sha256": snapshot_sha256,
        "precision": precision,
        "raw_layer": list(spec.raw_layer) if isinstance(spec.raw_layer, tuple) else spec.raw_layer,
        **({"text": True} if spec.text else {}),  # absent when off: caches built before it stay valid
        "aq_layer": spec.aq_layer,
        "pool": spec.pool,
        "parts": spec.parts,
        "image_size": c.image_size,
        "image_views": list(c.image_views),
        "image_normalization": dataclasses.asdict(dataset.normalization),
        "center_crop_area": c.center_crop_area,
        # 2: TensorFlow's crop_and_resize arithmetic and uint8 conversion (issue 14); caches made under 1 hold
        # other pixels
        "image_preprocessing": IMAGE_PREPROCESSING_VERSION,
        "num_action_queries": c.num_action_queries,
        "system_prompt": c.system_prompt,
        "tokenizer": f"{type(tokenizer).__name__}:{tokenizer.vocab_size}",
        "datasets": {name: statistics_sha256(dataset.statistics[name]) for name in dataset.dataset_names},
        "num_samples": int(len(dataset)),
    }
    # formats other than RLDS only, so that an RLDS cache built before LeRobot input keeps its fingerprint
    formats = {r.name: reader_format(r) for r in dataset.readers if reader_format(r)["format"] != "rlds"}
    if formats:
        fingerprint["dataset_formats"] = formats
    return json.loads(json.dumps(fingerprint))  # the form it has after a round trip through meta.json


def open_anchor_cache(cfg: FinetuneConfig, fingerprint: dict[str, Any]) -> AnchorCache:
    """The run's anchor cache, checksums verified, fingerprint matched (a cache of a subset is fine)."""
    cache = AnchorCache(cfg.craft_cache_path, verify_checksums=True)
    cache.check_fingerprint(fingerprint, ignore=("num_samples",))
    return cache


def anchor_ids(cache: AnchorCache, dataset: VLADataset) -> np.ndarray:
    """The cache's sample ids, all of which must be samples of the run's dataset."""
    ids = np.asarray(cache.sample_ids, dtype=np.int64)
    unknown = np.setdiff1d(ids, dataset.sample_ids)
    if len(unknown):
        raise CacheError(
            f"{cache.root}: {len(unknown)} cached ids are not samples of this run's data "
            f"(e.g. {unknown[:3].tolist()})"
        )
    return ids


def statistics_sha256(stats: DatasetStatistics) -> str:
    return hashlib.sha256(json.dumps(stats.to_json(), sort_keys=True).encode()).hexdigest()
