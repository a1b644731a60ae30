"""The fine-tuning run: setup, the loop, checkpoints. One step is `train_step` (step.py).

    craft-vla finetune --model tiny --dataset_name craft_tabletop --data_root_dir data --use_craft True \\
        --craft_cache_path caches/tabletop --max_steps 2000
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import draccus
import torch
import yaml
from torch.optim.lr_scheduler import LambdaLR
from tqdm import tqdm

from craft_vla.craft import CraftStep, DualVariable
from craft_vla.craft.cache import AnchorCache, part_weights, resolve_epsilon
from craft_vla.data.collate import VLACollator
from craft_vla.data.dataset import VLADataset
from craft_vla.data.normalize import save_dataset_statistics
from craft_vla.data.sampler import EpochSampler
from craft_vla.models import loading
from craft_vla.models.checkpoint import save_base_vla, save_policy_checkpoint
from craft_vla.models.lora import adapters_disabled, apply_lora, is_lora
from craft_vla.training import setup
from craft_vla.training.checkpoint import STATE_DIR, latest_checkpoint, load_checkpoint, save_checkpoint
from craft_vla.training.config import FinetuneConfig
from craft_vla.training.distributed import (
    DistEnv,
    barrier,
    init_distributed,
    unwrap,
    wrap_model,
)
from craft_vla.training.metrics import MetricsLogger
from craft_vla.training.step import AuxLoss, TrainState, train_step, warmup_then_decay
from craft_vla.training.validation import open_validation_readers, validation_metrics, validation_set


@dataclass
class Run:
    """A set-up run: the state a step changes, and what feeds it."""

    cfg: FinetuneConfig
    env: DistEnv
    run_dir: Path
    state: TrainState
    dataset: VLADataset
    sampler: EpochSampler
    batches: Iterator[dict]
    anchor_sampler: EpochSampler | None = None
    anchor_batches: Iterator[dict] | None = None
    snapshot_sha256: str = ""


def run_name(cfg: FinetuneConfig) -> str:
    if cfg.run_id_override:
        return cfg.run_id_override
    model = Path(cfg.vlm_path).name if cfg.vlm_path else cfg.model
    name = f"{model}+{cfg.dataset_name}+b{cfg.batch_size}+lr-{cfg.learning_rate}"
    name += "+frozen" if cfg.freeze_vlm else f"+lora-r{cfg.lora_rank}" if cfg.use_lora else "+full"
    name += f"+craft-eps{cfg.craft_epsilon}" if cfg.use_craft else ""
    return name + (f"--{cfg.run_id_note}" if cfg.run_id_note else "")


def anchor_stream(loader, cache: AnchorCache | None, snapshot, device: torch.device) -> Iterator[dict]:
    """Un-augmented anchor batches with their snapshot features `f_tilde` (from the cache, or online)."""
    for batch in loader:
        batch = setup.to_device(batch, device)
        if cache is not None:
            batch["f_tilde"] = cache.features(batch["sample_id"]).to(device)
        else:
            batch["f_tilde"] = snapshot(batch)
        yield batch


def build_run(cfg: FinetuneConfig) -> Run:
    cfg.validate()
    env = init_distributed(cfg.distributed, cfg.threads)
    run_dir = Path(cfg.run_root_dir) / run_name(cfg)
    claim_run_dir(cfg, run_dir, env)
    prepared = setup.prepare(cfg)
    readers, tokenizer, statistics, policy = (
        prepared.readers,
        prepared.tokenizer,
        prepared.statistics,
        prepared.policy,
    )
    dataset = VLADataset(
        readers, tokenizer, setup.sample_config(cfg, policy.config, cfg.image_aug), statistics=statistics
    )
    if cfg.freeze_vlm:
        policy.vla.requires_grad_(False)
    elif cfg.use_lora:
        policy = apply_lora(policy, cfg.lora_rank, cfg.lora_dropout)
    setup.place_model(policy, cfg, env.device)
    model = wrap_model(policy, cfg.distributed, env, policy.blocks())
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(cfg, trainable, unwrap(model))
    scheduler = make_scheduler(cfg, optimizer)
    autocast = setup.autocast_for(cfg, env.device)
    state = TrainState(
        model, optimizer, scheduler, max_grad_norm=cfg.max_grad_norm, autocast=autocast, trainable=trainable
    )
    collate = VLACollator(pad_token_id=tokenizer.pad_token_id)
    sampler = EpochSampler(dataset.sample_ids, seed=cfg.seed, rank=env.rank, world_size=env.world_size)
    loader = setup.batch_loader(dataset, sampler, cfg.batch_size, collate, cfg.num_workers, cfg.seed)
    run = Run(
        cfg,
        env,
        run_dir,
        state,
        dataset,
        sampler,
        (setup.to_device(b, env.device) for b in loader),
        snapshot_sha256=prepared.snapshot_sha256,
    )
    if cfg.use_craft:
        setup_craft(run, prepared, policy, collate, autocast)
    if env.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(draccus.dump(cfg))
        save_dataset_statistics(run_dir / "dataset_statistics.json", dataset.statistics)
        if hasattr(tokenizer, "save"):
            tokenizer.save(run_dir / "word_tokenizer.json")
    return run


def make_optimizer(cfg: FinetuneConfig, trainable: list[torch.nn.Parameter], policy) -> torch.optim.Optimizer:
    """AdamW (or SGD) over the trainable parameters. With `--head_learning_rate` or `--head_only_steps`, two
    groups: the pretrained weights ("vlm"), then the weights trained from scratch ("new",
    `policy.new_parameters()`) at --head_learning_rate if given."""
    groups = [{"params": trainable, "name": "all"}]
    if cfg.head_learning_rate > 0 or cfg.head_only_steps > 0:
        new = {id(p) for p in policy.new_parameters()}
        groups = [
            {"params": [p for p in trainable if id(p) not in new], "name": "vlm"},
            {"params": [p for p in trainable if id(p) in new], "name": "new"},
        ]
        if cfg.head_learning_rate > 0:
            groups[1]["lr"] = cfg.head_learning_rate
        groups = [g for g in groups if g["params"]]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.learning_rate, momentum=0.9, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(
        groups, lr=cfg.learning_rate, weight_decay=cfg.weight_decay, betas=(0.9, cfg.adam_beta2)
    )


def make_scheduler(cfg: FinetuneConfig, optimizer: torch.optim.Optimizer) -> LambdaLR:
    """VLA-Adapter's warm-up and decay for every group; under --head_only_steps K the "vlm" group's rate is
    0 for the first K steps and warms up from step K (LP-FT: the random head does not push its first,
    uninformed gradients into the pretrained features)."""
    warmup, decay = int(cfg.lr_warmup_steps), cfg.num_steps_before_decay
    factors = [
        warmup_then_decay(warmup, decay, start=cfg.head_only_steps if g["name"] == "vlm" else 0)
        for g in optimizer.param_groups
    ]
    return LambdaLR(optimizer, factors)


def setup_craft(run: Run, prepared: setup.Prepared, policy, collate: VLACollator, autocast) -> None:
    """Anchor spec, anchor set (cache or online snapshot), ε, and the CraftStep of the run."""
    cfg, env, tokenizer = run.cfg, run.env, prepared.tokenizer
    spec = setup.anchor_spec(cfg, policy.config.llm.num_hidden_layers)
    anchor_data = setup.anchor_dataset(cfg, prepared)
    cache, snapshot, epsilon = None, None, cfg.craft_epsilon
    if cfg.craft_anchor_source == "cache":
        precision = "bf16" if setup.uses_bf16(cfg, env.device) else "fp32"
        cache = setup.open_anchor_cache(
            cfg, setup.anchor_fingerprint(spec, run.snapshot_sha256, anchor_data, tokenizer, precision)
        )
        ids = setup.anchor_ids(cache, anchor_data)
        epsilon = resolve_epsilon(cfg.craft_epsilon, cfg.craft_epsilon_mode, cache.spread, spec.parts)
        if cfg.craft_epsilon_mode == "balanced":
            run.state.anchor_weights = part_weights(cache.spread, cache.part_dims).to(env.device)
    else:
        ids = anchor_data.sample_ids

        @torch.no_grad()
        def snapshot(batch: dict) -> torch.Tensor:
            with adapters_disabled(policy), autocast():
                return policy(batch, anchor_spec=spec).float()

    sampler = EpochSampler(ids, seed=cfg.seed + 1, rank=env.rank, world_size=env.world_size)
    loader = setup.batch_loader(
        anchor_data, sampler, cfg.anchor_batch_size, collate, cfg.num_workers, cfg.seed + 1
    )
    run.anchor_sampler = sampler
    run.anchor_batches = anchor_stream(loader, cache, snapshot, env.device)
    dual = DualVariable(
        epsilon, cfg.craft_dual_lr, init=cfg.craft_lambda_init, max_value=cfg.craft_lambda_max
    )
    run.state.craft = CraftStep(
        run.state.trainable,
        dual,
        delta=cfg.craft_delta,
        project=cfg.craft_projection,
        correction_rate=cfg.craft_correction_rate,
        retention_scale=cfg.craft_retention_scale,
    )
    run.state.anchor_spec = spec


def save(run: Run) -> Path:
    cfg, state = run.cfg, run.state
    policy = unwrap(state.model)
    stats = {n: s.to_json() for n, s in run.dataset.statistics.items()}
    extra = {"sampler": run.sampler.state_dict(), "snapshot_sha256": run.snapshot_sha256}
    if run.anchor_sampler is not None:
        extra["anchor_sampler"] = run.anchor_sampler.state_dict()

    def write_model_files(directory: Path, model_state: dict) -> None:
        """VLA-Adapter's layout with the processor files, and once per LoRA run the frozen base the adapters
        apply to (<run>/base_vla/): every step folder then evaluates with no other file or flag."""
        save_policy_checkpoint(
            policy,
            directory,
            state.step,
            state_dict=model_state,
            dataset_statistics=stats,
            merge_lora=cfg.merge_lora_during_training,
        )
        sources = setup.tokenizer_sources(cfg), setup.processor_sources(cfg)
        loading.copy_preprocessing_files(*sources, directory)
        base = run.run_dir / loading.BASE_VLA_DIR
        if is_lora(policy.vla) and not base.is_dir():
            save_base_vla(policy, base, model_state)

    keep_only_latest = cfg.save_latest_checkpoint_only
    return save_checkpoint(run.run_dir, state, run.env, extra, write_model_files, keep_only_latest)


def checkpoint_to_resume(cfg: FinetuneConfig, run_dir: Path) -> Path:
    """In `--resum_vla_path` (a run directory or one of its step folders; default: this run's directory),
    the checkpoint of `--resume_step`, else the latest complete one."""
    source = Path(cfg.resum_vla_path) if cfg.resum_vla_path else run_dir
    if (source / STATE_DIR).is_dir():
        path = source
    elif cfg.resume_step is None:
        path = latest_checkpoint(source)
    else:
        path = source / f"step-{cfg.resume_step:06d}"
    if path is None or not (path / STATE_DIR / "state.pt").is_file():
        raise FileNotFoundError(
            f"--resume True but {path or source} holds no complete craft-vla checkpoint (a step-NNNNNN "
            f"folder with {STATE_DIR}/state.pt): point --resum_vla_path at a craft-vla run, or drop --resume"
        )
    return path


# What a resumed run may change: how long it runs, where it goes, what it logs and how it saves, never the
# updates it computes
CHANGEABLE_ON_RESUME = frozenset(
    {
        "max_steps",
        "save_freq",
        "save_latest_checkpoint_only",
        "merge_lora_during_training",
        "resume",
        "resume_step",
        "resum_vla_path",
        "overwrite",
        "run_root_dir",
        "run_id_note",
        "run_id_override",
        "use_val_set",
        "val_freq",
        "val_time_limit",
        "wandb_entity",
        "wandb_project",
        "wandb_mode",
        "wandb_log_freq",
        "num_workers",
        "threads",
        "craft_warn_l_ret",
    }
)


def claim_run_dir(cfg: FinetuneConfig, run_dir: Path, env: DistEnv) -> None:
    """Keep one run per directory: a fresh run refuses a directory that holds another run's checkpoints or
    metrics (unless --overwrite True), and a resumed run refuses flags that would make it a different run."""
    if cfg.resume:
        source = checkpoint_to_resume(cfg, run_dir).parent / "config.yaml"
        if source.exists():
            saved, now = yaml.safe_load(source.read_text()), yaml.safe_load(draccus.dump(cfg))
            changed = sorted(k for k in set(saved) & set(now) - CHANGEABLE_ON_RESUME if saved[k] != now[k])
            if changed:
                lines = "; ".join(f"--{k} was {saved[k]!r}, now {now[k]!r}" for k in changed)
                raise ValueError(
                    f"--resume True continues the run in {source.parent} but these flags change it: {lines}. "
                    "Resume with the run's flags (only "
                    f"{', '.join(sorted(CHANGEABLE_ON_RESUME))} may change), "
                    "or start a new run (another --run_id_note)"
                )
        return
    found = sorted(p.name for p in run_dir.glob("step-*")) + [
        n for n in ("metrics.jsonl",) if (run_dir / n).exists()
    ]
    if found and not cfg.overwrite:
        raise FileExistsError(
            f"{run_dir} already holds a run ({', '.join(found[:3])}): pass --resume True to continue it, "
            "--run_id_note NOTE for a new run beside it, or --overwrite True to replace it"
        )
    if found and env.is_main:
        shutil.rmtree(run_dir)
    barrier()  # no rank writes into the directory before it is cleared


def resume(run: Run) -> None:
    path = checkpoint_to_resume(run.cfg, run.run_dir)
    saved = load_checkpoint(path, run.state, run.env)
    if run.cfg.resume_step is not None and run.state.step != run.cfg.resume_step:
        raise ValueError(f"{path} holds step {run.state.step}, not --resume_step {run.cfg.resume_step}")
    if saved["snapshot_sha256"] != run.snapshot_sha256:
        raise RuntimeError(f"{path} was trained from other snapshot weights than --vlm_path gives now")
    run.sampler.load_state_dict(saved["sampler"])
    if run.anchor_sampler is not None:
        run.anchor_sampler.load_state_dict(saved["anchor_sampler"])


def check_first_retention(log: dict[str, Any], f_norm_sq: float | None, threshold: float) -> None:
    """At step 0 the model is the snapshot: L_ret must be ~0, or the cache belongs to another model/data."""
    l_ret = log.get("craft/L_ret")
    if l_ret is None or f_norm_sq is None:
        return
    if l_ret > threshold * max(f_norm_sq, 1e-12):
        print(
            f"WARNING: L_ret at step 0 is {l_ret:.3g} ({l_ret / f_norm_sq:.2e} of ||f~||²) but the model is "
            "still the snapshot: the anchor cache does not match this model, data or preprocessing (or "
            "augmentation is on)"
        )


def finetune(cfg: FinetuneConfig, aux_loss: AuxLoss | None = None) -> Path:
    """Run (or resume) fine-tuning; returns the run directory. `aux_loss` (Python callers only: the demo's
    co-training oracle) adds a loss whose gradient joins the action gradient (`TrainState.aux_loss`)."""
    val_readers = open_validation_readers(cfg) if cfg.use_val_set else []  # before the model: fail early
    run = build_run(cfg)
    if aux_loss is not None and run.env.world_size > 1:
        # its pass goes around the DDP/FSDP wrapper, so its gradient would not be averaged over ranks
        raise ValueError("an aux_loss runs in a single process only")
    run.state.aux_loss = aux_loss
    if cfg.resume:
        resume(run)
    state, env = run.state, run.env
    validation = validation_set(run, val_readers) if cfg.use_val_set else None
    k = cfg.grad_accumulation_steps
    logger = MetricsLogger(
        run.run_dir,
        enabled=env.is_main,
        wandb_project=cfg.wandb_project,
        wandb_entity=cfg.wandb_entity,
        wandb_mode=cfg.wandb_mode,
        run_name=run.run_dir.name,
        config=dataclasses.asdict(cfg),
        resume_step=state.step if cfg.resume else None,
        wandb_log_freq=cfg.wandb_log_freq,
    )
    f_norm_sq = None
    if cfg.use_craft and cfg.craft_anchor_source == "cache":
        meta = json.loads((Path(cfg.craft_cache_path) / "meta.json").read_text())
        f_norm_sq = meta["spread"]["mean_norm_sq"]
    bar = tqdm(
        total=cfg.max_steps, initial=state.step, desc="finetune", disable=not env.is_main, dynamic_ncols=True
    )
    start = time.perf_counter()
    while state.step < cfg.max_steps:
        batches = [next(run.batches) for _ in range(k)]
        anchors = [next(run.anchor_batches) for _ in range(k)] if state.craft is not None else None
        step = state.step
        log = train_step(state, batches, anchors)
        run.sampler.advance(cfg.batch_size * k)
        if run.anchor_sampler is not None:
            run.anchor_sampler.advance(cfg.anchor_batch_size * k)
        if step == 0 and not cfg.image_aug:
            check_first_retention(log, f_norm_sq, cfg.craft_warn_l_ret)
        if validation is not None and state.step % cfg.val_freq == 0:  # in the record of the step just done
            log.update(validation_metrics(run, validation))
        logger.log(step, log)
        bar.update(1)
        shown = ("loss", "val/loss", "craft/L_ret", "craft/lambda")
        bar.set_postfix({key: f"{log[key]:.4g}" for key in shown if key in log})
        if state.step % cfg.save_freq == 0 or state.step == cfg.max_steps:
            save(run)
    bar.close()
    logger.close()
    if env.is_main:
        seconds = time.perf_counter() - start
        print(f"finished {cfg.max_steps} steps in {seconds:.1f} s; run directory {run.run_dir}")
    return run.run_dir
