"""`craft-vla demo`: measure representation collapse under plain fine-tuning and its prevention by CRaFT.

Stages (each cached under `cache_dir`, keyed by its settings, so a second run reuses them):
1. demonstrations of the embedded tabletop suite (RLDS), a validation set, perception question sets;
2. the snapshot: a tiny VLA-Adapter VLM pretrained on perception questions (Prismatic run-dir format);
3. the anchor cache of that snapshot over the demonstrations (`build-cache`);
4. fine-tuning of every method × seed through the trainer (`finetune`), two processes at a time;
5. evaluation of each run: action L1, closed-loop success (training and held-out variants),
   perception-question accuracy through the LM head, a linear probe, per-layer drift;
6. the report: report.md (table, mean ± std over seeds), plots, every run's config and logs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing as mp
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from craft_vla.demo.methods import method_cost, method_overrides
from craft_vla.sim.world import WorldConfig

DEMO_VERSION = "3"  # bump when a change invalidates cached data or anchor caches
DATASET = "tabletop"
VAL_DATASET = "tabletop_val"


@dataclass
class DemoConfig:
    """Everything the demo does; `quick` picks a smaller budget for CI."""

    out_dir: Path = Path("demo_report")
    cache_dir: Path = Path(os.environ.get("CRAFT_VLA_CACHE", Path.home() / ".cache" / "craft_vla")) / "demo"
    quick: bool = False
    seeds: tuple[int, ...] = (0, 1, 2)
    methods: tuple[str, ...] = ("sft_lora", "sft_full", "frozen_vlm", "fixed_penalty", "projection_only", "craft")
    image_size: int = 64
    # the downstream task: which of the suite's tasks, in scenes of how many objects (0: the suite's 3-5).
    # Pretraining and every retention measurement keep the suite's 3-5-object scenes.
    tasks: tuple[str, ...] = ("reach", "pick_up")
    objects: int = 1
    episodes_per_task: int = 300
    # DART: std of Gaussian noise added to the executed (dx, dy) of each training demonstration, whose recorded
    # action stays the expert's, so the data shows recoveries from small errors (validation data stays clean)
    action_noise: float = 0.0
    val_episodes_per_task: int = 20
    eval_episodes_per_task: int = 50
    # closed loop: the policy replans after this many of each chunk's 8 actions (8: the whole chunk open loop, as
    # VLA-Adapter on LIBERO). Replanning after 4 raised every method's success on the training tasks by 3-10 points
    # on the same checkpoints (README)
    execute_steps: int = 4
    eval_splits: tuple[str, ...] = ("train", "heldout")
    steps: int = 1200
    batch_size: int = 16
    learning_rate: float = 1e-3
    adam_beta2: float = 0.999  # AdamW's β2, for every method (torch's default, VLA-Adapter's)
    lr_warmup_steps: int = 50
    lora_rank: int = 16
    # relative to the snapshot features' spread S (see --epsilon_mode). 0.05 S was tighter than Adam at this
    # learning rate can hold the action-query features (λ grew without bound and QA was lost: README, issue 7)
    epsilon: float = 0.2
    epsilon_mode: str = "relative"
    dual_lr: float = 0.0  # 0: 0.1 / ε, so λ grows by 0.1 a step while L_ret = 2ε
    # cap on λ (0: none). A cap of 2 did not stop the CRaFT runs with 600 demonstrations per task from
    # diverging (README, issue 7), so none by default
    lambda_max: float = 0.0
    fixed_penalty_weight: float = 1.0
    raw_layer: int = -1
    aq_layer: int = -1
    parts: str = "both"
    pool: str = "mean"
    anchor_batch_size: int = 0
    workers: int = 2
    # of fine-tuning and the anchor cache: "fp32", "bf16" (autocast), or "auto": bf16 where the CPU multiplies
    # bf16 natively (AVX512-BF16 or AMX), float32 elsewhere. A bf16 step is 1.6x faster on such a CPU
    # (docs/benchmarks.md), but one CRaFT seed of three lost the budget in the bf16 run (docs/method.md).
    # The snapshot is always pretrained in float32
    precision: str = "fp32"
    retention_scenes: int = 400
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def quick_preset(cls, **overrides: Any) -> DemoConfig:
        base = dict(quick=True, seeds=(0,), episodes_per_task=20, val_episodes_per_task=4, eval_episodes_per_task=4,
                    steps=60, methods=("sft_full", "craft"), lr_warmup_steps=10)
        return cls(**{**base, **overrides})

    def __post_init__(self) -> None:
        from craft_vla.sim.tasks import make_tasks

        tasks = make_tasks()
        unknown = sorted(set(self.tasks) - set(tasks))
        if unknown or not self.tasks:
            raise ValueError(f"demo tasks {list(self.tasks)}: unknown {unknown}; choose from {sorted(tasks)}")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ValueError(f"precision must be auto, bf16 or fp32, got {self.precision!r}")
        if self.execute_steps < 1:
            raise ValueError(f"execute_steps must be >= 1 (actions of each chunk run before replanning), got {self.execute_steps}")
        if self.action_noise < 0:
            raise ValueError(f"action_noise is a standard deviation, >= 0; got {self.action_noise}")
        if self.objects < 0:
            raise ValueError(f"objects must be >= 0 (0: the suite's 3-5 objects per scene), got {self.objects}")
        short = [t for t in self.tasks if self.objects and tasks[t].objects_needed > self.objects]
        if short:
            raise ValueError(
                f"tasks {short} need a reference object: use --objects 2 or more (or 0 for the suite's 3-5), "
                f"not {self.objects}"
            )

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


def settings_hash(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def cached_dir(root: Path, key: str, build) -> Path:
    """`root/key`, built by `build(tmp_dir)` into a temporary directory and renamed when complete."""
    final = root / key
    if final.exists():
        return final
    tmp = root / f".{key}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    build(tmp)
    try:
        os.replace(tmp, final)
    except OSError:  # a concurrent run finished first: keep its result
        if not final.exists():
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def generate_data(cfg: DemoConfig) -> Path:
    """Training and validation demonstrations in one RLDS root."""
    from craft_vla.sim.demonstrations import write_demonstrations

    key = "data-" + settings_hash(
        DEMO_VERSION, cfg.image_size, cfg.episodes_per_task, cfg.val_episodes_per_task, cfg.tasks, cfg.objects,
        *([cfg.action_noise] if cfg.action_noise else []),  # noise-free keys stay those of earlier versions
    )

    def build(tmp: Path) -> None:
        for name, n, seed, noise in (
            (DATASET, cfg.episodes_per_task, 0, cfg.action_noise),
            (VAL_DATASET, cfg.val_episodes_per_task, 500_000, 0.0),
        ):
            report = write_demonstrations(
                tmp, n, cfg.image_size, seed=seed, workers=cfg.workers, tasks=cfg.tasks, name=name, config=cfg.world(),
                action_noise=noise,
            )
            print(report.summary())

    return cached_dir(cfg.cache_dir, key, build)


def base_finetune_config(cfg: DemoConfig, data_root: Path, snapshot: Path, run_root: Path, cache_path: Path):
    from craft_vla.demo.model import DEMO_PRESET
    from craft_vla.training.config import FinetuneConfig

    return FinetuneConfig(
        model=DEMO_PRESET,
        vlm_path=str(snapshot),
        data_root_dir=data_root,
        dataset_name=DATASET,
        run_root_dir=run_root,
        image_aug=False,
        batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        adam_beta2=cfg.adam_beta2,
        lr_warmup_steps=cfg.lr_warmup_steps,
        num_steps_before_decay=int(cfg.steps * 0.8),
        max_steps=cfg.steps,
        save_freq=cfg.steps,
        save_latest_checkpoint_only=True,
        lora_rank=cfg.lora_rank,
        craft_raw_layer=cfg.raw_layer,
        craft_aq_layer=cfg.aq_layer,
        craft_pool=cfg.pool,
        craft_parts=cfg.parts,
        craft_epsilon=cfg.epsilon,
        craft_epsilon_mode=cfg.epsilon_mode,
        craft_dual_lr=cfg.dual_lr or 1.0,
        craft_lambda_max=cfg.lambda_max or None,
        craft_cache_path=str(cache_path),
        craft_anchor_batch_size=cfg.anchor_batch_size,
        precision=cfg.resolved_precision(),
    )


def job_config(cfg: DemoConfig, base, method: str, seed: int):
    return dataclasses.replace(
        base, seed=seed, run_id_override=f"{method}-seed{seed}", **method_overrides(method, cfg.fixed_penalty_weight)
    )


def run_job(args: tuple) -> dict[str, Any]:
    """Fine-tune one (method, seed) and evaluate it; runs in a worker process with one thread."""
    import torch

    torch.set_num_threads(1)
    from craft_vla.demo.evaluate import action_l1, closed_loop, load_finetuned, retention_report
    from craft_vla.training.finetune import finetune

    cfg, ft_cfg, method, seed, snapshot = args
    start = time.perf_counter()
    run_dir = finetune(ft_cfg)
    train_seconds = time.perf_counter() - start
    policy, tokenizer, statistics = load_finetuned(ft_cfg, run_dir)
    stats = statistics[DATASET]
    result: dict[str, Any] = {"method": method, "seed": seed, "run_dir": str(run_dir), "train_seconds": train_seconds}
    result.update(action_l1(policy, ft_cfg, tokenizer, statistics, ft_cfg.data_root_dir, VAL_DATASET))
    result["closed_loop"] = closed_loop(
        policy, tokenizer, stats, cfg.image_size, cfg.eval_episodes_per_task, cfg.eval_splits, cfg.tasks, cfg.world(),
        execute_steps=cfg.execute_steps,
    )
    result["retention"] = retention_report(policy, ft_cfg, tokenizer, snapshot, cfg.retention_scenes)
    result["eval_seconds"] = time.perf_counter() - start - train_seconds
    (run_dir / "result.json").write_text(json.dumps(result, indent=2))
    return result


def snapshot_retention(cfg: DemoConfig, base, snapshot: Path) -> dict[str, Any]:
    """The snapshot's own retention measurements, on the same held-out scenes as every fine-tuned run."""
    from craft_vla.data.tokenizers import WordTokenizer
    from craft_vla.demo.evaluate import retention_report, snapshot_policy
    from craft_vla.sim import ACTION_DIM, STATE_DIM

    tokenizer = WordTokenizer.load(snapshot / "word_tokenizer.json")
    policy = snapshot_policy(str(snapshot), ACTION_DIM, STATE_DIM)
    return retention_report(policy, base, tokenizer, snapshot, cfg.retention_scenes)


