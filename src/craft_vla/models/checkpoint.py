"""VLA-Adapter's checkpoint formats: the HF-format VLA directory and the fine-tuning checkpoint layout.

HF-format directory: `config.json` (Prismatic/OpenVLA fields, plus our full config under "craft_vla")
and `model.safetensors` (or sharded with `model.safetensors.index.json`) holding the keys of
`vla_hf_model.tsv`. Fine-tuning checkpoint (VLA-Adapter's layout, per step):

    lora_adapter/                              peft adapter (or config.json + model.safetensors when not LoRA;
                                               both when the adapters were also saved merged)
    action_head--{step}_checkpoint.pt          state dict, `module.` prefix accepted on load; Pro or original
                                               blocks, told apart by their keys
    proprio_projector--{step}_checkpoint.pt
    dataset_statistics.json                    when given

config.json holds the policy's config (the head's and the data's sizes included) under "craft_vla".
`craft_vla.models.loading` decides what a directory is and loads it; this module reads and writes the files.
"""

from __future__ import annotations

import json
import re
import shutil
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
PEFT_PREFIX = "base_model.model."  # where peft puts the wrapped VLM's own keys


def component_file(directory: str | Path, component: str, step: int | str) -> Path:
    """`{component}--{step}_checkpoint.pt`; step "latest" gives VLA-Adapter's `--latest_checkpoint.pt`."""
    suffix = "latest_checkpoint.pt" if step == "latest" else f"{step}_checkpoint.pt"
    return Path(directory) / f"{component}--{suffix}"


def resolve_step(directory: str | Path, step: int | str) -> str:
    """The step as the files name it: "latest" is VLA-Adapter's `--latest_checkpoint.pt` when present, else
    the highest step with an action head (craft-vla's fine-tuning writes `action_head--{N}_checkpoint.pt`)."""
    directory = Path(directory)
    if component_file(directory, "action_head", step).is_file():
        return str(step)
    heads = sorted(p.name for p in directory.glob("action_head--*_checkpoint.pt"))
    steps = [int(m[1]) for name in heads if (m := re.fullmatch(r"action_head--(\d+)_checkpoint\.pt", name))]
    if step == "latest" and steps:
        return str(max(steps))
    raise FileNotFoundError(
        f"{directory} has no {component_file(directory, 'action_head', step).name}; "
        f"its action heads: {heads or 'none'}"
    )


def has_weights(directory: str | Path) -> bool:
    """Whether `directory` holds an HF-format VLA's weights (model.safetensors or its shard index)."""
    return (Path(directory) / WEIGHTS).is_file() or (Path(directory) / WEIGHTS_INDEX).is_file()


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


def save_vla(
    vla: nn.Module,
    directory: str | Path,
    state_dict: Mapping[str, Tensor] | None = None,
    config: VLAAdapterConfig | None = None,
) -> None:
    """Write an HF-format VLA directory (config.json + model.safetensors); the tied LM head is not duplicated.

    `state_dict`: the VLM's full state dict (its own keys) when the caller gathered it (e.g. under FSDP2);
    `config`: the config to record, default the VLM's (a policy records its own, with the head's sizes).
    """
    vlm = unwrap_vlm(vla)
    directory = Path(directory)
    tensors = dict(state_dict if state_dict is not None else vlm.state_dict())
    for key in tied_duplicates(vlm):
        tensors.pop(key, None)
    save_tensors(tensors, directory / WEIGHTS, metadata={"format": "pt"})
    save_json(hf_config_dict(config or vlm.config), directory / "config.json")


def lora_scaling(vla: nn.Module) -> float:
    """peft's factor on B·A: alpha / r (alpha / sqrt(r) with rsLoRA)."""
    config = vla.peft_config["default"]
    return config.lora_alpha / (config.r**0.5 if config.use_rslora else config.r)


def vlm_state_dict_of_lora(
    state_dict: Mapping[str, Tensor], scaling: float | None = None
) -> dict[str, Tensor]:
    """The VLM's own keys from the state dict of a peft-wrapped VLM (works on a gathered FSDP2 state dict).

    `scaling` None: the frozen base (base-layer weights, the original action queries); otherwise the merged
    model, as peft's `merge_and_unload` gives it: W + scaling · B·A and the trained action queries.
    """
    merged = scaling is not None
    vlm: dict[str, Tensor] = {}
    lora: dict[tuple[str, str], Tensor] = {}
    for key, value in state_dict.items():
        key = key.removeprefix(PEFT_PREFIX)
        if m := re.fullmatch(r"(.+)\.lora_([AB])\.[^.]+\.weight", key):
            lora[m[1], m[2]] = value
        elif m := re.fullmatch(r"(.+)\.modules_to_save\.[^.]+\.(.+)", key):
            if merged:
                vlm[f"{m[1]}.{m[2]}"] = value
        elif m := re.fullmatch(r"(.+)\.original_module\.(.+)", key):
            if not merged:
                vlm[f"{m[1]}.{m[2]}"] = value
        else:
            vlm[key.replace(".base_layer.", ".")] = value
    if merged:
        for (module, part), a in lora.items():
            if part == "A":
                weight = vlm[f"{module}.weight"]
                delta = lora[module, "B"].float() @ a.float()
                vlm[f"{module}.weight"] = (weight.float() + scaling * delta).to(weight.dtype)
    return vlm


