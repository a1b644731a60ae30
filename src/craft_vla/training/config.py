"""The fine-tuning configuration: VLA-Adapter's finetune flags where the meaning is the same, plus CRaFT's.

Parsed by draccus (`--flag value`); every run saves the resolved config beside its checkpoints.
`VLA_ADAPTER_FLAGS` says how each of the 42 flags of VLA-Adapter's vla-scripts/finetune.py is honoured,
so that its launch lines run here unchanged or fail at once, naming the flag. No field comment may hold a
percent sign: argparse formats the --help text with it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from craft_vla.craft.cache import EPSILON_MODES


@dataclass(frozen=True)
class VLAAdapterFlag:
    """How craft-vla honours one flag of VLA-Adapter's finetune.py.

    Implemented (`accepts` is None): the field has VLA-Adapter's meaning. A checked no-op: the values
    `accepts` takes mean what craft-vla always does; `validate()` refuses any other value, giving `why`.
    """

    accepts: Callable[[Any], bool] | None = None
    accepted: str = ""  # the values `accepts` takes, in words
    why: str = ""


IMPLEMENTED = VLAAdapterFlag()


def only(value: Any, why: str) -> VLAAdapterFlag:
    return VLAAdapterFlag(lambda v: v == value, repr(value), why)


def any_positive(why: str) -> VLAAdapterFlag:
    return VLAAdapterFlag(lambda v: v >= 1, "any integer >= 1", why)


UNUSED_WITHOUT_DIFFUSION = "it only matters with --use_diffusion True, which craft-vla does not implement"

VLA_ADAPTER_FLAGS: dict[str, VLAAdapterFlag] = {
    "config_file_path": IMPLEMENTED,
    "vlm_path": IMPLEMENTED,
    "use_minivlm": only(
        True,
        "craft-vla's VLM is VLA-Adapter's Qwen2.5-0.5B one; the 7B OpenVLA backbone "
        "(--use_minivlm False) is not supported",
    ),
    "resum_vla_path": IMPLEMENTED,
    "data_root_dir": IMPLEMENTED,
    "dataset_name": IMPLEMENTED,
    "run_root_dir": IMPLEMENTED,
    "shuffle_buffer_size": any_positive(
        "craft-vla shuffles every epoch globally over stable sample ids, "
        "an exact shuffle that no buffer size approximates better"
    ),
    "use_l1_regression": only(True, "craft-vla trains VLA-Adapter's L1 regression head (the only objective)"),
    "use_diffusion": only(False, "the diffusion (DDIM) action head is not implemented; train the L1 head"),
    "num_diffusion_steps": any_positive(UNUSED_WITHOUT_DIFFUSION),
    "use_film": only(
        False,
        "FiLM-modulated vision features are not implemented (VLA-Adapter's LIBERO recipe runs without them)",
    ),
    "num_images_in_input": IMPLEMENTED,
    "use_proprio": IMPLEMENTED,
    "phase1_path": VLAAdapterFlag(
        lambda v: v in ("", "None"),
        "'None' or ''",
        "VLA-Adapter's finetune.py declares it but never reads it",
    ),
    "batch_size": IMPLEMENTED,
    "learning_rate": IMPLEMENTED,
    "lr_warmup_steps": IMPLEMENTED,
    "num_steps_before_decay": IMPLEMENTED,
    "grad_accumulation_steps": IMPLEMENTED,
    "max_steps": IMPLEMENTED,
    "use_val_set": IMPLEMENTED,
    "val_freq": IMPLEMENTED,
    "val_time_limit": IMPLEMENTED,
    "save_freq": IMPLEMENTED,
    "save_latest_checkpoint_only": IMPLEMENTED,
    "resume": IMPLEMENTED,
    "resume_step": IMPLEMENTED,
    "image_aug": IMPLEMENTED,
    "diffusion_sample_freq": any_positive(UNUSED_WITHOUT_DIFFUSION + " (with L1 it paces a console print)"),
    "use_lora": IMPLEMENTED,
    "lora_rank": IMPLEMENTED,
    "lora_dropout": IMPLEMENTED,
    "merge_lora_during_training": IMPLEMENTED,
    "use_fz": VLAAdapterFlag(
        lambda v: isinstance(v, bool),
        "True or False",
        "it only selects the saved layout, the whole VLA, which a run with --use_lora False "
        "always writes; with LoRA, validate() asks for --merge_lora_during_training",
    ),
    "wandb_entity": IMPLEMENTED,
    "wandb_project": IMPLEMENTED,
    "run_id_note": IMPLEMENTED,
    "run_id_override": IMPLEMENTED,
    "wandb_log_freq": IMPLEMENTED,
    "use_pro_version": IMPLEMENTED,
    "phase": only(
        "Training",
        "VLA-Adapter's training phase perturbs the action head's input, as craft-vla "
        "does; train without the perturbation with --head_input_noise_std 0",
    ),
}

# The smallest value each numeric flag takes (None, where a field allows it, is always accepted).
MINIMUMS: dict[str, float] = {
    "num_images_in_input": 1,
    "head_input_noise_std": 0,
    "num_workers": 0,
    "threads": 0,
    "batch_size": 1,
    "learning_rate": 0,
    "head_learning_rate": 0,
    "head_only_steps": 0,
    "weight_decay": 0,
    "lr_warmup_steps": 0,
    "num_steps_before_decay": 0,
    "grad_accumulation_steps": 1,
    "max_grad_norm": 0,
    "max_steps": 1,
    "lora_rank": 1,
    "lora_dropout": 0,
    "save_freq": 1,
    "resume_step": 0,
    "val_freq": 1,
    "val_time_limit": 1,
    "wandb_log_freq": 1,
    "craft_epsilon": 0,
    "craft_dual_lr": 0,
    "craft_lambda_max": 0,
    "craft_lambda_init": 0,
    "craft_correction_rate": 0,
    "craft_anchor_batch_size": 0,
    "craft_cache_max_samples": 0,
    "craft_cache_shard_size": 1,
}


@dataclass
class FinetuneConfig:
    # model: a local checkpoint dir (its config names the architecture), or a preset for random init
    model: str = ""  # preset name from craft_vla.models; empty: inferred from --vlm_path
    vlm_path: str = ""  # Prismatic VLM run dir (config.json + checkpoints/*.pt) or HF-format VLA-Adapter dir
    config_file_path: str = ""  # directory with the HF config.json / processor / tokenizer files
    use_pro_version: bool = True  # Pro bridge-attention blocks (False: the original blocks)
    num_images_in_input: int = 2  # 1: third-person; 2: third-person + wrist
    use_proprio: bool = True
    head_input_noise_std: float = 0.02  # VLA-Adapter's training-time perturbation of the head input
    tokenizer_path: str = ""  # WordTokenizer json or HF tokenizer dir; default: the checkpoint dir's

    # data
    data_root_dir: Path = Path("datasets/rlds")
    dataset_name: str = "craft_tabletop"  # one name, or several joined by "+" for a mixture
    dataset_format: str = "auto"  # rlds | lerobot | auto (by each dataset directory's layout)
    lerobot_features: str = ""  # LeRobot keys: image=KEY,wrist_image=KEY,state=KEY,action=KEY; else LIBERO's
    run_root_dir: Path = Path("runs")
    image_aug: bool = True
    num_workers: int = 0

    # optimisation
    batch_size: int = 8  # per device
    learning_rate: float = 5e-4
    # the weights trained from scratch (action head, proprio projector, action queries); 0: --learning_rate
    head_learning_rate: float = 0.0
    # LP-FT: for this many first steps only those new weights learn, the pretrained VLM's learning rate is 0
    # (its AdamW moments still see its gradients); then the VLM gets its own --lr_warmup_steps warm-up
    head_only_steps: int = 0
    optimizer: str = "adamw"  # adamw (VLA-Adapter's) | sgd (momentum 0.9, linear in the gradient)
    weight_decay: float = 0.0
    adam_beta2: float = 0.999  # AdamW's second-moment decay (VLA-Adapter: torch's default 0.999)
    lr_warmup_steps: float = 0  # steps of linear warm-up, 0.1x to 1x; below 1 (VLA-Adapter's 0.1): none
    num_steps_before_decay: int = 100_000  # then MultiStepLR x0.1
    grad_accumulation_steps: int = 1
    max_grad_norm: float = 0.0  # 0: no clipping (VLA-Adapter's default); applied after the CRaFT combination
    max_steps: int = 200_000
    seed: int = 7

    # LoRA, or a frozen VLM
    use_lora: bool = True
    freeze_vlm: bool = False  # craft-vla's ablation: train only the policy head and proprio projector
    # VLA-Adapter's use_fz only chooses the saved layout: the whole VLA, not a LoRA adapter.
    # It freezes nothing. A run with --use_lora False always saves the whole VLA; with LoRA,
    # --merge_lora_during_training saves it
    use_fz: bool = False
    lora_rank: int = 32
    lora_dropout: float = 0.0
    merge_lora_during_training: bool = False  # also save the VLM with the adapters merged at each checkpoint

    # checkpoints, validation, logging
    save_freq: int = 10_000
    save_latest_checkpoint_only: bool = False
    resume: bool = False
    overwrite: bool = False  # a fresh run replaces a run directory that holds another run (refused otherwise)
    resume_step: int | None = None  # default: the latest complete checkpoint
    resum_vla_path: str = ""  # with --resume: the run (or step-NNNNNN) dir to resume; default: this run's
    use_val_set: bool = False  # L1 loss on the dataset's "val" split, un-augmented, every --val_freq steps
    val_freq: int = 10_000
    val_time_limit: int = 180  # seconds a validation pass may take (it stops after the batch that passes it)
    wandb_entity: str = ""
    wandb_project: str = ""  # empty: no W&B; otherwise W&B in `wandb_mode`
    wandb_mode: str = "offline"
    wandb_log_freq: int = 10  # W&B gets every N-th step (and every validation); metrics.jsonl gets every step
    run_id_note: str = ""
    run_id_override: str = ""

    # VLA-Adapter flags whose accepted values mean what craft-vla always does (VLA_ADAPTER_FLAGS)
    use_minivlm: bool = True  # the Qwen2.5-0.5B VLM
    use_l1_regression: bool = True
    use_diffusion: bool = False
    num_diffusion_steps: int = 50
    diffusion_sample_freq: int = 50
    use_film: bool = False
    shuffle_buffer_size: int = 100_000  # we shuffle globally over sample ids, so no buffer is involved
    phase1_path: str = ""
    phase: str = "Training"

    # distribution and precision
    distributed: str = "none"  # none | ddp | fsdp (under torchrun)
    precision: str = "auto"  # auto (bf16 autocast on CUDA, float32 on CPU) | fp32 | bf16
    threads: int = (
        0  # torch threads per process; 0: $OMP_NUM_THREADS, else the idle cores shared by the processes
    )

    # CRaFT
    use_craft: bool = False
    craft_raw_layer: int = -1  # m; -1: L/2
    craft_raw_layers: tuple[int, ...] = ()  # several raw-latent layers anchored (e.g. 1 2 3 4); overrides m
    craft_text: bool = False  # also anchor the mean of the prompt's text tokens at the raw layers
    craft_aq_layer: int = -1  # M; -1: L
    craft_pool: str = "mean"  # mean | tokens
    craft_parts: str = "both"  # both | raw | aq
    craft_epsilon: float = 0.05
    # relative: ε × the cache's feature spread S; balanced: each anchored part in units of its own spread
    # (L_ret = Σ_part ||Δf_part||²/S_part, ε × the number of parts); absolute
    craft_epsilon_mode: str = "relative"
    craft_dual_lr: float = 1.0
    craft_lambda_max: float | None = None
    craft_lambda_init: float = 0.0  # with --craft_dual_lr 0: a fixed-weight retention penalty
    craft_projection: bool = True  # False: no conflict-aware projection (ablation)
    # > 0: enforce the budget by a correction step of this rate after the optimizer's (which then sees the
    # projected action gradient only) instead of λ·g_ret in the gradient; 0: the dual update (craft/step.py)
    craft_correction_rate: float = 0.0
    # action: g_ret rescaled to the action gradient's norm before λ multiplies it, which keeps its scale out
    # of AdamW's moments (craft/step.py); raw: CRAFT_METHOD.md §6 as written
    craft_retention_scale: str = "raw"
    craft_delta: float = 1e-12
    craft_cache_path: str = ""
    craft_anchor_source: str = "cache"  # cache | online (LoRA only: the snapshot is the model, adapters off)
    craft_anchor_batch_size: int = 0  # per device; 0: same as batch_size
    # the anchor inputs: empty, the training dataset(s); else a dataset under --data_root_dir whose images
    # and instructions the anchors are read on (e.g. scenes and questions of the VLM's own kind: issue 16)
    craft_anchor_dataset_name: str = ""
    craft_cache_max_samples: int = 0  # build-cache: 0 = every sample, else a seeded random subset
    craft_cache_shard_size: int = 4096  # build-cache: samples per shard (the unit of resumption)
    craft_warn_l_ret: float = 1e-6  # step-0 L_ret above this (relative to ||f~||²) warns of a foreign cache

    def validate(self) -> None:
        """Refuse inconsistent settings with a message that says how to fix them."""
        self._validate_vla_adapter_flags()
        self._validate_ranges()
        self._validate_model()
        if self.distributed not in ("none", "ddp", "fsdp"):
            raise ValueError(f"--distributed must be none, ddp or fsdp, got {self.distributed!r}")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"--precision must be auto, fp32 or bf16, got {self.precision!r}")
        if self.optimizer not in ("adamw", "sgd"):
            raise ValueError(f"--optimizer must be adamw or sgd, got {self.optimizer!r}")
        if self.dataset_format not in ("auto", "rlds", "lerobot"):
            raise ValueError(f"--dataset_format must be auto, rlds or lerobot, got {self.dataset_format!r}")
        if self.freeze_vlm and self.use_lora:
            raise ValueError(
                "--freeze_vlm True trains no VLM weight (LoRA adapters included): pass --use_lora False"
            )
        if self.use_fz and self.use_lora:
            raise ValueError(
                "--use_fz True with --use_lora True is not supported: VLA-Adapter's use_fz saves the whole "
                "VLA instead of a LoRA adapter (it freezes nothing); for full weights of a LoRA run pass "
                "--merge_lora_during_training True, or train every weight with --use_lora False"
            )
        if self.merge_lora_during_training and not self.use_lora:
            raise ValueError("--merge_lora_during_training True merges LoRA adapters: pass --use_lora True")
        if (self.resum_vla_path or self.resume_step is not None) and not self.resume:
            raise ValueError("--resum_vla_path and --resume_step say where to resume: pass --resume True")
        if self.use_craft:
            self._validate_craft()

    def _validate_vla_adapter_flags(self) -> None:
        for flag, use in VLA_ADAPTER_FLAGS.items():
            value = getattr(self, flag)
            if use.accepts is not None and not use.accepts(value):
                taken = f"craft-vla takes {use.accepted}"
                raise ValueError(f"--{flag} {value} is not supported ({taken}): {use.why}")

    def _validate_ranges(self) -> None:
        for flag, minimum in MINIMUMS.items():
            value = getattr(self, flag)
            if value is not None and value < minimum:
                raise ValueError(f"--{flag} must be >= {minimum}, got {value}")
        if self.num_images_in_input > 2:
            raise ValueError(
                f"--num_images_in_input must be 1 (third-person) or 2 (+ wrist), got "
                f"{self.num_images_in_input}: a second wrist camera (ALOHA) is not supported"
            )
        if self.lr_warmup_steps >= 1 and self.lr_warmup_steps != int(self.lr_warmup_steps):
            raise ValueError(
                f"--lr_warmup_steps must be a whole number of steps, got {self.lr_warmup_steps} "
                "(values below 1, such as VLA-Adapter's default 0.1, mean no warm-up)"
            )
        if not 0.0 <= self.adam_beta2 < 1.0:
            raise ValueError(f"--adam_beta2 must be in [0, 1), got {self.adam_beta2}")
        if self.lora_dropout >= 1:
            raise ValueError(f"--lora_dropout must be below 1, got {self.lora_dropout}")

    def _validate_model(self) -> None:
        if self.model or not self.vlm_path:
            from craft_vla.models.config import PRESETS

            if not self.model:
                raise ValueError(
                    "no model given: pass --vlm_path DIR (a Prismatic VLM) or --model PRESET "
                    f"(one of {sorted(PRESETS)})"
                )
            if self.model not in PRESETS:
                raise ValueError(f"--model {self.model!r} is not a preset; choose one of {sorted(PRESETS)}")

    def _validate_craft(self) -> None:
        if self.freeze_vlm:
            raise ValueError(
                "--freeze_vlm True leaves nothing for CRaFT to constrain: pass --use_craft False"
            )
        if self.craft_raw_layer >= 0 and self.craft_raw_layers:
            raise ValueError(
                f"--craft_raw_layer {self.craft_raw_layer} and --craft_raw_layers "
                f"{list(self.craft_raw_layers)} both name the raw layers: use --craft_raw_layers "
                f"{self.craft_raw_layer} for that layer alone"
            )
        if self.craft_retention_scale not in ("raw", "action"):
            raise ValueError(
                f"--craft_retention_scale must be raw or action, got {self.craft_retention_scale!r}"
            )
        if self.craft_epsilon_mode not in EPSILON_MODES:
            raise ValueError(
                f"--craft_epsilon_mode must be one of {', '.join(EPSILON_MODES)}, "
                f"got {self.craft_epsilon_mode!r}"
            )
        if self.craft_anchor_source not in ("cache", "online"):
            raise ValueError(
                f"--craft_anchor_source must be cache or online, got {self.craft_anchor_source!r}"
            )
        if self.craft_anchor_source == "cache" and not self.craft_cache_path:
            raise ValueError(
                "--use_craft True needs an anchor cache: build one with `craft-vla build-cache` and pass "
                "--craft_cache_path DIR, or use --craft_anchor_source online with --use_lora True"
            )
        if self.craft_anchor_source == "online" and not self.use_lora:
            raise ValueError(
                "--craft_anchor_source online needs --use_lora True (the snapshot is the base model)"
            )
        if self.craft_epsilon_mode != "absolute" and self.craft_anchor_source == "online":
            raise ValueError(
                f"{self.craft_epsilon_mode} ε needs the cache's feature spread: "
                "use --craft_epsilon_mode absolute online"
            )

    @property
    def anchor_batch_size(self) -> int:
        return self.craft_anchor_batch_size or self.batch_size
