"""Checkpoint formats: HF-format VLA, Prismatic run directory, head / proprio .pt, VLA-Adapter's fine-tuning
layout, LoRA saved merged and the base under the adapters."""

from __future__ import annotations

import json
import pickle
import re

import pytest
import torch
from safetensors.torch import load_file, save_file

from craft_vla.models import build_policy
from craft_vla.models.checkpoint import (
    component_file,
    config_from_hf,
    load_component,
    load_policy_checkpoint,
    load_released_policy,
    load_vla,
    lora_scaling,
    save_policy_checkpoint,
    vlm_state_dict_of_lora,
)
from craft_vla.models.lora import apply_lora
from craft_vla.models.prismatic import load_prismatic_vlm
from craft_vla.models.state_dicts import CheckpointMismatchError, read_tensors


def perturb(policy, names=("action_queries", "gating_factor", "scale_factor")) -> None:
    """Non-default values where a loader could silently leave defaults: queries, gates, LayerScale, LoRA B."""
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if any(n in name for n in names):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def actions(policy, batch):
    with torch.no_grad():
        return policy.eval()(batch).actions


def test_hf_directory_round_trip_is_bit_exact(tiny_policy, tiny_batch, tmp_path):
    perturb(tiny_policy)
    save_policy_checkpoint(
        tiny_policy, tmp_path, step=100, dataset_statistics={"libero_spatial": {"q01": [0.0]}}
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "action_head--100_checkpoint.pt",
        "config.json",
        "dataset_statistics.json",
        "model.safetensors",
        "proprio_projector--100_checkpoint.pt",
    ]
    hf = json.loads((tmp_path / "config.json").read_text())
    assert hf["arch_specifier"] == "no-align+fused-gelu-mlp" and hf["text_config"]["hidden_size"] == 64
    assert "language_model.lm_head.weight" not in load_file(tmp_path / "model.safetensors")  # tied
    loaded = load_released_policy(tmp_path, step=100)
    assert torch.equal(actions(loaded, tiny_batch), actions(tiny_policy, tiny_batch))
    lm = loaded.vla.language_model
    assert lm.lm_head.weight is lm.model.embed_tokens.weight


def corrupt(path, change):
    tensors = load_file(path)
    change(tensors)
    save_file(tensors, path)


@pytest.mark.parametrize(
    "change,named",
    [
        (lambda t: t.pop("projector.fc2.bias"), r"missing keys \(1\): projector\.fc2\.bias"),
        (
            lambda t: t.__setitem__("action_queries.weight", torch.zeros(9, 64)),
            r"action_queries\.weight \(model \(8, 64\), checkpoint \(9, 64\)\)",
        ),
        (
            lambda t: t.__setitem__("projector.fc4.weight", torch.zeros(1)),
            r"unexpected keys \(1\): projector\.fc4\.weight",
        ),
    ],
)
def test_corrupted_hf_directory_names_the_key(tiny_policy, tmp_path, change, named):
    save_policy_checkpoint(tiny_policy, tmp_path, step=1)
    corrupt(tmp_path / "model.safetensors", change)
    with pytest.raises(CheckpointMismatchError, match=named):
        load_vla(tmp_path)


def test_head_and_proprio_load_with_or_without_ddp_prefix(tiny_policy, tiny_config, tmp_path):
    perturb(tiny_policy)
    sd = tiny_policy.action_head.state_dict()
    torch.save({f"module.{k}": v for k, v in sd.items()}, tmp_path / "ddp.pt")
    torch.save(sd, tmp_path / "plain.pt")
    for name in ("ddp.pt", "plain.pt"):
        head = build_policy(tiny_config).action_head
        load_component(head, tmp_path / name)
        assert all(torch.equal(head.state_dict()[k], v) for k, v in sd.items())
    sd.pop("model.fc2.bias")
    torch.save(sd, tmp_path / "broken.pt")
    with pytest.raises(CheckpointMismatchError, match=r"model\.fc2\.bias"):
        load_component(build_policy(tiny_config).action_head, tmp_path / "broken.pt")


class Payload:
    """An arbitrary object: unpickling it would run code chosen by whoever wrote the file."""


