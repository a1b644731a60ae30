"""VLA-Adapter configurations: small frozen dataclasses and the named presets.

Override a preset with `dataclasses.replace`: `get_config("tiny", action_dim=4)` for top-level fields,
`replace(cfg, llm=replace(cfg.llm, vocab_size=512))` for nested ones.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

BRIDGE_LAYOUTS = ("shifted", "aligned")


@dataclass(frozen=True)
class ViTConfig:
    """One timm vision tower: the timm model name and the sizes passed to `timm.create_model`."""

    timm_name: str
    embed_dim: int
    depth: int
    num_heads: int
    patch_size: int


@dataclass(frozen=True)
class LLMConfig:
    """The Qwen2 decoder (transformers `Qwen2Config` fields)."""

    hidden_size: int = 896
    num_hidden_layers: int = 24
    num_attention_heads: int = 14
    num_key_value_heads: int = 2
    intermediate_size: int = 4864
    vocab_size: int = 151936
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1_000_000.0
    max_position_embeddings: int = 32768
    tie_word_embeddings: bool = True


@dataclass(frozen=True)
class VLAAdapterConfig:
    """The whole policy: vision towers, projector, LLM, action queries,
    bridge-attention head, proprio projector."""

    featurizer: ViTConfig  # DINOv2 tower (3 ImageNet-normalised channels per image)
    fused_featurizer: ViTConfig  # SigLIP tower (3 channels normalised with mean 0.5, std 0.5)
    llm: LLMConfig
    image_size: int = 224
    num_images_in_input: int = 2  # third-person + wrist
    num_action_queries: int = 64
    chunk_length: int = 8  # actions predicted per forward (current + next 7)
    action_dim: int = 7
    proprio_dim: int = 8
    use_proprio: bool = True
    use_pro_version: bool = True  # Pro bridge-attention blocks; False: the original blocks
    head_num_heads: int = 8
    head_input_noise_std: float = 0.02  # the head's training-time input perturbation (VLA-Adapter's)
    round_proprio_bf16: bool = True  # VLA-Adapter casts proprio to bf16 before its projector
    # "shifted": VLA-Adapter's training slicing (C_R = the first P positions, C_AQ = one before each query);
    # "aligned": C_R = the patch positions, C_AQ = the query positions.
    bridge_layout: str = "shifted"

    def __post_init__(self) -> None:
        if self.bridge_layout not in BRIDGE_LAYOUTS:
            raise ValueError(f"bridge_layout must be one of {BRIDGE_LAYOUTS}, got {self.bridge_layout!r}")
        for tower in (self.featurizer, self.fused_featurizer):
            if self.image_size % tower.patch_size:
                raise ValueError(
                    f"image_size {self.image_size} is not a multiple of "
                    f"{tower.timm_name}'s patch size {tower.patch_size}"
                )
        if self.featurizer.patch_size != self.fused_featurizer.patch_size:
            raise ValueError(
                "the two vision towers must have the same patch size to be fused on the feature axis"
            )
        if self.llm.hidden_size % (2 * self.head_num_heads):
            raise ValueError(
                f"the head splits hidden size {self.llm.hidden_size} into "
                f"{self.head_num_heads} heads of even size"
            )

    @property
    def hidden_size(self) -> int:
        return self.llm.hidden_size

    @property
    def vision_dim(self) -> int:
        """Width of the fused patch features (DINOv2 + SigLIP)."""
        return self.featurizer.embed_dim + self.fused_featurizer.embed_dim

    @property
    def patches_per_image(self) -> int:
        return (self.image_size // self.featurizer.patch_size) ** 2

    @property
    def num_patches(self) -> int:
        """Patch tokens in the sequence for `num_images_in_input` images."""
        return self.patches_per_image * self.num_images_in_input

    @property
    def num_head_blocks(self) -> int:
        """One bridge-attention block per LLM layer: block i reads layer i + 1."""
        return self.llm.num_hidden_layers


DINOV2_L = ViTConfig(
    "vit_large_patch14_reg4_dinov2.lvd142m", embed_dim=1024, depth=24, num_heads=16, patch_size=14
)
SIGLIP_SO400M = ViTConfig(
    "vit_so400m_patch14_siglip_224", embed_dim=1152, depth=27, num_heads=16, patch_size=14
)


def _qwen25_05b() -> VLAAdapterConfig:
    return VLAAdapterConfig(featurizer=DINOV2_L, fused_featurizer=SIGLIP_SO400M, llm=LLMConfig())


def _tiny() -> VLAAdapterConfig:
    return VLAAdapterConfig(
        featurizer=replace(DINOV2_L, embed_dim=32, depth=3, num_heads=2, patch_size=8),
        fused_featurizer=replace(SIGLIP_SO400M, embed_dim=48, depth=3, num_heads=2, patch_size=8),
        llm=LLMConfig(
            hidden_size=64,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=128,
            vocab_size=1024,
            max_position_embeddings=4096,
        ),
        image_size=32,
        num_action_queries=8,
    )


def _craft_demo() -> VLAAdapterConfig:
    """The embedded demo's model (`craft_vla.demo`): 64 px third-person + wrist images cut into 4 × 4 patches
    (one per grid cell of the suite), a 128-wide 4-layer Qwen2 over a word vocabulary, the suite's 3-D actions
    and 4-D proprio."""
    tiny = _tiny()
    return replace(
        tiny,
        featurizer=replace(tiny.featurizer, embed_dim=64, patch_size=16),
        fused_featurizer=replace(tiny.fused_featurizer, embed_dim=64, patch_size=16),
        llm=replace(tiny.llm, hidden_size=128, intermediate_size=384, vocab_size=256),
        image_size=64,
        action_dim=3,
        proprio_dim=4,
    )


PRESETS = {"vla-adapter-qwen25-0.5b": _qwen25_05b, "tiny": _tiny, "craft-demo": _craft_demo}


def get_config(name: str, **overrides: Any) -> VLAAdapterConfig:
    """The preset `name` ("vla-adapter-qwen25-0.5b", "tiny" or "craft-demo") with top-level
    fields replaced by `overrides`."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
    return replace(PRESETS[name](), **overrides)


def config_to_dict(config: VLAAdapterConfig) -> dict[str, Any]:
    """A JSON-ready dict that `config_from_dict` turns back into the same config."""
    return asdict(config)


def config_from_dict(data: dict[str, Any]) -> VLAAdapterConfig:
    """Inverse of `config_to_dict`; unknown keys are an error (a config from another version)."""
    nested = {"featurizer": ViTConfig, "fused_featurizer": ViTConfig, "llm": LLMConfig}
    known = {f.name for f in fields(VLAAdapterConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown VLAAdapterConfig fields {unknown}; expected a subset of {sorted(known)}")
    kwargs = {k: nested[k](**v) if k in nested else v for k, v in data.items()}
    return VLAAdapterConfig(**kwargs)
