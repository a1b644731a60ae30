"""Training-state checkpoints for exact resume, written atomically.

A checkpoint is a folder `step-{step:06d}/` in the run directory with VLA-Adapter's layout (written
by `craft_vla.models`) plus `training_state/`: the trainable weights (safetensors), the optimizer,
scheduler and CRaFT state, the data cursors and each rank's RNG states. The folder is written under
a temporary name and renamed when complete, so a crash leaves either the old checkpoint or the new one.
"""

from __future__ import annotations

import os
import random
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from craft_vla.training.distributed import DistEnv, barrier
from craft_vla.training.step import TrainState

STATE_DIR = "training_state"
_STEP_DIR = re.compile(r"^step-(\d{6,})$")
_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / f"step-{step:06d}"


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The complete checkpoint folder with the highest step, or None."""
    steps = [(int(m.group(1)), p) for p in Path(run_dir).glob("step-*") if (m := _STEP_DIR.match(p.name))]
    complete = [(s, p) for s, p in steps if (p / STATE_DIR / "state.pt").exists()]
    return max(complete)[1] if complete else None


def rng_state() -> dict[str, Any]:
    """This process's RNG states as tensors and lists (loadable with `weights_only=True`)."""
    py_version, py_state, py_gauss = random.getstate()
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": [py_version, list(py_state), py_gauss],
        "numpy": [
            np_kind,
            torch.from_numpy(np_keys.astype(np.int64)),
            int(np_pos),
            int(np_has_gauss),
            float(np_gauss),
        ],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, py_state, gauss = state["python"]
    random.setstate((version, tuple(py_state), gauss))
    kind, keys, pos, has_gauss, np_gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, np_gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    run_dir: Path,
    state: TrainState,
    env: DistEnv,
    extra: dict[str, Any],
    write_model_files: Callable[[Path, dict[str, torch.Tensor]], None] | None = None,
    keep_only_latest: bool = False,
) -> Path:
    """Write `step-{state.step}` atomically; every rank must call it (collective under FSDP2)."""
    final = checkpoint_dir(run_dir, state.step)
    tmp = final.with_name(final.name + ".tmp")
    model_state = get_model_state_dict(state.model, options=_FULL)
    optim_state = get_optimizer_state_dict(state.model, state.optimizer, options=_FULL)
    if env.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / STATE_DIR).mkdir(parents=True)
    barrier()
    torch.save(rng_state(), tmp / STATE_DIR / f"rng_rank{env.rank}.pt")
    barrier()
    if env.is_main:
        trainable_names = {n for n, p in _named_trainable(state.model)}
        trainable = {n: t.contiguous() for n, t in model_state.items() if n in trainable_names}
        save_file(trainable, str(tmp / STATE_DIR / "trainable.safetensors"))
        torch.save(
            {
                "step": state.step,
                "optimizer": optim_state,
                "scheduler": state.scheduler.state_dict(),
                "craft": state.craft.state_dict() if state.craft is not None else None,
                "world_size": env.world_size,
                **extra,
            },
            tmp / STATE_DIR / "state.pt",
        )
        if write_model_files is not None:
            write_model_files(tmp, model_state)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        if keep_only_latest:
            for old in Path(run_dir).glob("step-*"):
                if old != final and _STEP_DIR.match(old.name):
                    shutil.rmtree(old)
    barrier()
    return final


def load_checkpoint(path: Path, state: TrainState, env: DistEnv) -> dict[str, Any]:
    """Restore weights, optimizer, scheduler, CRaFT state and this rank's RNG; returns the saved extras."""
    path = Path(path)
    saved = torch.load(path / STATE_DIR / "state.pt", map_location="cpu", weights_only=True)
    if saved["world_size"] != env.world_size:
        raise RuntimeError(
            f"{path} was written by {saved['world_size']} processes, this run has {env.world_size}: "
            "resume with the same number of processes so that every rank sees the batches it would have seen"
        )
    trainable = load_file(str(path / STATE_DIR / "trainable.safetensors"))
    set_model_state_dict(state.model, trainable, options=StateDictOptions(full_state_dict=True, strict=False))
    set_optimizer_state_dict(
        state.model, state.optimizer, saved["optimizer"], options=StateDictOptions(full_state_dict=True)
    )
    state.scheduler.load_state_dict(saved["scheduler"])
    if state.craft is not None:
        if saved["craft"] is None:
            raise RuntimeError(f"{path} comes from a run without CRaFT; resume it with --use_craft False")
        state.craft.load_state_dict(saved["craft"])
    state.step = saved["step"]
    set_rng_state(torch.load(path / STATE_DIR / f"rng_rank{env.rank}.pt", weights_only=True))
    return saved


def _named_trainable(model: torch.nn.Module):
    """(name, parameter) of the trainable parameters, with the names state dicts use."""
    for name, p in model.named_parameters():
        if p.requires_grad:
            yield name.replace("module.", "", 1) if name.startswith("module.") else name, p
