"""A VLA-Adapter checkpoint as the LIBERO evaluation's `ChunkPolicy`.

Loads the model with `craft_vla.models` (imported when used, so the evaluation itself needs no
torch), picks the dataset statistics of each suite, and answers a batch of observations with one
forward per statistics entry through `craft_vla.models.inference.predict_actions`, which applies
the training preprocessing without augmentation (resize, centre crop, normalisation, prompt,
proprio normalisation) and unnormalises the actions.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from craft_vla.data.normalize import DatasetStatistics
from craft_vla.eval.libero_policy import check_fits_libero, resolve_unnorm_key

CROP_AREA = 0.9  # VLA-Adapter's training random-resized-crop keeps 90 % of the area
RESIZE_METHOD = "lanczos"  # the RLDS pipeline's and OpenVLA-OFT's LIBERO resize (TF lanczos3)


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def load_tokenizer(directories: list[Path], vocab_size: int) -> Any:
    """The prompt tokenizer saved with the checkpoint (HF files or a word vocabulary), else Qwen2.5's BPE."""
    from craft_vla.data.tokenizers import HFQwenTokenizer, TiktokenQwenTokenizer, WordTokenizer

    for directory in directories:
        if (directory / "word_tokenizer.json").is_file():
            return WordTokenizer.load(directory / "word_tokenizer.json")
        if (directory / "tokenizer.json").is_file() or (directory / "vocab.json").is_file():
            return HFQwenTokenizer(directory)
    if vocab_size == 151936:
        return TiktokenQwenTokenizer()
    raise FileNotFoundError(
        f"no tokenizer files (tokenizer.json or word_tokenizer.json) in {[str(d) for d in directories]} "
        f"for a model with a {vocab_size}-token vocabulary; copy the training run's tokenizer into the checkpoint"
    )


def load_checkpoint_policy(directory: Path, step: str, base_vla_path: str, device: str) -> Any:
    """A `VLAAdapterPolicy` from a checkpoint directory in VLA-Adapter's layout.

    Full weights (config.json + model.safetensors, as released or saved without LoRA) load directly;
    a `lora_adapter/` checkpoint is applied to the VLA it was fine-tuned from (`base_vla_path`: an
    HF-format VLA directory or a Prismatic VLM run directory).
    """
    from craft_vla.models.checkpoint import LORA_DIR, load_policy_checkpoint, load_released_policy, load_vla
    from craft_vla.models.policy import VLAAdapterPolicy
    from craft_vla.models.prismatic import load_prismatic_vlm

    if not (directory / LORA_DIR).is_dir():
        if not (directory / "config.json").is_file():
            raise FileNotFoundError(
                f"{directory} is not a checkpoint: expected config.json + model.safetensors (full weights) or "
                f"{LORA_DIR}/ (LoRA), beside action_head--{step}_checkpoint.pt"
            )
        return load_released_policy(directory, step, device=device)
    if not base_vla_path:
        raise ValueError(
            f"{directory} holds a LoRA adapter: pass --base_vla_path, the VLA or Prismatic VLM it was fine-tuned from"
        )
    base = Path(base_vla_path)
    prismatic = isinstance(json.loads((base / "config.json").read_text()).get("model"), Mapping)
    vlm = load_prismatic_vlm(base, device=device) if prismatic else load_vla(base, device=device)
    policy = VLAAdapterPolicy(vlm.config, vla=vlm).to(device)
    return load_policy_checkpoint(policy, directory, step)


class VLAAdapterChunkPolicy:
    """`predict_chunks` for a `craft_vla.models.VLAAdapterPolicy`; observations grouped by statistics."""

    def __init__(
        self,
        policy: Any,
        tokenizer: Any,
        statistics: Mapping[str, DatasetStatistics],
        unnorm_keys: Mapping[str, str],
        center_crop: bool = True,
        normalization: Any = None,
        info: dict[str, Any] | None = None,
    ) -> None:
        from craft_vla.models.inference import inference_sample_config

        config = policy.config
        for key in set(unnorm_keys.values()):
            check_fits_libero(statistics[key], config.action_dim, config.use_proprio)
        self.policy = policy.eval()
        self.tokenizer = tokenizer
        self.statistics = statistics
        self.unnorm_keys = dict(unnorm_keys)  # suite -> statistics entry
        self.sample_config = inference_sample_config(
            config, center_crop_area=CROP_AREA if center_crop else None, resize_method=RESIZE_METHOD
        )
        self.normalization = normalization
        self.info = {"center_crop": center_crop, "unnorm_keys": self.unnorm_keys, **(info or {})}

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: str,
        suites: list[str],
        step: str = "latest",
        unnorm_key: str | None = None,
        center_crop: bool = True,
        base_vla_path: str = "",
        device: str = "auto",
    ) -> VLAAdapterChunkPolicy:
        """Load a checkpoint directory (ours or VLA-Adapter's) with its `dataset_statistics.json`."""
        import torch

        from craft_vla.data.image import ImageNormalization
        from craft_vla.data.normalize import load_dataset_statistics

        directory = Path(checkpoint)
        statistics = load_dataset_statistics(directory)
        unnorm_keys = {suite: resolve_unnorm_key(statistics, suite, unnorm_key) for suite in suites}
        device = resolve_device(device)
        policy = load_checkpoint_policy(directory, step, base_vla_path, device)
        if device.startswith("cuda"):
            policy = policy.to(torch.bfloat16)  # VLA-Adapter evaluates in bf16 on GPU
        sources = [directory] + ([Path(base_vla_path)] if base_vla_path else [])
        tokenizer = load_tokenizer(sources, policy.config.llm.vocab_size)
        processor = next((d for d in sources if (d / "preprocessor_config.json").is_file()), None)
        normalization = ImageNormalization.from_processor_config(processor) if processor else None
        info = {"checkpoint": str(directory), "step": step, "device": device}
        return cls(policy, tokenizer, statistics, unnorm_keys, center_crop, normalization, info)

    def describe(self) -> dict[str, Any]:
        return dict(self.info)

    def predict_chunks(self, observations: list[dict[str, Any]]) -> np.ndarray:
        """(N,) observations -> (N, T, 7) unnormalised chunks, one forward per statistics entry."""
        from craft_vla.models.inference import Observation, predict_actions

        num_images = self.policy.config.num_images_in_input
        inputs = [
            Observation([o["full_image"], o["wrist_image"]][:num_images], o["instruction"], np.asarray(o["state"]))
            for o in observations
        ]
        groups: dict[str, list[int]] = {}
        for i, obs in enumerate(observations):
            groups.setdefault(self.unnorm_keys[obs["suite"]], []).append(i)
        chunks: list[np.ndarray | None] = [None] * len(observations)
        for key, indices in groups.items():
            predicted = predict_actions(
                self.policy, [inputs[i] for i in indices], self.tokenizer, self.statistics[key],
                self.sample_config, self.normalization,
            )
            for i, chunk in zip(indices, predicted):
                chunks[i] = chunk
        return np.stack(chunks)
