"""The fine-tuning run: setup, the loop, checkpoints. One step is `train_step` (step.py).

    craft-vla finetune --dataset_name craft_tabletop --data_root_dir data --use_craft True \\
        --craft_cache_path caches/tabletop --max_steps 2000
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import draccus
import torch
from tqdm import tqdm

from craft_vla.craft import CraftStep, DualVariable
from craft_vla.craft.cache import AnchorCache
from craft_vla.data.collate import VLACollator
from craft_vla.data.dataset import VLADataset
from craft_vla.data.normalize import save_dataset_statistics
from craft_vla.data.sampler import EpochSampler
from craft_vla.data.statistics import compute_dataset_statistics
from craft_vla.data.transforms import infer_dataset_kind
from craft_vla.models.checkpoint import save_policy_checkpoint
from craft_vla.models.lora import adapters_disabled, apply_lora
from craft_vla.training import setup
from craft_vla.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from craft_vla.training.config import FinetuneConfig
from craft_vla.training.distributed import DistEnv, init_distributed, unwrap, wrap_model
from craft_vla.training.metrics import MetricsLogger
from craft_vla.training.step import TrainState, train_step, warmup_then_decay

SHARD_UNITS = ("Qwen2DecoderLayer", "Block", "ProBridgeBlock", "BridgeBlock")


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
    name = f"{cfg.model if not cfg.vlm_path else Path(cfg.vlm_path).name}+{cfg.dataset_name}+b{cfg.batch_size}+lr-{cfg.learning_rate}"
    name += f"+lora-r{cfg.lora_rank}" if cfg.use_lora else "+full"
    name += f"+craft-eps{cfg.craft_epsilon}" if cfg.use_craft else ""
    return name + (f"--{cfg.run_id_note}" if cfg.run_id_note else "")


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def anchor_stream(loader, cache: AnchorCache | None, snapshot, device: torch.device) -> Iterator[dict]:
    """Un-augmented anchor batches with their snapshot features `f_tilde` (from the cache, or online)."""
    for batch in loader:
        batch = to_device(batch, device)
        if cache is not None:
            batch["f_tilde"] = cache.features(batch["sample_id"]).to(device)
        else:
            batch["f_tilde"] = snapshot(batch)
        yield batch


def build_run(cfg: FinetuneConfig) -> Run:
    cfg.validate()
    env = init_distributed(cfg.distributed)
    torch.manual_seed(cfg.seed)  # same initialisation on every rank
    run_dir = Path(cfg.run_root_dir) / run_name(cfg)
    readers = setup.open_readers(cfg)
    tokenizer = setup.load_tokenizer(cfg, readers)
    statistics = {r.name: compute_dataset_statistics(r, infer_dataset_kind(r.name)) for r in readers}
    first = statistics[min(statistics)]
    action_dims = {s.action.dim for s in statistics.values()}
    if len(action_dims) != 1:
        raise ValueError(f"the datasets of a mixture must share an action dimension, found {sorted(action_dims)}")
    proprio_dim = first.proprio.dim if cfg.use_proprio and first.proprio is not None else None
    policy, snapshot_sha256 = setup.build_model(cfg, action_dims.pop(), proprio_dim, tokenizer.vocab_size)
    model_cfg = policy.config
    dataset = VLADataset(readers, tokenizer, setup.sample_config(cfg, model_cfg, cfg.image_aug), statistics=statistics)
    if cfg.freeze_vlm:
        policy.vla.requires_grad_(False)
    elif cfg.use_lora:
        policy = apply_lora(policy, cfg.lora_rank, cfg.lora_dropout)
    setup.place_model(policy, cfg, env.device)
    model = wrap_model(policy, cfg.distributed, env, [m for m in policy.modules() if type(m).__name__ in SHARD_UNITS])
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(cfg, trainable, unwrap(model))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_then_decay(cfg.lr_warmup_steps, cfg.num_steps_before_decay))
    autocast = setup.autocast_for(cfg, env.device)
    state = TrainState(model, optimizer, scheduler, max_grad_norm=cfg.max_grad_norm, autocast=autocast, trainable=trainable)
    collate = VLACollator(pad_token_id=tokenizer.pad_token_id)
    sampler = EpochSampler(dataset.sample_ids, seed=cfg.seed, rank=env.rank, world_size=env.world_size)
    loader = setup.batch_loader(dataset, sampler, cfg.batch_size, collate, cfg.num_workers, cfg.seed)
    run = Run(cfg, env, run_dir, state, dataset, sampler, (to_device(b, env.device) for b in loader), snapshot_sha256=snapshot_sha256)
    if cfg.use_craft:
        setup_craft(run, policy, tokenizer, collate, autocast)
    if env.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(draccus.dump(cfg))
        save_dataset_statistics(run_dir / "dataset_statistics.json", dataset.statistics)
        if hasattr(tokenizer, "save"):
            tokenizer.save(run_dir / "word_tokenizer.json")
    return run


def make_optimizer(cfg: FinetuneConfig, trainable: list[torch.nn.Parameter], policy) -> torch.optim.Optimizer:
    """AdamW (or SGD) over the trainable parameters; with `--head_learning_rate`, the action head and the proprio
    projector (trained from scratch) in a group of their own at that rate."""
    groups = [{"params": trainable}]
    if cfg.head_learning_rate > 0:
        new = {id(p) for m in (policy.action_head, policy.proprio_projector) if m is not None for p in m.parameters()}
        groups = [
            {"params": [p for p in trainable if id(p) not in new]},
            {"params": [p for p in trainable if id(p) in new], "lr": cfg.head_learning_rate},
        ]
        groups = [g for g in groups if g["params"]]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.learning_rate, momentum=0.9, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, weight_decay=cfg.weight_decay, betas=(0.9, cfg.adam_beta2))


def setup_craft(run: Run, policy, tokenizer, collate: VLACollator, autocast) -> None:
    """Anchor spec, anchor set (cache or online snapshot), ε, and the CraftStep of the run."""
    cfg, env = run.cfg, run.env
    spec = setup.anchor_spec(cfg, policy.config.llm.num_hidden_layers)
    anchor_data = VLADataset(run.dataset.readers, tokenizer, setup.sample_config(cfg, policy.config, augment=False), statistics=run.dataset.statistics)
    cache, snapshot, epsilon = None, None, cfg.craft_epsilon
    if cfg.craft_anchor_source == "cache":
        precision = "bf16" if setup.uses_bf16(cfg, env.device) else "fp32"
        cache = setup.open_anchor_cache(cfg, setup.anchor_fingerprint(spec, run.snapshot_sha256, anchor_data, tokenizer, precision))
        ids = setup.anchor_ids(cache, anchor_data)
        if cfg.craft_epsilon_mode == "relative":
            epsilon = cfg.craft_epsilon * cache.spread[{"both": "all"}.get(spec.parts, spec.parts)]
    else:
        ids = anchor_data.sample_ids

        @torch.no_grad()
        def snapshot(batch: dict) -> torch.Tensor:
            with adapters_disabled(policy), autocast():
                return policy(batch, anchor_spec=spec).float()

    sampler = EpochSampler(ids, seed=cfg.seed + 1, rank=env.rank, world_size=env.world_size)
    loader = setup.batch_loader(anchor_data, sampler, cfg.anchor_batch_size, collate, cfg.num_workers, cfg.seed + 1)
    run.anchor_sampler = sampler
    run.anchor_batches = anchor_stream(loader, cache, snapshot, env.device)
    dual = DualVariable(epsilon, cfg.craft_dual_lr, init=cfg.craft_lambda_init, max_value=cfg.craft_lambda_max)
    run.state.craft = CraftStep(run.state.trainable, dual, delta=cfg.craft_delta, project=cfg.craft_projection)
    run.state.anchor_spec = spec


def save(run: Run) -> Path:
    cfg, state = run.cfg, run.state
    policy = unwrap(state.model)
    stats = {n: s.to_json() for n, s in run.dataset.statistics.items()}
    extra = {"sampler": run.sampler.state_dict(), "snapshot_sha256": run.snapshot_sha256}
    if run.anchor_sampler is not None:
        extra["anchor_sampler"] = run.anchor_sampler.state_dict()

    def write_model_files(directory: Path, model_state: dict) -> None:
        save_policy_checkpoint(policy, directory, state.step, state_dict=model_state, dataset_statistics=stats)

    return save_checkpoint(run.run_dir, state, run.env, extra, write_model_files, cfg.save_latest_checkpoint_only)


def resume(run: Run) -> None:
    path = latest_checkpoint(run.run_dir) if run.cfg.resume_step is None else run.run_dir / f"step-{run.cfg.resume_step:06d}"
    if path is None or not path.exists():
        raise FileNotFoundError(f"--resume True but no complete checkpoint in {run.run_dir}")
    saved = load_checkpoint(path, run.state, run.env)
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
            f"WARNING: L_ret at step 0 is {l_ret:.3g} ({l_ret / f_norm_sq:.2e} of ||f~||²) but the model is still the "
            "snapshot: the anchor cache does not match this model, data or preprocessing (or augmentation is on)"
        )


def finetune(cfg: FinetuneConfig) -> Path:
    """Run (or resume) fine-tuning; returns the run directory."""
    run = build_run(cfg)
    if cfg.resume:
        resume(run)
    state, env = run.state, run.env
    k = cfg.grad_accumulation_steps
    logger = MetricsLogger(run.run_dir, enabled=env.is_main, wandb_project=cfg.wandb_project, wandb_entity=cfg.wandb_entity,
                           wandb_mode=cfg.wandb_mode, run_name=run.run_dir.name, config=dataclasses.asdict(cfg),
                           resume_step=state.step if cfg.resume else None)
    f_norm_sq = None
    if cfg.use_craft and cfg.craft_anchor_source == "cache":
        f_norm_sq = json.loads((Path(cfg.craft_cache_path) / "meta.json").read_text())["spread"]["mean_norm_sq"]
    bar = tqdm(total=cfg.max_steps, initial=state.step, desc="finetune", disable=not env.is_main, dynamic_ncols=True)
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
        logger.log(step, log)
        bar.update(1)
        bar.set_postfix({k_: f"{log[k_]:.4g}" for k_ in ("loss", "craft/L_ret", "craft/lambda") if k_ in log})
        if state.step % cfg.save_freq == 0 or state.step == cfg.max_steps:
            save(run)
    bar.close()
    logger.close()
    if env.is_main:
        print(f"finished {cfg.max_steps} steps in {time.perf_counter() - start:.1f} s; run directory {run.run_dir}")
    return run.run_dir