def run_demo(cfg: DemoConfig) -> Path:
    """Every stage; returns the report directory."""
    import torch

    from craft_vla.demo.pretrain import PretrainConfig, pretrained_snapshot, quick_pretrain_config
    from craft_vla.demo.report import write_report
    from craft_vla.training.build_cache import build_cache

    torch.set_num_threads(max(1, cfg.workers))
    start = time.perf_counter()
    timings: dict[str, float] = {}
    data_root = generate_data(cfg)
    timings["data"] = time.perf_counter() - start
    # the snapshot is pretrained in float32 on every machine: it plays the released VLM, the same wherever the demo runs
    snapshot = pretrained_snapshot(quick_pretrain_config() if cfg.quick else PretrainConfig(), cfg.cache_dir)
    timings["pretraining"] = time.perf_counter() - start - sum(timings.values())
    out_dir = Path(cfg.out_dir)
    run_root = out_dir / "runs"
    base = base_finetune_config(cfg, data_root, snapshot, run_root, Path())
    cache_key = "anchors-" + settings_hash(
        DEMO_VERSION, str(snapshot), str(data_root), cfg.raw_layer, cfg.aq_layer, cfg.parts, cfg.pool, cfg.resolved_precision()
    )
    cache_path = cfg.cache_dir / cache_key
    base = dataclasses.replace(base, craft_cache_path=str(cache_path))
    if not (cache_path / "meta.json").exists():
        build_cache(dataclasses.replace(base, use_craft=True))
    if not cfg.dual_lr:
        spread = json.loads((cache_path / "meta.json").read_text())["spread"]
        epsilon = cfg.epsilon * spread["all"] if cfg.epsilon_mode == "relative" else cfg.epsilon
        base = dataclasses.replace(base, craft_dual_lr=0.1 / epsilon)  # λ grows by 0.1 a step while L_ret = 2ε
    timings["anchor_cache"] = time.perf_counter() - start - sum(timings.values())
    snapshot_row = snapshot_retention(cfg, base, snapshot)
    jobs = [(cfg, job_config(cfg, base, m, s), m, s, snapshot) for s in cfg.seeds for m in cfg.methods]
    print(f"fine-tuning {len(jobs)} runs ({len(cfg.methods)} methods × {len(cfg.seeds)} seeds), {cfg.workers} at a time")
    if cfg.workers > 1:
        # longest runs first, so that the workers finish together
        by_cost = sorted(jobs, key=lambda job: -method_cost(job[2], base.anchor_batch_size / base.batch_size))
        with mp.get_context("spawn").Pool(cfg.workers) as pool:
            done = {(r["method"], r["seed"]): r for r in pool.imap_unordered(run_job, by_cost)}
        results = [done[(m, s)] for s in cfg.seeds for m in cfg.methods]
    else:
        results = [run_job(job) for job in jobs]
    timings["finetune_and_eval"] = time.perf_counter() - start - sum(timings.values())
    timings["total"] = time.perf_counter() - start
    report = write_report(out_dir, cfg, results, timings, snapshot, snapshot_row)
    print(f"\nreport: {report}\nwall time {timings['total']:.0f} s")
    return out_dir