def save_base_vla(
    policy: VLAAdapterPolicy, directory: str | Path, state_dict: Mapping[str, Tensor] | None = None
) -> None:
    """The frozen VLA under a LoRA policy's adapters, as an HF-format directory with the policy's config: what
    the adapters of every step of the run apply to. Written whole (a temporary directory renamed into place).

    `state_dict`: the policy's full state dict when the caller gathered it (FSDP2); default its own.
    """
    directory = Path(directory)
    tmp = directory.with_name(f".{directory.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    parts = split_policy_state_dict(state_dict if state_dict is not None else policy.state_dict())
    save_vla(policy.vla, tmp, vlm_state_dict_of_lora(parts["vla"]), policy.config)
    tmp.rename(directory)


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
    merge_lora: bool = False,
) -> Path:
    """Write VLA-Adapter's checkpoint layout for `step` into `directory`; every file is written atomically.

    `state_dict`: the policy's full state dict when the caller gathered it (FSDP2); default its own.
    `merge_lora`: with LoRA, also write the VLA with the adapters merged (VLA-Adapter's
    --merge_lora_during_training), which loads without the base.
    """
    directory = Path(directory)
    parts = split_policy_state_dict(state_dict if state_dict is not None else policy.state_dict())
    if is_lora(policy.vla):
        save_lora_adapter(policy.vla, directory / LORA_DIR, parts["vla"])
        if merge_lora:
            merged = vlm_state_dict_of_lora(parts["vla"], lora_scaling(policy.vla))
            save_vla(policy.vla, directory, merged, policy.config)
    else:
        save_vla(policy.vla, directory, parts["vla"], policy.config)
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


def head_version(head: Mapping[str, Tensor], what: str) -> bool:
    """`use_pro_version` of an action head state dict: Pro blocks have k_self / k_adapter / k_task
    projections, the original blocks one shared k_proj."""
    if any(".k_self." in key for key in head):
        return True
    if any(".k_proj." in key for key in head):
        return False
    raise CheckpointMismatchError(
        f"{what} is no VLA-Adapter action head: it has neither mlp_resnet_blocks.*.k_self (Pro blocks) nor "
        "mlp_resnet_blocks.*.k_proj (original blocks) keys"
    )


def attach_components(
    vlm: VLM,
    config: VLAAdapterConfig,
    directory: str | Path,
    step: int | str,
    device: str = "cpu",
    use_pro_version: bool | None = None,
) -> VLAAdapterPolicy:
    """A policy around `vlm` with the action head and proprio projector of `directory` at `step`.

    The head's block type comes from its keys; `use_pro_version`, when given, must agree. Head and projector
    are built on the meta device and loaded strictly (no random initialisation to pay for).
    """
    path = component_file(directory, "action_head", step)
    head = strip_prefix(read_tensors(path))
    pro = head_version(head, f"checkpoint {path}")
    if use_pro_version is not None and use_pro_version != pro:
        kind = "Pro (k_self, k_adapter, k_task)" if pro else "original (k_proj)"
        raise ValueError(
            f"use_pro_version={use_pro_version} but {path} holds an action head with {kind} blocks: "
            f"pass use_pro_version={pro}, or leave it unset to follow the checkpoint"
        )
    with torch.device("meta"):
        policy = VLAAdapterPolicy(replace(config, use_pro_version=pro), vla=vlm)
    for part in (policy.action_head, policy.proprio_projector):
        if part is not None:
            materialize(part, device)
    load_strict(policy.action_head, head, f"checkpoint {path}")
    if policy.proprio_projector is not None:
        load_component(policy.proprio_projector, component_file(directory, "proprio_projector", step))
    return policy


def load_released_policy(
    directory: str | Path, step: int | str, config: VLAAdapterConfig | None = None, device: str = "cpu"
) -> VLAAdapterPolicy:
    """A directory with full weights (merged HF-format VLA + head + proprio projector) as one policy."""
    vlm = load_vla(directory, config, device)
    return attach_components(vlm, vlm.config, directory, step, device)


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