def test_only_tensors_are_unpickled(tmp_path):
    torch.save({"x": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(pickle.UnpicklingError):
        read_tensors(tmp_path / "evil.pt")


def prismatic_name(key: str) -> tuple[str, str]:
    """Our key -> (part, key inside the part) in Prismatic's naming (the inverse of spec section 9)."""
    key = re.sub(r"\.scale_factor$", ".gamma", key)
    for ours, part, theirs in (
        ("vision_backbone.featurizer.", "vision_backbone", "dino_featurizer."),
        ("vision_backbone.fused_featurizer.", "vision_backbone", "siglip_featurizer."),
        ("language_model.", "llm_backbone", "llm."),
        ("projector.fc1.", "projector", "projector.0."),
        ("projector.fc2.", "projector", "projector.2."),
        ("projector.fc3.", "projector", "projector.4."),
    ):
        if key.startswith(ours):
            return part, theirs + key[len(ours) :]
    raise KeyError(key)


def write_prismatic_run(vla, run_dir, with_vision=True):
    parts = {"projector": {}, "llm_backbone": {}, "vision_backbone": {}}
    for key, value in vla.state_dict().items():
        if key != "action_queries.weight":
            part, name = prismatic_name(key)
            parts[part][name] = value.clone()
    if not with_vision:
        del parts["vision_backbone"]
    (run_dir / "checkpoints").mkdir(parents=True)
    torch.save({"model": parts}, run_dir / "checkpoints" / "latest-checkpoint.pt")
    model = {
        "vision_backbone_id": "dinosiglip-vit-so-224px",
        "llm_backbone_id": "qwen25-0_5b-extra",
        "arch_specifier": "no-align+fused-gelu-mlp",
        "image_resize_strategy": "resize-naive",
    }
    (run_dir / "config.json").write_text(json.dumps({"model": model, "dataset": {"type": "llava-v15"}}))


def test_prismatic_run_directory_loads_strictly_with_zero_queries(tiny_policy, tiny_config, tmp_path):
    perturb(tiny_policy)
    write_prismatic_run(tiny_policy.vla, tmp_path)
    vlm = load_prismatic_vlm(tmp_path, config=tiny_config)
    ours, theirs = vlm.state_dict(), tiny_policy.vla.state_dict()
    assert torch.equal(ours["action_queries.weight"], torch.zeros(8, 64))
    assert all(torch.equal(ours[k], v) for k, v in theirs.items() if k != "action_queries.weight")


def test_prismatic_run_without_vision_weights_is_refused(tiny_policy, tiny_config, tmp_path):
    write_prismatic_run(tiny_policy.vla, tmp_path, with_vision=False)
    with pytest.raises(CheckpointMismatchError, match="no vision_backbone weights"):
        load_prismatic_vlm(tmp_path, config=tiny_config)


def test_released_config_without_our_section(tiny_config):
    hf = {
        "vision_backbone_id": "dinosiglip-vit-so-224px",
        "arch_specifier": "no-align+fused-gelu-mlp",
        "image_sizes": [32, 32],
        "text_config": {
            "model_type": "qwen2",
            "hidden_size": 64,
            "num_hidden_layers": 4,
            "rope_parameters": {"rope_theta": 1000000.0},
            "vocab_size": 1024,
        },
    }
    assert config_from_hf(hf, base=tiny_config) == tiny_config
    with pytest.raises(ValueError, match="dinosiglip"):
        config_from_hf({**hf, "vision_backbone_id": "siglip-vit-so400m"})


def test_lora_checkpoint_round_trip(tiny_config, tiny_batch, tmp_path):
    torch.manual_seed(0)
    policy = apply_lora(build_policy(tiny_config), rank=4)
    perturb(policy, names=("lora_B", "modules_to_save", "gating_factor"))  # what LoRA fine-tuning changes
    save_policy_checkpoint(
        policy, tmp_path, step="latest", state_dict={f"module.{k}": v for k, v in policy.state_dict().items()}
    )
    assert (tmp_path / "lora_adapter" / "adapter_config.json").is_file()
    assert component_file(tmp_path, "action_head", "latest").name == "action_head--latest_checkpoint.pt"
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    adapter = load_file(tmp_path / "lora_adapter" / "adapter_model.safetensors")
    assert "base_model.model.action_queries.weight" in adapter
    torch.manual_seed(0)
    fresh = build_policy(tiny_config)  # the same base weights, adapters loaded from the folder
    load_policy_checkpoint(fresh, tmp_path, step="latest")
    assert torch.equal(actions(fresh, tiny_batch), actions(policy, tiny_batch))
    wrong_rank = apply_lora(build_policy(tiny_config), rank=2)
    with pytest.raises(CheckpointMismatchError, match="lora_A"):
        load_policy_checkpoint(wrong_rank, tmp_path, step="latest")


def test_lora_state_dict_gives_the_base_and_the_merge_peft_gives(tiny_config):
    import copy

    torch.manual_seed(0)
    policy = build_policy(tiny_config)
    base = {k: v.clone() for k, v in policy.vla.state_dict().items()}
    apply_lora(policy, rank=4)
    perturb(policy, names=("lora_B", "modules_to_save"))
    peft_state = policy.vla.state_dict()
    assert vlm_state_dict_of_lora(peft_state).keys() == base.keys()
    assert all(torch.equal(vlm_state_dict_of_lora(peft_state)[k], v) for k, v in base.items())
    merged = vlm_state_dict_of_lora(peft_state, lora_scaling(policy.vla))
    reference = copy.deepcopy(policy.vla).merge_and_unload().state_dict()  # peft's own merge
    assert merged.keys() == reference.keys()
    for key, value in reference.items():
        torch.testing.assert_close(merged[key], value, rtol=1e-6, atol=1e-6, msg=key)
    assert not torch.equal(merged["projector.fc1.weight"], base["projector.fc1.weight"])
