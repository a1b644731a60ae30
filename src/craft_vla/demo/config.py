"""The demo's settings (`craft-vla demo --help` lists them), its presets, and their checks.

Every check runs when the config is made, so a bad flag fails before data generation and pretraining,
naming the flag as the user typed it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Literal

import draccus

from craft_vla.data.cache_dir import cache_dir
from craft_vla.demo.methods import METHODS, POST_HOC, REFERENCE_DATASET
from craft_vla.demo.stress import STRESS_SETTINGS
from craft_vla.sim.tasks import TASK_NAMES
from craft_vla.sim.world import WorldConfig

# the registries' names as Literal types: draccus lists them in --help and refuses any other value
Method = Literal[tuple(METHODS)]
Task = Literal[TASK_NAMES]
StressSetting = Literal[tuple(STRESS_SETTINGS)]


@dataclass
class DemoConfig:
    """The embedded CPU testbed: representation collapse under plain fine-tuning, and its prevention by CRaFT.
    The default compares full SFT with CRaFT over 3 seeds (the headline result); presets: --full (every
    method and baseline, 3 seeds), --quick (one seed, a small budget: the CI smoke test). Data and the
    snapshot are cached in $CRAFT_VLA_CACHE/demo (default ~/.cache/craft_vla/demo), reused by later runs."""

    PRESETS: ClassVar[Path] = Path(__file__).parent / "presets"  # --quick loads PRESETS/quick.yaml, etc.

    out_dir: Path = Path("demo_report")  # the report, plots and every run's logs and checkpoints
    cache_dir: Path | None = None  # data, snapshot and anchor caches; default $CRAFT_VLA_CACHE/demo
    quick: bool = False  # the CI smoke-test preset (presets/quick.yaml): one seed, two methods, small budget
    full: bool = False  # the full comparison (presets/full.yaml): every method and baseline, 3 seeds
    # the stress matrix of issue 16 (presets/stress.yaml): full SFT, the seed's CRaFT and CRaFT, 3 seeds, in
    # every setting of --stress_settings; one report per setting and stress_report.md over all of them
    stress: bool = False
    stress_settings: tuple[StressSetting, ...] = tuple(STRESS_SETTINGS)
    toy: bool = False  # the toy backbone+head CRaFT problem instead of the testbed (seconds)
    seeds: tuple[int, ...] = (0, 1, 2)
    # full SFT and CRaFT: the two runs the headline needs (SFT learns the task and loses the answers,
    # CRaFT keeps them at SFT's action error); --full adds sft_lora, frozen_vlm and the ablations
    methods: tuple[Method, ...] = ("sft_full", "craft")
    image_size: int = 64
    # the downstream task: which of the suite's tasks, in scenes of how many objects (0: the suite's 3-5).
    # Pretraining and every retention measurement keep the suite's 3-5-object scenes.
    tasks: tuple[Task, ...] = ("reach", "pick_up")
    objects: int = 1
    episodes_per_task: int = 300  # demonstrations per fine-tuning task
    # DART: std of Gaussian noise added to the executed (dx, dy) of each training demonstration,
    # whose recorded action stays the expert's, so the data shows recoveries from small errors
    # (validation data stays clean)
    action_noise: float = 0.0
    val_episodes_per_task: int = 20
    eval_episodes_per_task: int = 50
    # closed loop: the policy replans after this many of each chunk's 8 actions (8: the whole chunk open loop,
    # as VLA-Adapter on LIBERO). Replanning after 4 raised every method's success on the training tasks by
    # 3-10 points on the same checkpoints (README)
    execute_steps: int = 4
    eval_splits: tuple[Literal["train", "heldout"], ...] = ("train", "heldout")
    steps: int = 1200  # fine-tuning steps per run
    batch_size: int = 16
    # 5e-4: full SFT learned the task on 4 seeds of 4 (L1 0.12-0.15, success 0.82-0.91); at 1e-3 two of the
    # same four stayed on the mean-prediction plateau or spiked (success 0 and 0.39; docs/method.md)
    learning_rate: float = 5e-4
    adam_beta2: float = 0.999  # AdamW's beta2, for every method (torch's default, VLA-Adapter's)
    lr_warmup_steps: int = 50
    # LP-FT, for every method: the first this many steps train only the new weights (head, proprio projector,
    # action queries), then the VLM warms up (FinetuneConfig.head_only_steps)
    head_only_steps: int = 0
    lora_rank: int = 16
    # craft's retention budget, in units of the anchored features' spread (--epsilon_mode). Balanced: each
    # anchored part (patch tokens, text) in units of its own spread S_part, epsilon per part. 0.1 is the
    # loosest budget of the measured curve (0.2, 0.1, 0.05 on seeds 0-1) that kept >= 95 percent of the
    # answers (docs/method.md, 2026-12-07). craft_seed and its ablations keep their 0.2 S (demo/methods.py).
    # No percent signs in these comments: draccus passes them to argparse's help formatter
    epsilon: float = 0.1
    epsilon_mode: Literal["relative", "balanced", "absolute"] = "balanced"
    # the inputs craft's anchors are read on: demonstrations, the fine-tuning data (CRAFT_METHOD.md §3 as
    # written); reference, perception scenes with one question each (the VLM's own kind of input, no
    # answers). Over seeds 0-4 both kept 96.6-96.7 percent of the answers at 1.07-1.08 x SFT's L1
    # (docs/method.md)
    anchor_inputs: Literal["demonstrations", "reference"] = "demonstrations"
    # action: g_ret rescaled to the action gradient's norm before lambda multiplies it, which keeps its
    # 10^4 x larger scale out of AdamW's moments (unscaled, those moments froze the VLM: docs/method.md);
    # raw: CRAFT_METHOD.md §6 as written
    retention_scale: Literal["action", "raw"] = "action"
    dual_lr: float = 0.0  # 0: 0.1 / epsilon, so lambda grows by 0.1 a step while L_ret = 2 epsilon
    # cap on lambda (0: none). A cap of 2 did not stop the CRaFT runs with 600 demonstrations per task from
    # diverging (README, issue 7), so none by default
    lambda_max: float = 0.0
    fixed_penalty_weight: float = 1.0  # w of the fixed_penalty method: L_act + w L_ret
    # the cotrain oracle: L_act + w L_QA, with L_QA on cotrain_batch_size scenes a step (all their questions)
    # drawn from the first cotrain_scenes scenes of pretraining's set; w = 1 is pretraining's weight of L_QA
    cotrain_weight: float = 1.0
    cotrain_batch_size: int = 8
    cotrain_scenes: int = 1024
    # κ of the craft_correction method: the fraction of the predicted excess of L_ret over ε that each
    # step's projection removes (1: the linearised L_ret lands on ε)
    correction_rate: float = 1.0
    # craft's anchors: the patch tokens of every LLM layer, per token, and the mean of the prompt's text
    # tokens at those layers (issue 16, docs/method.md). An empty --raw_layers anchors the one layer
    # --raw_layer
    raw_layer: int = -1  # m, the raw-latent layer anchored; -1: L/2
    raw_layers: tuple[int, ...] = (1, 2, 3, 4)  # several raw-latent layers anchored instead of m
    text: bool = True  # also anchor the mean of the prompt's text tokens at the raw layers
    aq_layer: int = -1  # M, the action-query layer anchored; -1: L
    parts: Literal["both", "raw", "aq"] = "raw"  # which bridge parts are anchored
    pool: Literal["mean", "tokens"] = "tokens"  # mean pooling or per-token features
    anchor_batch_size: int = 0  # 0: the batch size
    workers: int = 0  # parallel fine-tuning processes; 0: one per idle core, at most one per run
    # of fine-tuning and the anchor cache: fp32, bf16 (autocast), or auto: bf16 where the CPU multiplies bf16
    # natively (AVX512-BF16 or AMX), float32 elsewhere. A bf16 step is 1.6x faster on such a CPU
    # (docs/benchmarks.md), but one CRaFT seed of three lost the budget in the bf16 run (docs/method.md).
    # The snapshot is always pretrained in float32
    precision: Literal["auto", "bf16", "fp32"] = "fp32"
    retention_scenes: int = 400
    reference_scenes: int = 1024  # --anchor_inputs reference: that many perception scenes, one question each
    # wise_ft's sweep of α (θ_snapshot + α (θ_SFT − θ_snapshot)); α = 1, full SFT itself, is always added
    wise_ft_alphas: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8)
    # torch threads per process; 0: $OMP_NUM_THREADS if set, else the idle cores shared among the processes
    threads: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> DemoConfig:
        """The preset `presets/<name>.yaml` with `overrides` on top."""
        base = draccus.parse(cls, config_path=cls.PRESETS / f"{name}.yaml", args=[])
        return cls(**{**{f.name: getattr(base, f.name) for f in fields(cls)}, **overrides})

    @classmethod
    def quick_preset(cls, **overrides: Any) -> DemoConfig:
        return cls.preset("quick", **overrides)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Refuse settings the suite cannot run, naming the flag, the value typed and the fix."""
        from craft_vla.sim.tasks import make_tasks

        tasks = make_tasks()
        unknown = sorted(set(self.tasks) - set(tasks))
        if unknown or not self.tasks:
            raise ValueError(f"--tasks {list(self.tasks)}: unknown {unknown}; choose from {sorted(tasks)}")
        unknown = sorted(set(self.methods) - set(METHODS))
        if unknown or not self.methods:
            raise ValueError(
                f"--methods {list(self.methods)}: unknown {unknown}; choose from {sorted(METHODS)}"
            )
        choices = {
            "precision": ("auto", "bf16", "fp32"),
            "epsilon_mode": ("relative", "balanced", "absolute"),
            "anchor_inputs": ("demonstrations", "reference"),
            "retention_scale": ("action", "raw"),
            "parts": ("both", "raw", "aq"),
            "pool": ("mean", "tokens"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"--{name} must be one of {', '.join(allowed)}; got {getattr(self, name)!r}")
        at_least = {
            "steps": 1,
            "batch_size": 1,
            "execute_steps": 1,
            "episodes_per_task": 1,
            "val_episodes_per_task": 1,
            "eval_episodes_per_task": 1,
            "lora_rank": 1,
            "workers": 0,
            "threads": 0,
            "image_size": 16,
            "retention_scenes": 2,
            "reference_scenes": 1,
            "objects": 0,
            "anchor_batch_size": 0,
            "lr_warmup_steps": 0,
            "raw_layer": -1,
            "aq_layer": -1,
        }
        for name, low in at_least.items():
            if getattr(self, name) < low:
                raise ValueError(f"--{name} must be >= {low}; got {getattr(self, name)}")
        if any(not 0.0 <= alpha <= 1.0 for alpha in self.wise_ft_alphas):
            raise ValueError(f"--wise_ft_alphas must lie in [0, 1]; got {list(self.wise_ft_alphas)}")
        missing = {m: POST_HOC[m] for m in self.methods if m in POST_HOC and POST_HOC[m] not in self.methods}
        if missing:
            raise ValueError(
                f"--methods {list(self.methods)}: "
                + "; ".join(f"{m} starts from the runs of {base}: add {base}" for m, base in missing.items())
            )
        if any(layer < 0 for layer in self.raw_layers):
            raise ValueError(f"--raw_layers must list layers >= 0; got {list(self.raw_layers)}")
        if self.raw_layer >= 0 and self.raw_layers:
            raise ValueError(
                f"--raw_layer {self.raw_layer} and --raw_layers {list(self.raw_layers)} both name the raw "
                f"layers: use --raw_layers {self.raw_layer} for that layer alone"
            )
        positive = ("epsilon", "learning_rate", "correction_rate")
        non_negative = ("action_noise", "dual_lr", "lambda_max", "fixed_penalty_weight", "head_only_steps")
        if self.cotrain_batch_size < 1 or self.cotrain_scenes < self.cotrain_batch_size:
            raise ValueError(
                f"--cotrain_batch_size {self.cotrain_batch_size} and --cotrain_scenes {self.cotrain_scenes}: "
                "need 1 <= batch size <= scenes"
            )
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"--{name} must be > 0; got {getattr(self, name)}")
        for name in non_negative:
            if not getattr(self, name) >= 0:
                raise ValueError(f"--{name} must be >= 0; got {getattr(self, name)}")
        if not 0.0 <= self.adam_beta2 < 1.0:
            raise ValueError(f"--adam_beta2 must be in [0, 1); got {self.adam_beta2}")
        if self.quick + self.full + self.stress > 1:
            raise ValueError("--quick, --full and --stress are three protocols: choose one")
        unknown = sorted(set(self.stress_settings) - set(STRESS_SETTINGS))
        if unknown or not self.stress_settings:
            raise ValueError(
                f"--stress_settings {list(self.stress_settings)}: unknown {unknown}; choose from "
                f"{list(STRESS_SETTINGS)}"
            )
        if not self.seeds:
            raise ValueError("--seeds needs at least one seed")
        short = [t for t in self.tasks if self.objects and tasks[t].objects_needed > self.objects]
        if short:
            raise ValueError(
                f"tasks {short} need a reference object: use --objects 2 or more (or 0 for the suite's 3-5), "
                f"not {self.objects}"
            )

    @property
    def protocol(self) -> str:
        """ "quick", "full", "stress" or "default": the protocol the report names and times against (each
        setting of a stress run reports as a default run)."""
        return "quick" if self.quick else "full" if self.full else "stress" if self.stress else "default"

    @property
    def cache_root(self) -> Path:
        """Where data, the snapshot and anchor caches are cached."""
        return Path(self.cache_dir) if self.cache_dir is not None else cache_dir("demo")

    @property
    def anchor_dataset_name(self) -> str:
        """craft's `craft_anchor_dataset_name`: the reference inputs' dataset, or "" (the demonstrations)."""
        return REFERENCE_DATASET if self.anchor_inputs == "reference" else ""

    def resolved_precision(self) -> str:
        """The precision fine-tuning and the anchor cache run in: "bf16" or "fp32"."""
        return self.precision if self.precision != "auto" else ("bf16" if native_bf16_cpu() else "fp32")

    def world(self) -> WorldConfig:
        """The world of the downstream task's demonstrations and closed-loop episodes."""
        if not self.objects:
            return WorldConfig()
        return WorldConfig(min_objects=self.objects, max_objects=self.objects)


def native_bf16_cpu() -> bool:
    """Whether this CPU has bf16 matrix instructions (elsewhere bf16 is emulated, slower than float32)."""
    import torch

    capabilities = getattr(torch.cpu, "get_capabilities", dict)()  # torch >= 2.9
    return bool(capabilities.get("avx512_bf16") or capabilities.get("amx_bf16"))


__all__ = ["DemoConfig", "Method", "Task", "native_bf16_cpu"]
