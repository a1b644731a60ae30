"""LoRA on the VLM through peft, as VLA-Adapter fine-tunes it, and the frozen snapshot (adapters off).

rank r, alpha 2r, every linear layer of the VLM except the LM head (peft's "all-linear" on their
PreTrainedModel: vision towers, projector and LLM), Gaussian init (B = 0, so the initial model is the
base model). The action queries are trained as a peft `modules_to_save` copy: they are saved in the
adapter folder, and with the adapters disabled the original (snapshot) queries are used again.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path

from peft import LoraConfig, PeftModel, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import load_file
from torch import Tensor, nn

from craft_vla.models.policy import freeze_unused
from craft_vla.models.state_dicts import CheckpointMismatchError, check_keys_and_shapes, save_tensors

ADAPTER_WEIGHTS = "adapter_model.safetensors"
LM_HEAD = "language_model.lm_head"


def lora_target_modules(vlm: nn.Module) -> list[str]:
    """Full names of every nn.Linear of the VLM except the LM head."""
    return sorted(name for name, m in vlm.named_modules() if isinstance(m, nn.Linear) and name != LM_HEAD)


def lora_config(vlm: nn.Module, rank: int, dropout: float = 0.0) -> LoraConfig:
    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    return LoraConfig(
        r=rank,
        lora_alpha=2 * rank,
        lora_dropout=dropout,
        target_modules=lora_target_modules(vlm),
        init_lora_weights="gaussian",
        modules_to_save=["action_queries"],
    )


def is_lora(vla: nn.Module) -> bool:
    return isinstance(vla, PeftModel)


def apply_lora(policy: nn.Module, rank: int, dropout: float = 0.0) -> nn.Module:
    """Wrap `policy.vla` in LoRA adapters (the VLM's base weights frozen); returns the policy."""
    if is_lora(policy.vla):
        raise ValueError("policy.vla already has LoRA adapters")
    policy.vla = get_peft_model(policy.vla, lora_config(policy.vla, rank, dropout))
    freeze_unused(policy)  # the adapters of never-run modules stay at init, saved but not trained
    return policy


@contextlib.contextmanager
def adapters_disabled(policy: nn.Module) -> Iterator[None]:
    """Run the frozen snapshot: the base VLM with its original action queries (no LoRA update)."""
    if not is_lora(policy.vla):
        raise ValueError(
            "the snapshot needs LoRA: without adapters the model has no frozen copy to return to"
        )
    with policy.vla.disable_adapter():
        yield


def save_lora_adapter(
    vla: PeftModel, directory: str | Path, state_dict: Mapping[str, Tensor] | None = None
) -> None:
    """Write a peft adapter folder (adapter_config.json + adapter_model.safetensors), replaced as a whole.

    `state_dict`: the PeftModel's full state dict when the caller gathered it (FSDP2).
    """
    directory = Path(directory)
    tmp = directory.with_name(f".{directory.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    vla.peft_config["default"].save_pretrained(str(tmp))
    save_tensors(get_peft_model_state_dict(vla, state_dict=state_dict), tmp / ADAPTER_WEIGHTS)
    old = directory.with_name(f".{directory.name}.old")
    if directory.exists():
        directory.rename(old)
    tmp.rename(directory)
    shutil.rmtree(old, ignore_errors=True)


def load_lora_adapter(policy: nn.Module, directory: str | Path, trainable: bool = True) -> nn.Module:
    """Load a peft adapter folder into `policy.vla` strictly, wrapping it first if it has no adapters yet."""
    directory = Path(directory)
    if not is_lora(policy.vla):
        config = LoraConfig.from_pretrained(str(directory))
        config.inference_mode = not trainable
        policy.vla = get_peft_model(policy.vla, config)
        freeze_unused(policy)
    found = load_file(str(directory / ADAPTER_WEIGHTS))
    expected = {k: v.shape for k, v in get_peft_model_state_dict(policy.vla).items()}
    check_keys_and_shapes(
        expected, found, f"LoRA adapter {directory}", "(is the LoRA rank or the model the same?)"
    )
    result = set_peft_model_state_dict(policy.vla, found)
    if result.unexpected_keys:
        raise CheckpointMismatchError(
            f"LoRA adapter {directory}: keys not used by the model {result.unexpected_keys}"
        )
    return policy
