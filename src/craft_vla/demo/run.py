"""`craft-vla demo`: measure representation collapse under plain fine-tuning and its prevention by CRaFT.

Stages (each cached under `DemoConfig.cache_root`, keyed by its settings, so a second run reuses them):
1. demonstrations of the embedded tabletop suite (RLDS), a validation set, perception question sets;
2. the snapshot: a tiny VLA-Adapter VLM pretrained on perception questions (Prismatic run-dir format);
3. the anchor cache of that snapshot over the demonstrations (`build-cache`);
4. fine-tuning of every method × seed through the trainer (`finetune`), two processes at a time;
5. evaluation of each run: action L1, closed-loop success (training and held-out variants),
   perception-question accuracy through the LM head, a linear probe, per-layer drift;
6. the report: report.md (table, mean ± std over seeds), plots, every run's config and logs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import multiprocessing as mp
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from craft_vla.data.cache_dir import cached_build
from craft_vla.demo.config import DemoConfig
from craft_vla.demo.methods import POST_HOC, REFERENCE_DATASET, method_cost, method_overrides
from craft_vla.training.threads import idle_cores, threads_per_process

DEMO_VERSION = "4"  # bump when a change invalidates cached data or anchor caches
DATASET = "tabletop"
VAL_DATASET = "tabletop_val"


def settings_hash(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def generate_data(cfg: DemoConfig) -> Path:
    """Training and validation demonstrations in one RLDS root, and the reference inputs where craft's
    anchors are read on them."""
    from craft_vla.sim.demonstrations import write_demonstrations

    reference = bool(cfg.anchor_dataset_name)

    key = "data-" + settings_hash(
        DEMO_VERSION,
        cfg.image_size,
        cfg.episodes_per_task,
        cfg.val_episodes_per_task,
        cfg.tasks,
        cfg.objects,
        *([cfg.action_noise] if cfg.action_noise else []),  # noise-free keys stay those of earlier versions
        *(["reference", cfg.reference_scenes] if reference else []),
    )

    def build(tmp: Path) -> None:
        for name, n, seed, noise in (
            (DATASET, cfg.episodes_per_task, 0, cfg.action_noise),
            (VAL_DATASET, cfg.val_episodes_per_task, 500_000, 0.0),
        ):
            report = write_demonstrations(
                tmp,
                n,
                cfg.image_size,
                seed=seed,
                workers=cfg.workers,
                tasks=cfg.tasks,
                name=name,
                config=cfg.world(),
                action_noise=noise,
            )
            print(report.summary())
        if reference:
            write_reference(tmp, cfg)

    return cached_build(cfg.cache_root / key, build, describe="demonstrations")


def write_reference(root: Path, cfg: DemoConfig) -> None:
    """craft's anchor inputs under `--anchor_inputs reference`: perception scenes with one question each, as
    RLDS episodes. The scene stream "reference" is neither pretraining's nor the QA evaluation's."""
    from craft_vla.data.rlds_writer import write_rlds_dataset
    from craft_vla.sim import make_perception_set
    from craft_vla.sim.perception import perception_episodes

    scenes = make_perception_set(cfg.reference_scenes, 1, name="reference", image_size=cfg.image_size)
    write_rlds_dataset(root, REFERENCE_DATASET, perception_episodes(scenes, "reference"))


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
        head_only_steps=cfg.head_only_steps,
        num_steps_before_decay=int(cfg.steps * 0.8),
        max_steps=cfg.steps,
        save_freq=cfg.steps,
        save_latest_checkpoint_only=True,
        lora_rank=cfg.lora_rank,
        craft_raw_layer=cfg.raw_layer,
        craft_raw_layers=cfg.raw_layers,
        craft_text=cfg.text,
        craft_aq_layer=cfg.aq_layer,
        craft_pool=cfg.pool,
        craft_parts=cfg.parts,
        craft_epsilon=cfg.epsilon,
        craft_epsilon_mode=cfg.epsilon_mode,
        craft_anchor_dataset_name=cfg.anchor_dataset_name,
        craft_retention_scale=cfg.retention_scale,
        craft_dual_lr=cfg.dual_lr or 1.0,
        craft_lambda_max=cfg.lambda_max or None,
        craft_cache_path=str(cache_path),
        craft_anchor_batch_size=cfg.anchor_batch_size,
        precision=cfg.resolved_precision(),
        threads=cfg.threads,
        overwrite=True,  # the demo's run directories are its own: a second demo replaces them with its runs
    )


def job_config(cfg: DemoConfig, base, method: str, seed: int, threads: int, anchors: dict | None = None):
    """The FinetuneConfig of one run: the method's overrides, and for a retention method its anchor cache
    and dual step (`anchor_caches`)."""
    return dataclasses.replace(
        base,
        seed=seed,
        run_id_override=f"{method}-seed{seed}",
        threads=threads,
        **method_overrides(method, cfg.fixed_penalty_weight, cfg.correction_rate),
        **(anchors or {}).get(method, {}),
    )


ANCHOR_FIELDS = (
    "craft_raw_layer",
    "craft_aq_layer",
    "craft_parts",
    "craft_pool",
    "craft_raw_layers",
    "craft_text",
    "craft_anchor_dataset_name",
)


def anchor_caches(cfg: DemoConfig, base, snapshot: Path, data_root: Path) -> dict[str, dict[str, Any]]:
    """method -> its `craft_cache_path` and `craft_dual_lr`, for every retention method of the demo.

    A method anchors the features the demo's flags (--raw_layer(s), --aq_layer, --parts, --pool, --text)
    name, unless it fixes them itself (`craft_seed`); each distinct set of anchored features gets one cache,
    built once and reused by later demos."""
    from craft_vla.craft.cache import resolve_epsilon
    from craft_vla.training.build_cache import build_cache

    settings = {}
    for method in cfg.methods:
        overrides = method_overrides(method, cfg.fixed_penalty_weight, cfg.correction_rate)
        if not overrides.get("use_craft"):
            continue
        run = dataclasses.replace(base, **overrides)
        features = [getattr(run, name) for name in ANCHOR_FIELDS]
        key = settings_hash(DEMO_VERSION, str(snapshot), str(data_root), *features, cfg.resolved_precision())
        path = cfg.cache_root / f"anchors-{key}"
        if not (path / "meta.json").exists():
            print(f"building the anchor cache of {method} (cached for later runs): {path}")
            build_cache(dataclasses.replace(run, use_craft=True, craft_cache_path=str(path)))
        else:
            print(f"reusing the cached anchor cache of {method}: {path}")
        settings[method] = {"craft_cache_path": str(path)}
        if not cfg.dual_lr and "craft_dual_lr" not in overrides:
            # λ grows by 0.1 a step while L_ret = 2ε, with the ε the trainer will use (the ablations that
            # fix λ keep their dual step of 0)
            spread = json.loads((path / "meta.json").read_text())["spread"]
            epsilon = resolve_epsilon(run.craft_epsilon, run.craft_epsilon_mode, spread, run.craft_parts)
            settings[method]["craft_dual_lr"] = 0.1 / epsilon
    return settings


def evaluate_run(cfg: DemoConfig, ft_cfg, policy, tokenizer, statistics, snapshot: Path) -> dict[str, Any]:
    """Every measurement of the demo's table for one fine-tuned policy: action L1 on the validation
    demonstrations, closed-loop success, and retention (QA, probe, drift)."""
    from craft_vla.demo.evaluate import action_l1, closed_loop, retention_report

    result = action_l1(policy, ft_cfg, tokenizer, statistics, ft_cfg.data_root_dir, VAL_DATASET)
    result["closed_loop"] = closed_loop(
        policy,
        tokenizer,
        statistics[DATASET],
        cfg.image_size,
        cfg.eval_episodes_per_task,
        cfg.eval_splits,
        cfg.tasks,
        cfg.world(),
        execute_steps=cfg.execute_steps,
    )
    result["retention"] = retention_report(policy, ft_cfg, tokenizer, snapshot, cfg.retention_scenes)
    return result


def run_job(args: tuple) -> dict[str, Any]:
    """Fine-tune one (method, seed) and evaluate it, in a worker process with
    `ft_cfg.threads` torch threads."""
    cfg, ft_cfg, method, seed, snapshot = args
    from craft_vla.demo.evaluate import load_finetuned
    from craft_vla.demo.report import constraint_health
    from craft_vla.training.finetune import finetune
    from craft_vla.training.metrics import read_metrics

    start = time.perf_counter()
    run_dir = finetune(ft_cfg, aux_loss=cotraining(cfg, snapshot, seed) if method == "cotrain" else None)
    train_seconds = time.perf_counter() - start
    policy, tokenizer, statistics = load_finetuned(ft_cfg, run_dir)
    result: dict[str, Any] = {
        "method": method,
        "seed": seed,
        "run_dir": str(run_dir),
        "train_seconds": train_seconds,
    }
    result.update(evaluate_run(cfg, ft_cfg, policy, tokenizer, statistics, snapshot))
    result["constraint"] = constraint_health(read_metrics(run_dir))
    result["eval_seconds"] = time.perf_counter() - start - train_seconds
    (run_dir / "result.json").write_text(json.dumps(result, indent=2))
    return result


def pretrain_config(cfg: DemoConfig):
    """The snapshot's pretraining settings: `--quick`'s small budget, or the full one."""
    from craft_vla.demo.pretrain import PretrainConfig, quick_pretrain_config

    return quick_pretrain_config() if cfg.quick else PretrainConfig()


def cotraining(cfg: DemoConfig, snapshot: Path, seed: int):
    """The cotrain method's extra loss (demo/cotrain.py) on the snapshot's own pretraining scenes."""
    from craft_vla.data.tokenizers import WordTokenizer
    from craft_vla.demo.cotrain import CoTrainingLoss

    tokenizer = WordTokenizer.load(snapshot / "word_tokenizer.json")
    return CoTrainingLoss(
        tokenizer, pretrain_config(cfg), cfg.cotrain_scenes, cfg.cotrain_batch_size, cfg.cotrain_weight, seed
    )


def snapshot_retention(cfg: DemoConfig, base, snapshot: Path) -> dict[str, Any]:
    """The snapshot's own retention measurements, on the same held-out scenes as every fine-tuned run."""
    from craft_vla.data.tokenizers import WordTokenizer
    from craft_vla.demo.evaluate import retention_report, snapshot_policy
    from craft_vla.sim import ACTION_DIM, STATE_DIM

    tokenizer = WordTokenizer.load(snapshot / "word_tokenizer.json")
    policy = snapshot_policy(str(snapshot), ACTION_DIM, STATE_DIM)
    return retention_report(policy, base, tokenizer, snapshot, cfg.retention_scenes)


