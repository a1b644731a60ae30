"""A VLA-Adapter checkpoint as the LIBERO evaluation's `ChunkPolicy`.

Loads the model with `craft_vla.models` (imported when used, so the evaluation itself needs no
torch), picks the dataset statistics of each suite, and answers a batch of observations as every
in-memory VLA does (`craft_vla.eval.vla_policy.VLAChunkPolicy`: one forward per statistics entry
through `craft_vla.models.inference.predict_actions`) with LIBERO's preprocessing: Lanczos resize
and centre crop.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from craft_vla.data.normalize import DatasetStatistics
from craft_vla.eval.libero_policy import check_fits_libero, resolve_unnorm_key
from craft_vla.eval.vla_policy import VLAChunkPolicy

CROP_AREA = 0.9  # VLA-Adapter's training random-resized-crop keeps 90 % of the area
RESIZE_METHOD = "lanczos"  # the RLDS pipeline's and OpenVLA-OFT's LIBERO resize (TF lanczos3)


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


class VLAAdapterChunkPolicy(VLAChunkPolicy):
    """`predict_chunks` for a `VLAAdapterPolicy` on LIBERO, observations grouped by statistics."""

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
        sample_config = inference_sample_config(
            config, center_crop_area=CROP_AREA if center_crop else None, resize_method=RESIZE_METHOD
        )
        super().__init__(policy.eval(), tokenizer, statistics, unnorm_keys, sample_config, normalization)
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
        use_pro_version: bool | None = None,
        head_input_bf16: bool | None = None,
    ) -> VLAAdapterChunkPolicy:
        """Load a checkpoint directory (VLA-Adapter's, or a step folder of a craft-vla run) with its
        `dataset_statistics.json`, through `craft_vla.models.loading.load_finetuned_checkpoint`."""
        import torch

        from craft_vla.data.normalize import load_dataset_statistics
        from craft_vla.models.loading import load_finetuned_checkpoint

        directory = Path(checkpoint)
        statistics = load_dataset_statistics(directory)
        unnorm_keys = {suite: resolve_unnorm_key(statistics, suite, unnorm_key) for suite in suites}
        device = resolve_device(device)
        loaded = load_finetuned_checkpoint(
            directory, step, base_vla_path, use_pro_version, head_input_bf16, device
        )
        policy = loaded.policy
        if device.startswith("cuda"):
            policy = policy.to(torch.bfloat16)  # VLA-Adapter evaluates in bf16 on GPU
        info = {
            "checkpoint": str(directory),
            "step": loaded.step,
            "device": device,
            "use_pro_version": policy.config.use_pro_version,
            "head_input_bf16": loaded.head_input_bf16,
        }
        return cls(policy, loaded.tokenizer, statistics, unnorm_keys, center_crop, loaded.normalization, info)

    def describe(self) -> dict[str, Any]:
        return dict(self.info)
