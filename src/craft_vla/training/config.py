"""The fine-tuning configuration: VLA-Adapter's finetune flags where the meaning is the same, plus CRaFT's.

Parsed by draccus (`--flag value`); every run saves the resolved config beside its checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class FinetuneConfig:
    # model: a model preset for random init (tests, the embedded suite), or local checkpoint dirs
    model: str = "tiny"  # preset name from craft_vla.models when no checkpoint is given
    vlm_path: str = ""  # Prismatic VLM run dir (config.json + checkpoints/*.pt) or HF-format VLA-Adapter dir
    config_file_path: str = ""  # directory with the HF config.json / processor / tokenizer files
    use_pro_version: bool = True  # Pro bridge-attention blocks (False: the original blocks)
    num_images_in_input: int = 2  # third-person + wrist
    use_proprio: bool = True
    head_input_noise_std: float = 0.02  # VLA-Adapter's training-time perturbation of the head input
    tokenizer_path: str = ""  # WordTokenizer json or HF tokenizer dir; default: the checkpoint dir's

    # data
    data_root_dir: Path = Path("datasets/rlds")
    dataset_name: str = "craft_tabletop"  # one name, or several joined by "+" for a mixture
    run_root_dir: Path = Path("runs")
    image_aug: bool = True
    num_workers: int = 0

    # optimisation
    batch_size: int = 8  # per device
    learning_rate: float = 5e-4
    head_learning_rate: float = 0.0  # action head + proprio projector (trained from scratch); 0: --learning_rate
    optimizer: str = "adamw"  # adamw (VLA-Adapter's) | sgd (momentum 0.9; linear in the gradient, for exactness checks)
    weight_decay: float = 0.0
    adam_beta2: float = 0.999  # AdamW's second-moment decay (VLA-Adapter: torch's default 0.999)
    lr_warmup_steps: int = 0  # linear warm-up from 10 % to 100 % of the learning rate
    num_steps_before_decay: int = 100_000  # then MultiStepLR ×0.1
    grad_accumulation_steps: int = 1
    max_grad_norm: float = 0.0  # 0: no clipping (VLA-Adapter's default); applied after the CRaFT combination
    max_steps: int = 200_000
    seed: int = 7

    # LoRA
    use_lora: bool = True
    freeze_vlm: bool = False  # train only the policy head and proprio projector (ablation)
    lora_rank: int = 32
    lora_dropout: float = 0.0

    # checkpoints, validation, logging
    save_freq: int = 10_000
    save_latest_checkpoint_only: bool = False
    resume: bool = False
    resume_step: int | None = None
    use_val_set: bool = False
    val_freq: int = 10_000
    val_batches: int = 8
    wandb_entity: str = ""
    wandb_project: str = ""  # empty: no W&B; otherwise W&B in `wandb_mode`
    wandb_mode: str = "offline"
    wandb_log_freq: int = 10
    run_id_note: str = ""
    run_id_override: str = ""

    # distribution and precision
    distributed: str = "none"  # none | ddp | fsdp (under torchrun)
    precision: str = "auto"  # auto (bf16 autocast on CUDA, float32 on CPU) | fp32 | bf16

    # CRaFT
    use_craft: bool = False
    craft_raw_layer: int = -1  # m; -1: L/2
    craft_aq_layer: int = -1  # M; -1: L
    craft_pool: str = "mean"  # mean | tokens
    craft_parts: str = "both"  # both | raw | aq
    craft_epsilon: float = 0.05
    craft_epsilon_mode: str = "relative"  # relative: ε × the cache's feature spread S; absolute
    craft_dual_lr: float = 1.0
    craft_lambda_max: float | None = None
    craft_lambda_init: float = 0.0  # with --craft_dual_lr 0: a fixed-weight retention penalty
    craft_projection: bool = True  # False: no conflict-aware projection (ablation)
    craft_delta: float = 1e-12
    craft_cache_path: str = ""
    craft_anchor_source: str = "cache"  # cache | online (LoRA only: the snapshot is the model with adapters off)
    craft_anchor_batch_size: int = 0  # per device; 0: same as batch_size
    craft_cache_max_samples: int = 0  # build-cache: 0 = every sample, else a seeded random subset
    craft_cache_shard_size: int = 4096  # build-cache: samples per shard (the unit of resumption)
    craft_warn_l_ret: float = 1e-6  # step-0 L_ret above this (relative to ||f~||²) warns of a foreign cache


    def validate(self) -> None:
        """Refuse inconsistent settings with a message that says how to fix them."""
        if self.distributed not in ("none", "ddp", "fsdp"):
            raise ValueError(f"--distributed must be none, ddp or fsdp, got {self.distributed!r}")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"--precision must be auto, fp32 or bf16, got {self.precision!r}")
        if self.optimizer not in ("adamw", "sgd"):
            raise ValueError(f"--optimizer must be adamw or sgd, got {self.optimizer!r}")
        if not 0.0 <= self.adam_beta2 < 1.0:
            raise ValueError(f"--adam_beta2 must be in [0, 1), got {self.adam_beta2}")
        if self.head_learning_rate < 0:
            raise ValueError(f"--head_learning_rate must be >= 0 (0: --learning_rate), got {self.head_learning_rate}")
        if self.batch_size < 1 or self.grad_accumulation_steps < 1:
            raise ValueError("--batch_size and --grad_accumulation_steps must be >= 1")
        if self.use_craft:
            if self.freeze_vlm:
                raise ValueError("--freeze_vlm True leaves nothing for CRaFT to constrain: use --use_craft False with it")
            if self.craft_epsilon_mode not in ("relative", "absolute"):
                raise ValueError(f"--craft_epsilon_mode must be relative or absolute, got {self.craft_epsilon_mode!r}")
            if self.craft_anchor_source not in ("cache", "online"):
                raise ValueError(f"--craft_anchor_source must be cache or online, got {self.craft_anchor_source!r}")
            if self.craft_anchor_source == "cache" and not self.craft_cache_path:
                raise ValueError(
                    "--use_craft True needs an anchor cache: build one with `craft-vla build-cache` and pass "
                    "--craft_cache_path DIR, or use --craft_anchor_source online with --use_lora True"
                )
            if self.craft_anchor_source == "online" and not self.use_lora:
                raise ValueError("--craft_anchor_source online needs --use_lora True (the snapshot is the base model)")
            if self.craft_epsilon_mode == "relative" and self.craft_anchor_source == "online":
                raise ValueError("relative ε needs the cache's feature spread: use --craft_epsilon_mode absolute online")

    @property
    def anchor_batch_size(self) -> int:
        return self.craft_anchor_batch_size or self.batch_size
