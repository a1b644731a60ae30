"""One optimizer step, top to bottom: action pass, anchor pass, projection and dual step, optimizer.

ARCHITECTURE.md decision 1: each pass is an ordinary forward/backward through the wrapped model,
so DDP, FSDP2 and gradient accumulation average the gradients as they always do.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from craft_vla.craft import AnchorSpec, CraftStep, accumulate_backward, retention_loss
from craft_vla.training.distributed import mean_over_ranks

Batch = dict[str, Tensor]
AuxLoss = Callable[[nn.Module, int], Tensor]  # (model, step) -> scalar


@dataclass
class TrainState:
    """Everything a step changes; `craft` is None for plain fine-tuning."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    craft: CraftStep | None = None
    anchor_spec: AnchorSpec | None = None
    anchor_weights: Tensor | None = None  # per-feature weights of L_ret (the balanced ε mode), else None
    max_grad_norm: float = 0.0
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    step: int = 0
    trainable: list[nn.Parameter] = field(default_factory=list)
    # an extra loss (model, step) -> scalar whose gradient joins the action gradient (the demo's co-training
    # oracle); it must depend on the step alone, so that a resumed run sees the same batches
    aux_loss: AuxLoss | None = None


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


def anchor_loss(
    spec: AnchorSpec,
    autocast: Callable[[], contextlib.AbstractContextManager],
    weights: Tensor | None = None,
):
    """Retention loss of one anchor micro-batch: features of the VLM up to layer M vs the cached f~."""

    def loss(model: nn.Module, batch: Batch) -> Tensor:
        with autocast():
            features = model(batch, anchor_spec=spec)
        return retention_loss(features, batch["f_tilde"], weights)

    return loss


def train_step(
    state: TrainState, batches: Sequence[Batch], anchor_batches: Sequence[Batch] | None
) -> dict[str, Any]:
    """One optimizer step over `batches` (micro-batches of this rank) and, with CRaFT, `anchor_batches`."""
    action_loss = ActionLoss(state.autocast)
    l_act = accumulate_backward(state.model, batches, action_loss)
    log: dict[str, Any] = {}
    if state.aux_loss is not None:
        aux = state.aux_loss(state.model, state.step)
        aux.backward()  # .grad = g_act + ∇aux: for CRaFT, part of the task's gradient
        log["aux_loss"] = float(aux.detach())
    if state.craft is not None:
        state.craft.stash_action_gradient()
        l_ret = accumulate_backward(
            state.model, anchor_batches, anchor_loss(state.anchor_spec, state.autocast, state.anchor_weights)
        )
        log.update(state.craft.finish(l_act, l_ret).as_log())
    grads = [p.grad for p in state.trainable if p.grad is not None]
    if state.max_grad_norm > 0:
        grad_norm = torch.nn.utils.clip_grad_norm_(state.trainable, state.max_grad_norm)
    else:
        grad_norm = torch.nn.utils.get_total_norm(grads)
    side = action_loss.means()
    names = sorted(side)
    reduced = mean_over_ranks(torch.stack([l_act.float(), *[side[k] for k in names]]))
    grad_norm = grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm
    values = torch.cat([reduced, grad_norm.float().reshape(1).to(reduced.device)]).tolist()
    check_finite(state.step, values[0], values[-1], log.get("craft/L_ret"))  # before any weight changes
    log["lr"] = state.scheduler.get_last_lr()[0]
    state.optimizer.step()
    if state.craft is not None and state.craft.correction_rate > 0:
        # the correction mode projects the optimizer's update onto the linearised constraint
        log["craft/correction"] = state.craft.apply_correction()
    state.scheduler.step()
    state.optimizer.zero_grad(set_to_none=True)
    state.step += 1
    log["loss"] = values[0]
    log.update(dict(zip(names, values[1:-1])))
    log["grad_norm"] = values[-1]
    return log


class NonFiniteError(ValueError):
    """A loss or gradient that is NaN or infinite: the step is not applied, and nothing is saved."""


def check_finite(step: int, loss: float, grad_norm: float, l_ret: float | None = None) -> None:
    """Stop the run at the first non-finite loss or gradient (the same values on every rank, so all stop)."""
    values = {"L_act": loss, "gradient norm": grad_norm, **({"L_ret": l_ret} if l_ret is not None else {})}
    bad = {k: v for k, v in values.items() if not math.isfinite(v)}
    if bad:
        found = ", ".join(f"{k} {v}" for k, v in bad.items())
        raise NonFiniteError(
            f"step {step}: {found}; the update was not applied and no checkpoint is written. Likely causes: "
            "a learning rate too high for this model (--learning_rate), or non-finite values in the data "
            "(check it with `craft-vla data inspect`)"
        )


def warmup_then_decay(warmup_steps: int, decay_step: int, start: int = 0) -> Callable[[int], float]:
    """VLA-Adapter's schedule as a multiplier: at step i, 0.1 + 0.9 · min((i + 1) / warm-up, 1), then ×0.1
    from `decay_step` on (MultiStepLR). VLA-Adapter writes the warm-up lr into the optimizer every step, which
    also undoes the decay one step after it happens; here the decay holds, as its MultiStepLR intends.
    With `start` > 0 the multiplier is 0 before step `start` and the warm-up counts from there (the VLM's
    weights under --head_only_steps); the decay step stays absolute."""

    def factor(step: int) -> float:
        if step < start:
            return 0.0
        i = step - start
        warm = 0.1 + 0.9 * min((i + 1) / warmup_steps, 1.0) if warmup_steps > 0 else 1.0
        return warm * (0.1 if step >= decay_step else 1.0)

    return factor
