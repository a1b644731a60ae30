"""Strict, safe state-dict I/O: tensors only (safetensors or `weights_only=True`), atomic
writes, clear mismatches."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from transformers import Qwen2ForCausalLM

DDP_PREFIX = "module."
_LISTED = 20  # keys named per category in an error message


class CheckpointMismatchError(ValueError):
    """A checkpoint whose keys or shapes do not fit the model it is loaded into."""


def _listing(title: str, items: list[str]) -> str:
    more = f" ... and {len(items) - _LISTED} more" if len(items) > _LISTED else ""
    return f"  {title} ({len(items)}): " + ", ".join(items[:_LISTED]) + more


def check_keys_and_shapes(
    expected: Mapping[str, torch.Size], found: Mapping[str, Tensor], what: str, hint: str = ""
) -> None:
    """Raise CheckpointMismatchError naming every missing, unexpected and mis-shaped key."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    misshaped = [
        f"{k} (model {tuple(expected[k])}, checkpoint {tuple(found[k].shape)})"
        for k in sorted(set(expected) & set(found))
        if tuple(expected[k]) != tuple(found[k].shape)
    ]
    if not (missing or unexpected or misshaped):
        return
    lines = [f"{what} does not fit the model:"]
    for title, items in (
        ("missing keys", missing),
        ("unexpected keys", unexpected),
        ("wrong shapes", misshaped),
    ):
        if items:
            lines.append(_listing(title, items))
    if hint:
        lines.append(hint)
    raise CheckpointMismatchError("\n".join(lines))


def load_strict(
    module: nn.Module, state_dict: Mapping[str, Tensor], what: str, not_in_checkpoint: Iterable[str] = ()
) -> None:
    """Copy `state_dict` into `module` after checking it holds exactly the module's keys and shapes.

    `not_in_checkpoint`: keys the format does not store (initialised by the caller); tied LM heads are
    accepted with or without their duplicate key.
    """
    expected = {k: v.shape for k, v in module.state_dict().items()}
    tied = tied_duplicates(module)
    skipped = set(not_in_checkpoint) | tied
    state_dict = {k: v for k, v in state_dict.items() if k not in tied}
    check_keys_and_shapes({k: s for k, s in expected.items() if k not in skipped}, state_dict, what)
    result = module.load_state_dict(state_dict, strict=False)
    left = set(result.missing_keys) - skipped
    if left or result.unexpected_keys:
        raise CheckpointMismatchError(
            f"{what}: load_state_dict left {sorted(left)} / {result.unexpected_keys}"
        )


def tied_duplicates(module: nn.Module) -> set[str]:
    """State-dict keys that alias another parameter (a tied LM head), which formats may omit."""
    seen: dict[int, str] = {}
    duplicates = set()
    for name, param in module.named_parameters(remove_duplicate=False):
        if id(param) in seen:
            duplicates.add(name)
        seen.setdefault(id(param), name)
    return duplicates


def strip_prefix(state_dict: Mapping[str, Tensor], prefix: str = DDP_PREFIX) -> dict[str, Tensor]:
    """Remove `prefix` (DDP's "module.") from the keys that carry it."""
    return {k[len(prefix) :] if k.startswith(prefix) else k: v for k, v in state_dict.items()}


def read_tensors(path: str | Path) -> dict[str, Tensor]:
    """A flat dict of tensors from .safetensors, or from .pt/.bin with `weights_only=True` (on CPU)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {path} does not exist")
    if path.suffix == ".safetensors":
        return load_file(str(path))
    data = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(data, Mapping) or not all(isinstance(v, Tensor) for v in data.values()):
        raise CheckpointMismatchError(
            f"{path} should hold a flat state dict of tensors, found {type(data).__name__}"
        )
    return dict(data)


def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def save_tensors(
    tensors: Mapping[str, Tensor], path: str | Path, metadata: dict[str, str] | None = None
) -> None:
    """Write a state dict atomically: safetensors for *.safetensors, else `torch.save` of plain tensors."""
    path = Path(path)
    plain = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    if path.suffix == ".safetensors":
        _atomic(path, lambda tmp: save_file(plain, str(tmp), metadata=metadata))
    else:
        _atomic(path, lambda tmp: torch.save(plain, tmp))


def save_json(data: Any, path: str | Path) -> None:
    """Write JSON atomically."""
    _atomic(Path(path), lambda tmp: tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n"))


def materialize(module: nn.Module, device: torch.device | str = "cpu") -> nn.Module:
    """Allocate a module built on the meta device (values undefined until loaded); re-tie and rebuild buffers.

    Only the language model has tied weights and computed (non-persistent) buffers, its rotary tables.
    """
    module.to_empty(device=device)
    for lm in (m for m in module.modules() if isinstance(m, Qwen2ForCausalLM)):
        if lm.config.tie_word_embeddings:
            lm.lm_head.weight = lm.model.embed_tokens.weight
        with torch.device(device):
            lm.model.rotary_emb = type(lm.model.rotary_emb)(config=lm.config)
    return module
