"""VLA-Adapter's checkpoint formats: the HF-format VLA directory and the fine-tuning checkpoint layout.

HF-format directory: `config.json` (Prismatic/OpenVLA fields, plus our full config under "craft_vla")
and `model.safetensors` (or sharded with `model.safetensors.index.json`) holding the keys of
`vla_hf_model.tsv`. Fine-tuning checkpoint (VLA-Adapter's layout, per step):

    lora_adapter/                              peft adapter (or config.json + model.safetensors when not LoRA)
    action_head--{step}_checkpoint.pt          state dict, `module.` prefix accepted on load
    proprio_projector--{step}_checkpoint.pt
    dataset_statistics.json                    when given
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from craft_vla.models.config import LLMConfig, VLAAdapterConfig, config_from_dict, config_to_dict, get_config
from craft_vla.models.lora import is_lora, load_lora_adapter, save_lora_adapter
from craft_vla.models.policy import VLAAdapterPolicy, build_policy, unwrap_vlm
from craft_vla.models.state_dicts import (
    CheckpointMismatchError,
    load_strict,
    materialize,
    read_tensors,
    save_json,
    save_tensors,
    strip_prefix,
    tied_duplicates,
)
from craft_vla.models.vlm import VLM

VISION_BACKBONE_ID = "dinosiglip-vit-so-224px"
ARCH_SPECIFIER = "no-align+fused-gelu-mlp"
WEIGHTS = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
LORA_DIR = "lora_adapter"


def component_file(directory: str | Path, component: str, step: int | str) -> Path:
    """`{component}--{step}_checkpoint.pt`; step "latest" gives VLA-Adapter's `--latest_checkpoint.pt`."""
    suffix = "latest_checkpoint.pt" if step == "latest" else f"{step}_checkpoint.pt"
    return Path(directory) / f"{component}--{suffix}"


def hf_config_dict(config: VLAAdapterConfig) -> dict[str, Any]:
    """config.json of an HF-format directory: Prismatic's fields, the Qwen2 text config, and ours."""
    return {
        "architectures": ["OpenVLAForActionPrediction"],
        "model_type": "openvla",
        "vision_backbone_id": VISION_BACKBONE_ID,
        "llm_backbone_id": "qwen25-0_5b-extra",
        "arch_specifier": ARCH_SPECIFIER,
        "use_fused_vision_backbone": True,
        "timm_model_ids": [config.featurizer.timm_name, config.fused_featurizer.timm_name],
        "image_resize_strategy": "resize-naive",
        "image_sizes": [config.image_size, config.image_size],
        "text_config": {"model_type": "qwen2", **config_to_dict(config)["llm"]},
        "craft_vla": config_to_dict(config),
    }


def config_from_hf(hf: Mapping[str, Any], base: VLAAdapterConfig | None = None) -> VLAAdapterConfig:
    """Our config for an HF-format config.json: our own section if present, else the release's fields.

    A released VLA-Adapter config does not record chunk, action or proprio sizes: they come from `base`
    (default: the "vla-adapter-qwen25-0.5b" preset, LIBERO values).
    """
    if "craft_vla" in hf:
        return config_from_dict(hf["craft_vla"])
    base = base or get_config("vla-adapter-qwen25-0.5b")
    vision = hf.get("vision_backbone_id", VISION_BACKBONE_ID)
    arch = hf.get("arch_specifier", ARCH_SPECIFIER)
    if vision != VISION_BACKBONE_ID or not arch.endswith("fused-gelu-mlp"):
        raise ValueError(
            f"only the {VISION_BACKBONE_ID} backbone with a fused-gelu-mlp projector is supported; "
            f"config.json has vision_backbone_id={vision!r}, arch_specifier={arch!r}"
        )
    text = dict(hf.get("text_config", {}))
    if "rope_parameters" in text and "rope_theta" not in text:
        text["rope_theta"] = text["rope_parameters"].get("rope_theta", base.llm.rope_theta)
    llm = replace(base.llm, **{f.name: text[f.name] for f in fields(LLMConfig) if f.name in text})
    image_size = int(hf.get("image_sizes", [base.image_size])[0])
    return replace(base, llm=llm, image_size=image_size)


def read_weights_dir(directory: Path) -> dict[str, Tensor]:
    """model.safetensors, or the shards named by model.safetensors.index.json."""
    if (directory / WEIGHTS).is_file():
        return read_tensors(directory / WEIGHTS)
    if (directory / WEIGHTS_INDEX).is_file():
        shards = sorted(set(json.loads((directory / WEIGHTS_INDEX).read_text())["weight_map"].values()))
        return {k: v for shard in shards for k, v in read_tensors(directory / shard).items()}
    raise FileNotFoundError(f"{directory} has neither {WEIGHTS} nor {WEIGHTS_INDEX}")


