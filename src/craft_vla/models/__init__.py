"""The VLA-Adapter architecture: vision towers, projector, Qwen2, action queries, bridge-attention policy.

config.py       VLAAdapterConfig and the presets ("vla-adapter-qwen25-0.5b", "tiny")
policy.py       VLAAdapterPolicy: the action pass and the truncated anchor pass, one forward
vlm.py          the VLM (vision_backbone, projector, language_model, action_queries)
bridge.py       where C_R and C_AQ sit in the sequence (one definition)
action_head.py  the L1 bridge-attention head (Pro and original blocks)
checkpoint.py   HF-format VLA, VLA-Adapter's fine-tuning layout; prismatic.py: Prismatic run dirs
lora.py         peft LoRA and the frozen snapshot (adapters disabled)
inference.py    predict_action with the training preprocessing
"""

from craft_vla.models.checkpoint import (
    load_component,
    load_policy_checkpoint,
    load_released_policy,
    load_vla,
    save_policy_checkpoint,
    save_vla,
)
from craft_vla.models.config import LLMConfig, ViTConfig, VLAAdapterConfig, get_config
from craft_vla.models.inference import Observation, predict_action, predict_actions
from craft_vla.models.lora import adapters_disabled, apply_lora, load_lora_adapter
from craft_vla.models.policy import ActionOutput, VLAAdapterPolicy, build_policy
from craft_vla.models.prismatic import load_prismatic_vlm
from craft_vla.models.state_dicts import CheckpointMismatchError

__all__ = [
    "ActionOutput",
    "CheckpointMismatchError",
    "LLMConfig",
    "Observation",
    "VLAAdapterConfig",
    "VLAAdapterPolicy",
    "ViTConfig",
    "adapters_disabled",
    "apply_lora",
    "build_policy",
    "get_config",
    "load_component",
    "load_lora_adapter",
    "load_policy_checkpoint",
    "load_prismatic_vlm",
    "load_released_policy",
    "load_vla",
    "predict_action",
    "predict_actions",
    "save_policy_checkpoint",
    "save_vla",
]
