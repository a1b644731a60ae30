"""The Prismatic VLM run directory that VLA-Adapter's LIBERO fine-tuning starts from (spec section 9).

    config.json                       {"model": {"vision_backbone_id", "llm_backbone_id", "arch_specifier"}}
    checkpoints/latest-checkpoint.pt  {"model": {"projector", "llm_backbone", "vision_backbone"}}, each a
                                      state dict

Keys, prefixed by their part, are renamed to the HF-format names; the action queries are not stored
(they start at zero). `save_prismatic_vlm` writes such a directory (the demo's pretrained snapshot).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from craft_vla.models.checkpoint import ARCH_SPECIFIER, VISION_BACKBONE_ID
from craft_vla.models.config import VLAAdapterConfig, get_config
from craft_vla.models.policy import build_policy, unwrap_vlm
from craft_vla.models.state_dicts import (
    CheckpointMismatchError,
    load_strict,
    materialize,
    read_tensors,
    save_json,
    tied_duplicates,
)
from craft_vla.models.vlm import VLM

PARTS = ("projector", "llm_backbone", "vision_backbone")
RENAMES = (
    ("vision_backbone.dino_featurizer.", "vision_backbone.featurizer."),
    ("vision_backbone.siglip_featurizer.", "vision_backbone.fused_featurizer."),
    ("llm_backbone.llm.", "language_model."),
    ("projector.projector.0.", "projector.fc1."),
    ("projector.projector.2.", "projector.fc2."),
    ("projector.projector.4.", "projector.fc3."),
)
ACTION_QUERIES = "action_queries.weight"


def prismatic_key(key: str) -> str:
    """Our (HF-format) name of a part-prefixed Prismatic key; LayerScale `gamma` becomes `scale_factor`."""
    for old, new in RENAMES:
        if key.startswith(old):
            key = new + key[len(old) :]
            break
    return re.sub(r"\.gamma$", ".scale_factor", key)


def to_prismatic_key(key: str) -> tuple[str, str]:
    """Inverse of `prismatic_key`: our key -> (part, key inside the part) in Prismatic's names."""
    key = re.sub(r"\.scale_factor$", ".gamma", key)
    for old, new in RENAMES:
        if key.startswith(new):
            part, _, inner = (old + key[len(new) :]).partition(".")
            return part, inner
    raise CheckpointMismatchError(
        f"{key!r} belongs to no Prismatic part; expected a key under one of {PARTS}"
    )


def find_checkpoint(run_dir: Path) -> Path:
    """checkpoints/latest-checkpoint.pt, else the step-*.pt with the highest step."""
    folder = run_dir / "checkpoints"
    if (folder / "latest-checkpoint.pt").is_file():
        return folder / "latest-checkpoint.pt"
    steps = sorted(folder.glob("step-*.pt"), key=lambda p: int(re.findall(r"\d+", p.name)[0]))
    if not steps:
        raise FileNotFoundError(f"{folder} holds neither latest-checkpoint.pt nor step-*.pt")
    return steps[-1]


def prismatic_preset(run_config: Mapping[str, object]) -> str | None:
    """The preset a Prismatic run's config.json describes: its "craft_vla_preset" (written by craft-vla), else
    VLA-Adapter's Qwen2.5-0.5B VLM for a qwen25-0_5b LLM backbone; None when it names neither."""
    if run_config.get("craft_vla_preset"):
        return str(run_config["craft_vla_preset"])
    model = run_config.get("model")
    backbone = str(model.get("llm_backbone_id", "")) if isinstance(model, Mapping) else ""
    return "vla-adapter-qwen25-0.5b" if backbone.startswith("qwen25-0_5b") else None


