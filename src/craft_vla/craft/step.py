"""One CRaFT optimizer step: action pass, stash of g_act, anchor pass, projection, combination, dual step.

Each pass is an ordinary forward/backward through the (possibly DDP- or FSDP2-wrapped) model, so
the gradients it leaves are the global, rank-averaged, micro-batch-accumulated ones:

    step = CraftStep(model.parameters(), DualVariable(epsilon=0.05, lr=0.1))
    stats = step.run(model, action_batches, anchor_batches, action_loss, retention_loss)
    optimizer.step(); optimizer.zero_grad()

`action_loss(model, batch)` and `retention_loss(model, batch)` return scalar losses averaged over
their micro-batch. A trainer that wants the step spelled out calls `accumulate_backward`,
`stash_action_gradient` and `finish` itself, in that order.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from craft_vla.craft.dual import DualVariable
from craft_vla.craft.geometry import combine_in_place, conflict_coefficient, gradient_inner_products

LossFn = Callable[[nn.Module, Any], Tensor]


@dataclass
class CraftStats:
    """What one CRaFT step did; `lambda_` is the multiplier used in this step's update."""

    lambda_: float
    lambda_next: float
    l_ret: float
    l_act: float
    cos: float
    conflict: bool
    proj_coef: float
    g_act_norm: float
    g_ret_norm: float
    epsilon: float

    def as_log(self, prefix: str = "craft/") -> dict[str, float]:
        """Metrics under W&B-style keys (`craft/lambda`, `craft/L_ret`, ...)."""
        names = {"lambda_": "lambda", "l_ret": "L_ret", "l_act": "L_act"}
        log = {prefix + names.get(k, k): float(v) for k, v in asdict(self).items()}
        log[prefix + "L_ret/epsilon"] = self.l_ret / self.epsilon if self.epsilon > 0 else float("inf")
        return log


def _sync_context(model: nn.Module, sync: bool) -> contextlib.AbstractContextManager:
    """Skip the gradient all-reduce of a micro-batch that is not the last one (DDP, FSDP2)."""
    if hasattr(model, "set_requires_gradient_sync"):  # FSDP2
        model.set_requires_gradient_sync(sync)
        return contextlib.nullcontext()
    if hasattr(model, "no_sync") and not sync:  # DDP
        return model.no_sync()
    return contextlib.nullcontext()


def accumulate_backward(model: nn.Module, micro_batches: Sequence[Any], loss_fn: LossFn) -> Tensor:
    """Forward and backward every micro-batch with loss/K, syncing gradients on the last one only.

    Returns this rank's mean loss over the micro-batches, detached.
    """
    if not micro_batches:
        raise ValueError("accumulate_backward needs at least one micro-batch")
    k = len(micro_batches)
    total = None
    for i, batch in enumerate(micro_batches):
        with _sync_context(model, sync=i == k - 1):
            loss = loss_fn(model, batch)
            (loss / k).backward()
        total = loss.detach().float() if total is None else total + loss.detach().float()
    return total / k


def mean_over_ranks(x: Tensor, group: dist.ProcessGroup | None = None) -> Tensor:
    """The mean of `x` over the ranks of `group` (identity in a single process)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1:
        x = x.clone()
        dist.all_reduce(x, op=dist.ReduceOp.SUM, group=group)
        x /= dist.get_world_size(group)
    return x


class CraftStep:
    """The CRaFT part of an optimizer step over `params` (the trainable parameters).

    After `finish`, each parameter's `.grad` holds g~_act + λ·g_ret, ready for `optimizer.step()`.
    `group` is the data-parallel group over which the retention loss is averaged (default: world).
    `project=False` skips the conflict projection (the ablation "fixed or dual-weighted penalty only").
    """

    def __init__(
        self,
        params: Iterable[nn.Parameter],
        dual: DualVariable,
        delta: float = 1e-12,
        group: dist.ProcessGroup | None = None,
        project: bool = True,
    ) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.dual = dual
        self.delta = delta
        self.project = project
        self.group = group
        self.num_steps = 0
        self.num_conflicts = 0
        self._g_act: list[Tensor | None] | None = None

    def stash_action_gradient(self) -> None:
        """Copy g_act aside and zero `.grad` in place, so that the anchor pass leaves g_ret there."""
        self._g_act = []
        for p in self.params:
            if p.grad is None:
                self._g_act.append(None)
                continue
            self._g_act.append(p.grad.detach().clone())  # a DTensor stays a DTensor: it knows its sharding
            p.grad.zero_()

    def finish(self, l_act: Tensor | float, l_ret: Tensor) -> CraftStats:
        """Project, combine in place and take the dual step; `l_ret`/`l_act` are this rank's means."""
        if self._g_act is None:
            raise RuntimeError("CraftStep.finish called before stash_action_gradient")
        g_act, self._g_act = self._g_act, None
        g_ret = [p.grad for p in self.params]
        dot, ret_sq, act_sq = gradient_inner_products(g_act, g_ret)
        coef = conflict_coefficient(dot, ret_sq, self.delta) if self.project else torch.zeros_like(dot)
        losses = torch.stack(
            [torch.as_tensor(x, dtype=torch.float32, device=dot.device) for x in (l_ret, l_act)]
        )
        losses = mean_over_ranks(losses, self.group)
        cos = dot / (act_sq.sqrt() * ret_sq.sqrt()).clamp_min(1e-30)
        # the step's single host sync
        dot_v, ret_sq_v, act_sq_v, coef_v, cos_v, l_ret_v, l_act_v = torch.stack(
            [dot, ret_sq, act_sq, coef, cos, losses[0], losses[1]]
        ).tolist()
        lam = self.dual.value
        combine_in_place(g_ret, g_act, lam - coef_v)
        lam_next = self.dual.update(l_ret_v)
        conflict = dot_v < 0
        self.num_steps += 1
        self.num_conflicts += int(conflict)
        return CraftStats(
            lambda_=lam,
            lambda_next=lam_next,
            l_ret=l_ret_v,
            l_act=l_act_v,
            cos=cos_v,
            conflict=conflict,
            proj_coef=coef_v,
            g_act_norm=act_sq_v**0.5,
            g_ret_norm=ret_sq_v**0.5,
            epsilon=self.dual.epsilon,
        )

    def run(
        self,
        model: nn.Module,
        action_batches: Sequence[Any],
        anchor_batches: Sequence[Any],
        action_loss: LossFn,
        retention_loss: LossFn,
    ) -> CraftStats:
        """The whole CRaFT part of a step: action pass, stash, anchor pass, finish."""
        l_act = accumulate_backward(model, action_batches, action_loss)
        self.stash_action_gradient()
        l_ret = accumulate_backward(model, anchor_batches, retention_loss)
        return self.finish(l_act, l_ret)

    @property
    def conflict_rate(self) -> float:
        return self.num_conflicts / max(self.num_steps, 1)

    def state_dict(self) -> dict[str, Any]:
        return {
            "dual": self.dual.state_dict(),
            "num_steps": self.num_steps,
            "num_conflicts": self.num_conflicts,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.dual.load_state_dict(state["dual"])
        self.num_steps = int(state["num_steps"])
        self.num_conflicts = int(state["num_conflicts"])