def save_vla(vla: nn.Module, directory: str | Path, state_dict: Mapping[str, Tensor] | None = None) -> None:
    """Write an HF-format VLA directory (config.json + model.safetensors); the tied LM head is not duplicated.

    `state_dict`: the VLM's full state dict when the caller gathered it (e.g. under FSDP2).
    """
    vlm = unwrap_vlm(vla)
    directory = Path(directory)
    tensors = dict(state_dict if state_dict is not None else vlm.state_dict())
    for key in tied_duplicates(vlm):
        tensors.pop(key, None)
    save_tensors(tensors, directory / WEIGHTS, metadata={"format": "pt"})
    save_json(hf_config_dict(vlm.config), directory / "config.json")


def load_vla(directory: str | Path, config: VLAAdapterConfig | None = None, device: str = "cpu") -> VLM:
    """Build the VLM of an HF-format directory and load it strictly (every key and shape must fit).

    `config`: overrides what config.json says (chunk/action/proprio sizes do not matter to the VLM).
    """
    directory = Path(directory)
    hf = json.loads((directory / "config.json").read_text())
    config = config or config_from_hf(hf)
    vlm = materialize(build_policy(config, device="meta").vla, device)
    load_strict(vlm, read_weights_dir(directory), f"HF-format VLA checkpoint {directory}")
    return vlm


def load_component(module: nn.Module, path: str | Path) -> None:
    """Load an action head or proprio projector `.pt` (saved with or without DDP's `module.` prefix)."""
    load_strict(module, strip_prefix(read_tensors(path)), f"checkpoint {path}")


def save_policy_checkpoint(
    policy: VLAAdapterPolicy,
    directory: str | Path,
    step: int | str,
    state_dict: Mapping[str, Tensor] | None = None,
    dataset_statistics: Mapping[str, Any] | None = None,
) -> Path:
    """Write VLA-Adapter's checkpoint layout for `step` into `directory`; every file is written atomically.

    `state_dict`: the policy's full state dict when the caller gathered it (FSDP2); default `policy.state_dict()`.
    """
    directory = Path(directory)
    parts = split_policy_state_dict(state_dict if state_dict is not None else policy.state_dict())
    if is_lora(policy.vla):
        save_lora_adapter(policy.vla, directory / LORA_DIR, parts["vla"])
    else:
        save_vla(policy.vla, directory, parts["vla"])
    save_tensors(parts["action_head"], component_file(directory, "action_head", step))
    if policy.proprio_projector is not None:
        save_tensors(parts["proprio_projector"], component_file(directory, "proprio_projector", step))
    if dataset_statistics is not None:
        save_json(dict(dataset_statistics), directory / "dataset_statistics.json")
    return directory


def load_policy_checkpoint(
    policy: VLAAdapterPolicy, directory: str | Path, step: int | str
) -> VLAAdapterPolicy:
    """Load a checkpoint written by `save_policy_checkpoint` (or VLA-Adapter) into `policy`, strictly.

    With a `lora_adapter/` folder the adapter is loaded into `policy.vla` (wrapping it if needed); otherwise
    the directory must hold the full VLA in HF format. Returns the policy.
    """
    directory = Path(directory)
    if (directory / LORA_DIR).is_dir():
        load_lora_adapter(policy, directory / LORA_DIR)
    else:
        load_strict(unwrap_vlm(policy.vla), read_weights_dir(directory), f"VLA weights in {directory}")
    load_component(policy.action_head, component_file(directory, "action_head", step))
    if policy.proprio_projector is not None:
        load_component(policy.proprio_projector, component_file(directory, "proprio_projector", step))
    return policy


def load_released_policy(
    directory: str | Path, step: int | str, config: VLAAdapterConfig | None = None, device: str = "cpu"
) -> VLAAdapterPolicy:
    """A released VLA-Adapter directory (merged HF-format VLA + head + proprio projector) as one policy."""
    directory = Path(directory)
    vlm = load_vla(directory, config, device)
    with torch.device("meta"):
        policy = VLAAdapterPolicy(vlm.config, vla=vlm)
    for part in (policy.action_head, policy.proprio_projector):
        if part is not None:
            materialize(part, device)
    load_component(policy.action_head, component_file(directory, "action_head", step))
    if policy.proprio_projector is not None:
        load_component(policy.proprio_projector, component_file(directory, "proprio_projector", step))
    return policy


def split_policy_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, dict[str, Tensor]]:
    """{"vla": ..., "action_head": ..., "proprio_projector": ...} with the part prefix removed."""
    parts: dict[str, dict[str, Tensor]] = {"vla": {}, "action_head": {}, "proprio_projector": {}}
    for key, value in strip_prefix(state_dict).items():
        part, _, rest = key.partition(".")
        if part not in parts:
            raise CheckpointMismatchError(
                f"policy state dict key {key!r} belongs to no part of {sorted(parts)}"
            )
        parts[part][rest] = value
    return parts
