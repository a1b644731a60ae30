"""Gradient geometry over the whole flattened parameter vector, and the conflict-aware projection.

Inner products are global: under FSDP2 each rank holds shards (DTensor gradients) and sums its
local part; one all-reduce of a 3-vector per shard group completes the sums. Gradients that are
not sharded (plain tensors, replicated DTensors) are identical on every rank and are added after
the reduce. Everything is accumulated in float32 and nothing syncs with the host.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import Tensor
from torch.distributed.tensor import DTensor


def local_tensor(t: Tensor) -> Tensor:
    """The part of `t` stored on this rank (a DTensor's local shard, or `t` itself)."""
    return t.to_local() if isinstance(t, DTensor) else t


def _shard_dims(t: Tensor) -> tuple[int, ...]:
    if not isinstance(t, DTensor):
        return ()
    return tuple(i for i, p in enumerate(t.placements) if p.is_shard())


def _partial_products(a: Sequence[Tensor], b: Sequence[Tensor]) -> Tensor:
    """[<a, b>, ||b||², ||a||²] over local tensors, float32 (3,)."""
    rows = []
    for x, y in zip(a, b):
        x, y = local_tensor(x).reshape(-1).float(), local_tensor(y).reshape(-1).float()
        rows.append(torch.stack([torch.dot(x, y), torch.dot(y, y), torch.dot(x, x)]))
    return torch.stack(rows).sum(dim=0)


def gradient_inner_products(g_act: Sequence[Tensor | None], g_ret: Sequence[Tensor | None]) -> Tensor:
    """Global [<g_act, g_ret>, ||g_ret||², ||g_act||²] as a float32 tensor (3,).

    A `None` entry is a zero gradient. Sharded DTensor entries are reduced over their mesh's shard
    dimensions; every rank ends with the same three numbers.
    """
    if len(g_act) != len(g_ret):
        raise ValueError(f"g_act has {len(g_act)} tensors but g_ret has {len(g_ret)}")
    groups: dict[tuple, tuple[list[Tensor], list[Tensor], Tensor]] = {}
    device = None
    for a, r in zip(g_act, g_ret):
        ref = r if isinstance(r, DTensor) or a is None else a
        if ref is None:
            continue
        if isinstance(a, DTensor) != isinstance(r, DTensor) and a is not None and r is not None:
            raise TypeError("g_act and g_ret mix DTensor and plain tensors for one parameter")
        device = local_tensor(ref).device
        shard_dims = _shard_dims(ref)
        key = (id(ref.device_mesh), shard_dims) if shard_dims else ()
        acts, rets, _ = groups.setdefault(key, ([], [], ref))
        acts.append(a if a is not None else torch.zeros_like(r))
        rets.append(r if r is not None else torch.zeros_like(a))
    total = torch.zeros(3, dtype=torch.float32, device=device)
    for key, (acts, rets, ref) in groups.items():
        partial = _partial_products(acts, rets)
        for dim in key[1] if key else ():  # sharded: complete the per-rank partial sums
            dist.all_reduce(partial, op=dist.ReduceOp.SUM, group=ref.device_mesh.get_group(dim))
        total = total + partial
    return total


def conflict_coefficient(dot: Tensor, ret_sq: Tensor, delta: float = 1e-12) -> Tensor:
    """c = <g_act, g_ret> / (||g_ret||² + δ) when the gradients conflict (<g_act, g_ret> < 0), else 0."""
    return torch.where(dot < 0, dot / (ret_sq + delta), torch.zeros_like(dot))


def project_conflicting(
    g_act: Sequence[Tensor], g_ret: Sequence[Tensor], delta: float = 1e-12
) -> list[Tensor]:
    """g~_act = g_act − c·g_ret with the global coefficient c; the inputs are left untouched."""
    dot, ret_sq, _ = gradient_inner_products(g_act, g_ret)
    coef = conflict_coefficient(dot, ret_sq, delta)
    return [a - (coef * r.float()).to(a.dtype) for a, r in zip(g_act, g_ret)]


def combine_in_place(
    grads: Sequence[Tensor | None], g_act: Sequence[Tensor | None], ret_scale: float
) -> None:
    """grad ← g_act + ret_scale·grad, in place (`grads` hold g_ret; `ret_scale` = λ − c).

    One pass over memory per tensor (`torch.add(..., out=grad)`); the gradient tensors are modified,
    never rebound, so DDP bucket views and FSDP2 shards stay valid.
    """
    for g, a in zip(grads, g_act):
        if g is None:
            continue
        g = local_tensor(g)
        if a is None:
            g.mul_(ret_scale)
        else:
            torch.add(local_tensor(a), g, alpha=ret_scale, out=g)
