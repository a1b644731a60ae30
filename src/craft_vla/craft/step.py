"""One CRaFT optimizer step: action pass, stash of g_act, anchor pass, projection, combination, dual step.

Each pass is an ordinary forward/backward through the (possibly DDP- or FSDP2-wrapped) model, so
the gradients it leaves are the global, rank-averaged, micro-batch-accumulated ones:

    step = CraftStep(model.parameters(), DualVariable(epsilon=0.05, lr=0.1))
    stats = step.run(model, action_batches, anchor_batches, action_loss, retention_loss)
    optimizer.step(); optimizer.zero_grad()

`action_loss(model, batch)` and `retention_loss(model, batch)` return scalar losses averaged over
their micro-batch. A trainer that wants the step spelled out calls `accumulate_backward`,
`stash_action_gradient` and `finish` itself, in that order, and `apply_correction` after the
optimizer's step.

Two ways to enforce the budget (issue 16):
- "dual" (CRAFT_METHOD.md §6, the default): the optimizer consumes g~_act + λ·g_ret and λ follows dual
  ascent. Under AdamW a λ that switches on multiplies the gradient's scale by ‖g_ret‖/‖g_act‖ (30-300 ×
  in the demo) faster than Adam's second moment follows, and the next steps overshoot along g_ret.
- "correction" (`correction_rate` κ > 0): the optimizer consumes g~_act only, so g_ret's scale never
  enters its moments. Its update u is then projected onto the linearised constraint: with the predicted
  retention loss after the update, L_ret + ⟨g_ret, u⟩,
      θ ← θ + u − κ · max(L_ret + ⟨g_ret, u⟩ − ε, 0) / (‖g_ret‖² + δ) · g_ret,
  which for κ = 1 lands the linearised L_ret on ε exactly when the update would exceed it, and moves
  nothing otherwise. λ is not used. Measured on the demo, it does not hold the budget (L_ret 4-11 ε after
  step 100): AdamW's update raises L_ret by about ‖J u‖² beyond the linear term, which no step along g_ret
  alone removes (docs/method.md). It stays as a tested experiment of issue 16, not a default.

`retention_scale="action"` (issue 16) keeps the dual update but rescales g_ret to the action gradient's
norm before λ multiplies it: the optimizer consumes g~_act + λ·(‖g_act‖/‖g_ret‖)·g_ret, so λ = 1 pulls back
as hard as the action loss pushes, whatever the features' units. Measured reason: with per-token anchors
‖g_ret‖ is 10³-10⁴ × ‖g_act‖, and the few early steps with λ > 0 leave AdamW's second moment of every VLM
weight ~10³ × SFT's for the rest of the run (β2 = 0.999), so the VLM barely moves afterwards whatever the
budget says (docs/method.md). "raw" (the default) is CRAFT_METHOD.md §6 as written.
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
from craft_vla.craft.geometry import (
    combine_in_place,
    conflict_coefficient,
    gradient_inner_products,
    local_tensor,
)

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
    `correction_rate` κ > 0 selects the correction mode (module docstring): `.grad` then holds g~_act only,
    and `apply_correction()` after `optimizer.step()` takes the step on the constraint.
    `retention_scale` "action" multiplies λ by ‖g_act‖/‖g_ret‖ in the combination (module docstring).
    """

    RETENTION_SCALES = ("raw", "action")

    def __init__(
        self,
        params: Iterable[nn.Parameter],
        dual: DualVariable,
        delta: float = 1e-12,
        group: dist.ProcessGroup | None = None,
        project: bool = True,
        correction_rate: float = 0.0,
        retention_scale: str = "raw",
    ) -> None:
        if correction_rate < 0:
            raise ValueError(f"correction_rate must be >= 0, got {correction_rate}")
        if retention_scale not in self.RETENTION_SCALES:
            raise ValueError(
                f"retention_scale must be one of {self.RETENTION_SCALES}, got {retention_scale!r}"
            )
        self.retention_scale = retention_scale
        self.params = [p for p in params if p.requires_grad]
        self.dual = dual
        self.delta = delta
        self.project = project
        self.group = group
        self.correction_rate = float(correction_rate)
        self.num_steps = 0
        self.num_conflicts = 0
        self._g_act: list[Tensor | None] | None = None
        # until applied: (L_ret − ε, ‖g_ret‖², ⟨g_ret, θ⟩ before the optimizer's step, g_ret)
        self._correction: tuple[float, float, Tensor, list[Tensor | None]] | None = None

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
        if self.correction_rate > 0:
            kept = [None if g is None else g.detach().clone() for g in g_ret]
            before = gradient_inner_products(kept, [p.detach() for p in self.params])[0]
            self._correction = (l_ret_v - self.dual.epsilon, ret_sq_v, before, kept)
            lam = lam_next = 0.0
            combine_in_place(g_ret, g_act, -coef_v)  # .grad = g~_act: the optimizer never sees g_ret
        else:
            # the same scalars on every rank (global inner products), so the same combination everywhere
            scale = (act_sq_v / ret_sq_v) ** 0.5 if self.retention_scale == "action" and ret_sq_v > 0 else 1.0
            combine_in_place(g_ret, g_act, lam * scale - coef_v)
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

    @torch.no_grad()
    def apply_correction(self) -> float:
        """In the correction mode, after `optimizer.step()`: project its update onto the linearised
        constraint (module docstring); each rank moves its own shards by the same global step. Returns the
        step's size along g_ret (0 when the update keeps the linearised L_ret within ε, and in the dual
        mode, where this does nothing)."""
        if self._correction is None:
            return 0.0
        excess, ret_sq, before, g_ret = self._correction
        self._correction = None
        after = gradient_inner_products(g_ret, [p.detach() for p in self.params])[0]
        predicted_excess = excess + float(after - before)  # L_ret + ⟨g_ret, u⟩ − ε; the step's one sync
        size = self.correction_rate * max(predicted_excess, 0.0) / (ret_sq + self.delta)
        if size > 0:
            for p, g in zip(self.params, g_ret):
                if g is not None:
                    local_tensor(p).add_(local_tensor(g).to(p.dtype), alpha=-size)
        return size

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