def prismatic_config(run_config: Mapping[str, object], config: VLAAdapterConfig | None) -> VLAAdapterConfig:
    """Check the run's config.json describes a supported VLM; our config for it (`config` wins if given)."""
    model = run_config.get("model")
    if not isinstance(model, Mapping):
        raise ValueError("a Prismatic run's config.json needs a 'model' entry describing the VLM")
    vision, arch = model.get("vision_backbone_id"), str(model.get("arch_specifier", ""))
    if vision != VISION_BACKBONE_ID or not arch.endswith("fused-gelu-mlp"):
        raise ValueError(
            f"expected a {VISION_BACKBONE_ID} VLM with a {ARCH_SPECIFIER} projector, "
            f"the run's config.json has vision_backbone_id={vision!r}, arch_specifier={arch!r}"
        )
    if config is not None:
        return config
    preset = prismatic_preset(run_config)
    if preset is None:
        raise ValueError(
            f"no preset for llm_backbone_id={model.get('llm_backbone_id')!r} and no 'craft_vla_preset' in "
            "config.json: name the architecture (--model PRESET, or `config=`)"
        )
    return get_config(preset)


def prismatic_state_dict(checkpoint: Mapping[str, Mapping[str, Tensor]]) -> dict[str, Tensor]:
    """Flatten {"projector": ..., "llm_backbone": ..., "vision_backbone": ...} into our key names."""
    unknown = sorted(set(checkpoint) - set(PARTS))
    if unknown:
        raise CheckpointMismatchError(f"Prismatic checkpoint has unknown parts {unknown}; expected {PARTS}")
    return {prismatic_key(f"{part}.{k}"): v for part, sd in checkpoint.items() for k, v in sd.items()}


def load_prismatic_vlm(
    run_dir: str | Path,
    config: VLAAdapterConfig | None = None,
    vision_weights: str | Path | None = None,
    device: str = "cpu",
) -> VLM:
    """The VLM of a Prismatic run directory, loaded strictly; action queries at zero.

    `vision_weights`: a tensors file with our `vision_backbone.*` keys, for runs that did not save their
    (frozen) vision backbone.
    """
    run_dir = Path(run_dir)
    try:
        config = prismatic_config(json.loads((run_dir / "config.json").read_text()), config)
    except ValueError as error:
        raise ValueError(f"{run_dir / 'config.json'}: {error}") from error
    path = find_checkpoint(run_dir)
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    state_dict = prismatic_state_dict(checkpoint["model"])
    if vision_weights is not None:
        state_dict.update(read_tensors(vision_weights))
    if "vision_backbone" not in checkpoint["model"] and vision_weights is None:
        raise CheckpointMismatchError(
            f"{path} holds no vision_backbone weights (Prismatic skips a frozen backbone): "
            "pass vision_weights= a file with the vision_backbone.* tensors"
        )
    vlm = materialize(build_policy(config, device="meta").vla, device)
    load_strict(vlm, state_dict, f"Prismatic checkpoint {path}", not_in_checkpoint=[ACTION_QUERIES])
    with torch.no_grad():
        vlm.action_queries.weight.zero_()
    return vlm


def save_prismatic_vlm(
    vla: torch.nn.Module,
    run_dir: str | Path,
    llm_backbone_id: str,
    extra_config: Mapping[str, object] | None = None,
) -> Path:
    """Write `vla` (a VLM, peft-wrapped or not) as a Prismatic run directory; returns the checkpoint path.

    The tied LM head and the action queries are not stored (the format has no place for them);
    `extra_config` adds top-level entries to config.json (e.g. how the VLM was trained).
    """
    vlm = unwrap_vlm(vla)
    run_dir = Path(run_dir)
    skipped = tied_duplicates(vlm) | {ACTION_QUERIES}
    parts: dict[str, dict[str, Tensor]] = {part: {} for part in PARTS}
    for key, value in vlm.state_dict().items():
        if key not in skipped:
            part, inner = to_prismatic_key(key)
            parts[part][inner] = value.detach().to("cpu").clone()
    path = run_dir / "checkpoints" / "latest-checkpoint.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save({"model": parts}, tmp)
    tmp.replace(path)
    model = {
        "vision_backbone_id": VISION_BACKBONE_ID,
        "llm_backbone_id": llm_backbone_id,
        "arch_specifier": ARCH_SPECIFIER,
        "image_resize_strategy": "resize-naive",
        "llm_max_length": vlm.config.llm.max_position_embeddings,
    }
    save_json({"model": model, **(extra_config or {})}, run_dir / "config.json")
    return path