@contextlib.contextmanager
def exit_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into SystemExit in this process while the block runs, so that a worker pool's context
    exit terminates its workers: by default a terminated demo died at once and left its fine-tuning workers
    running on the cores."""

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def workers_for(cfg: DemoConfig, runs: int) -> int:
    """--workers, or with 0 one per idle core, at most one per run."""
    return min(cfg.workers or idle_cores(), runs)


def run_jobs(
    cfg: DemoConfig,
    base,
    snapshot: Path,
    snapshot_measures: dict[str, Any],
    anchors: dict[str, dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Fine-tune and evaluate every method × seed, printing the table (with the snapshot's retention
    measures as its first row) as runs finish; then the post-hoc methods (wise_ft) on the runs they start
    from. Results in seed-major order."""
    from craft_vla.demo.progress import LiveProgress
    from craft_vla.demo.report import snapshot_row_of
    from craft_vla.demo.wise_ft import run_wise_ft

    trained = [m for m in cfg.methods if m not in POST_HOC]
    workers = workers_for(cfg, len(trained) * len(cfg.seeds))
    threads = threads_per_process(workers, cfg.threads)
    jobs = [
        (cfg, job_config(cfg, base, m, s, threads, anchors), m, s, snapshot)
        for s in cfg.seeds
        for m in trained
    ]
    anchor_fraction = base.anchor_batch_size / base.batch_size
    costs = {(m, s): method_cost(m, anchor_fraction) for s in cfg.seeds for m in cfg.methods}
    progress = LiveProgress(costs, cfg.methods, workers, snapshot_row_of(snapshot_measures))
    print(
        f"fine-tuning {len(jobs)} runs ({len(trained)} methods × {len(cfg.seeds)} seeds), {workers} "
        f"at a time with {threads} torch thread(s) each"
    )
    done: dict[tuple[str, int], dict[str, Any]] = {}
    # longest first, so that the workers end together
    for result in map_jobs(run_job, sorted(jobs, key=lambda job: -costs[(job[2], job[3])]), workers):
        done[(result["method"], result["seed"])] = result
        progress.finished(result)
    post_hoc = [
        (cfg, job_config(cfg, base, POST_HOC[m], s, threads), s, snapshot, done[(POST_HOC[m], s)])
        for s in cfg.seeds
        for m in cfg.methods
        if m in POST_HOC
    ]
    for result in map_jobs(run_wise_ft, post_hoc, workers):
        done[(result["method"], result["seed"])] = result
        progress.finished(result)
    return [done[(m, s)] for s in cfg.seeds for m in cfg.methods]


