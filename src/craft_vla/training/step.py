"""One optimizer step, top to bottom: action pass, anchor pass, projection and dual step, optimizer.

ARCHITECTURE.md decision 1: each pass is an ordinary forward/backward through the wrapped model,
so DDP, FSDP2 and gradient accumulation average the gradients as they always do.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from craft_vla.craft import AnchorSpec, CraftStep, accumulate_backward, retention_loss
from craft_vla.training.distributed import mean_over_ranks

Batch = dict[str, Tensor]


@dataclass
class TrainState:
    """Everything a step changes; `craft` is None for plain fine-tuning."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    craft: CraftStep | None = None
    anchor_spec: AnchorSpec | None = None
    max_grad_norm: float = 0.0
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    step: int = 0
    trainable: list[nn.Parameter] = field(default_factory=list)


class ActionLoss:
    """L1 action loss of one micro-batch; keeps the side metrics (L1 of current / next actions) it saw."""

    def __init__(self, autocast: Callable[[], contextlib.AbstractContextManager]) -> None:
        self.autocast = autocast
        self.sums: dict[str, Tensor] = {}
        self.count = 0

    def __call__(self, model: nn.Module, batch: Batch) -> Tensor:
        with self.autocast():
            out = model(batch)
        for key, value in getattr(out, "metrics", {}).items():
            self.sums[key] = self.sums.get(key, 0.0) + value.detach().float()
        self.count += 1
        return out.loss

    def means(self) -> dict[str, Tensor]:
        return {k: v / max(self.count, 1) for k, v in self.sums.items()}


def anchor_loss(spec: AnchorSpec, autocast: Callable[[], contextlib.AbstractContextManager]):
    """Retention loss of one anchor micro-batch: features of the VLM up to layer M vs the cached f~."""

    def loss(model: nn.Module, batch: Batch) -> Tensor:
        with autocast():
            features = model(batch, anchor_spec=spec)
        return retention_loss(features, batch["f_tilde"])

    return loss


def train_step(state: TrainState, batches: Sequence[Batch], anchor_batches: Sequence[Batch] | None) -> dict[str, Any]:
    """One optimizer step over `batches` (micro-batches of this rank) and, with CRaFT, `anchor_batches`."""
    action_loss = ActionLoss(state.autocast)
    l_act = accumulate_backward(state.model, batches, action_loss)
    log: dict[str, Any] = {}
    if state.craft is not None:
        state.craft.stash_action_gradient()
        l_ret = accumulate_backward(state.model, anchor_batches, anchor_loss(state.anchor_spec, state.autocast))
        log.update(state.craft.finish(l_act, l_ret).as_log())
    grads = [p.grad for p in state.trainable if p.grad is not None]
    if state.max_grad_norm > 0:
        grad_norm = torch.nn.utils.clip_grad_norm_(state.trainable, state.max_grad_norm)
    else:
        grad_norm = torch.nn.utils.get_total_norm(grads)
    log["lr"] = state.scheduler.get_last_lr()[0]
    state.optimizer.step()
    state.scheduler.step()
    state.optimizer.zero_grad(set_to_none=True)
    state.step += 1
    side = action_loss.means()
    names = sorted(side)
    reduced = mean_over_ranks(torch.stack([l_act.float(), *[side[k] for k in names]]))
    grad_norm = grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm
    values = torch.cat([reduced, grad_norm.float().reshape(1).to(reduced.device)]).tolist()
    log["loss"] = values[0]
    log.update(dict(zip(names, values[1:-1])))
    log["grad_norm"] = values[-1]
    return log


def warmup_then_decay(warmup_steps: int, decay_step: int) -> Callable[[int], float]:
    """VLA-Adapter's schedule as a multiplier: linear 10 % -> 100 % over warm-up, then ×0.1 after decay_step."""

    def factor(step: int) -> float:
        warm = 0.1 + 0.9 * step / warmup_steps if step < warmup_steps else 1.0
        return warm * (0.1 if step >= decay_step else 1.0)

    return factor
