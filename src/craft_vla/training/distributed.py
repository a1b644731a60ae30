"""The one place that knows about distribution: process group set-up, model wrapping, reductions.

Launch with torchrun; `--distributed ddp|fsdp` picks the wrapper. NCCL on GPU, gloo on CPU.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from craft_vla.craft.step import mean_over_ranks  # noqa: F401  (re-exported for the trainer)
from craft_vla.training.threads import threads_per_process


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(mode: str, threads: int = 0) -> DistEnv:
    """Join the torchrun process group when launched by torchrun; a single process otherwise. Each process
    takes `threads` torch threads (0: `threads_per_process` of the processes on this machine)."""
    torch.set_num_threads(threads_per_process(int(os.environ.get("LOCAL_WORLD_SIZE", "1")), threads))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if mode != "none" and world_size == 1 and "RANK" not in os.environ:
        raise RuntimeError(
            f"--distributed {mode} needs torchrun, e.g. `torchrun --nproc-per-node 2 "
            "-m craft_vla.cli.finetune ...`"
        )
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    if world_size > 1 and mode == "none":
        raise RuntimeError("launched by torchrun with several processes: pass --distributed ddp or fsdp")
    return DistEnv(rank, world_size, local_rank, device)


def wrap_model(model: nn.Module, mode: str, env: DistEnv, shard_units: Iterable[nn.Module] = ()) -> nn.Module:
    """DDP (unused parameters allowed: the anchor pass skips the policy head) or FSDP2 per unit + root."""
    if mode == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [env.local_rank] if env.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=True)
    if mode == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(env.device.type, (env.world_size,))
        for unit in shard_units:
            fully_shard(unit, mesh=mesh)
        return fully_shard(model, mesh=mesh)
    return model


def unwrap(model: nn.Module) -> nn.Module:
    """The user module under a DDP wrapper (FSDP2 modifies the module in place)."""
    return model.module if hasattr(model, "module") and hasattr(model, "no_sync") else model


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()