def map_jobs(function, jobs: list[tuple], workers: int) -> Iterator[dict[str, Any]]:
    """function(job) for every job, as they finish: in `workers` spawned processes, or here with one."""
    if workers > 1 and len(jobs) > 1:
        with exit_on_sigterm(), mp.get_context("spawn").Pool(min(workers, len(jobs))) as pool:
            yield from pool.imap_unordered(function, jobs)
    else:
        yield from map(function, jobs)


def run_demo(cfg: DemoConfig) -> Path:
    """Every stage; returns the report directory."""
    import torch

    from craft_vla.demo.pretrain import pretrained_snapshot, snapshot_path
    from craft_vla.demo.report import write_report

    torch.set_num_threads(threads_per_process(1, cfg.threads))  # pretraining and the cache run alone
    start = time.perf_counter()
    timings: dict[str, float] = {}
    data_root = generate_data(cfg)
    timings["data"] = time.perf_counter() - start
    # the snapshot is pretrained in float32 on every machine: it plays the released VLM, the
    # same wherever the demo runs
    pretrain_cfg = pretrain_config(cfg)
    pretrained = not snapshot_path(pretrain_cfg, cfg.cache_root).exists()
    snapshot = pretrained_snapshot(pretrain_cfg, cfg.cache_root)
    timings["pretraining"] = time.perf_counter() - start - sum(timings.values())
    out_dir = Path(cfg.out_dir)
    run_root = out_dir / "runs"
    base = base_finetune_config(cfg, data_root, snapshot, run_root, Path())
    anchors = anchor_caches(cfg, base, snapshot, data_root)
    timings["anchor_cache"] = time.perf_counter() - start - sum(timings.values())
    snapshot_row = snapshot_retention(cfg, base, snapshot)
    results = run_jobs(cfg, base, snapshot, snapshot_row, anchors)
    timings["finetune_and_eval"] = time.perf_counter() - start - sum(timings.values())
    timings["total"] = time.perf_counter() - start
    report = write_report(out_dir, cfg, results, timings, snapshot, snapshot_row, pretrained=pretrained)
    print(f"\nreport: {report}\nwall time {timings['total']:.0f} s")
    return out_dir


def demo_command(cfg: DemoConfig) -> int:
    """`craft-vla demo`: the testbed (with `--stress` in each stress setting), or with `--toy` the toy CRaFT
    problem."""
    import torch

    if cfg.stress:
        from craft_vla.demo.stress import run_stress

        run_stress(cfg)
        return 0
    if not cfg.toy:
        run_demo(cfg)
        return 0
    from craft_vla.demo.toy import run_toy_demo

    torch.set_num_threads(threads_per_process(1, cfg.threads))
    start = time.perf_counter()
    run_toy_demo()
    print(f"\nwall time {time.perf_counter() - start:.1f} s")
    return 0
