"""A toy CRaFT problem: a backbone whose features the action task wants to change.

The "pretrained" backbone maps inputs to features; the head must regress targets that the
snapshot features cannot express, so plain fine-tuning drags the backbone away from the
snapshot while CRaFT keeps the drift near ε. Small enough to run in seconds on one CPU core;
the distributed tests use it too.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from craft_vla.craft import CraftStep, DualVariable, accumulate_backward, retention_loss


class ToyVLA(nn.Module):
    """backbone (B, in) -> features (B, D); head features -> actions (B, A)."""

    def __init__(self, in_dim: int = 8, dim: int = 32, action_dim: int = 2) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(in_dim, dim), nn.Tanh(), nn.Linear(dim, dim), nn.Tanh())
        self.head = nn.Linear(dim, action_dim)

    def forward(self, x: Tensor, anchor: bool = False) -> Tensor:
        features = self.backbone(x)
        return features if anchor else self.head(features)


@dataclass
class ToyProblem:
    """Training inputs/targets, anchor inputs and the snapshot's anchor features."""

    x: Tensor
    y: Tensor
    x_anchor: Tensor
    f_tilde: Tensor


def make_toy_problem(model: ToyVLA, num_samples: int = 256, seed: int = 0) -> ToyProblem:
    """Targets from a random non-linear map of the inputs; anchors from the same input distribution."""
    gen = torch.Generator().manual_seed(seed)
    in_dim = model.backbone[0].in_features
    action_dim = model.head.out_features
    x = torch.randn(num_samples, in_dim, generator=gen)
    proj = torch.randn(in_dim, action_dim, generator=gen)
    y = torch.sin(2.0 * x @ proj)
    x_anchor = torch.randn(num_samples, in_dim, generator=gen)
    with torch.no_grad():
        f_tilde = model(x_anchor, anchor=True)
    return ToyProblem(x, y, x_anchor, f_tilde)


def toy_action_loss(model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
    x, y = batch
    return (model(x) - y).abs().mean()


def toy_retention_loss(model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
    x, f_tilde = batch
    return retention_loss(model(x, anchor=True), f_tilde)


def micro_batches(tensors: tuple[Tensor, ...], index: Tensor, k: int) -> list[tuple[Tensor, ...]]:
    """Split the rows `index` of each tensor into k equal micro-batches."""
    return [tuple(t[chunk] for t in tensors) for chunk in index.chunk(k)]


def train_toy(
    model: ToyVLA,
    problem: ToyProblem,
    steps: int,
    use_craft: bool,
    batch_size: int = 32,
    grad_accumulation_steps: int = 1,
    lr: float = 3e-3,
    epsilon: float = 0.05,
    dual_lr: float = 2.0,
    seed: int = 0,
    log_every: int = 0,
) -> list[dict[str, float]]:
    """Fine-tune `model` in place; with `use_craft` False this is plain SFT (same batches, same numbers)."""
    gen = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    craft = CraftStep(model.parameters(), DualVariable(epsilon, dual_lr)) if use_craft else None
    history = []
    for step in range(steps):
        index = torch.randint(0, len(problem.x), (batch_size,), generator=gen)
        action_batches = micro_batches((problem.x, problem.y), index, grad_accumulation_steps)
        if craft is None:
            l_act = accumulate_backward(model, action_batches, toy_action_loss)
            record = {"step": step, "loss": l_act.item()}
        else:
            anchor_index = torch.randint(0, len(problem.x_anchor), (batch_size,), generator=gen)
            anchor_batches = micro_batches(
                (problem.x_anchor, problem.f_tilde), anchor_index, grad_accumulation_steps
            )
            stats = craft.run(model, action_batches, anchor_batches, toy_action_loss, toy_retention_loss)
            record = {"step": step, "loss": stats.l_act, **stats.as_log()}
        optimizer.step()
        optimizer.zero_grad()
        history.append(record)
        if log_every and (step % log_every == 0 or step == steps - 1):
            print(_format_record(record, craft))
    return history


def _format_record(record: dict[str, float], craft: CraftStep | None) -> str:
    line = f"step {record['step']:4d}  L_act {record['loss']:.4f}"
    if craft is not None:
        line += (
            f"  L_ret {record['craft/L_ret']:.4f} (eps {record['craft/epsilon']:.3f})"
            f"  lambda {record['craft/lambda_next']:.3f}  conflict rate {craft.conflict_rate:.2f}"
        )
    return line


def feature_drift(model: ToyVLA, problem: ToyProblem) -> float:
    """L_ret over the whole anchor set."""
    with torch.no_grad():
        return retention_loss(model(problem.x_anchor, anchor=True), problem.f_tilde).item()


def run_toy_demo(steps: int = 300, seed: int = 0, epsilon: float = 0.05) -> dict[str, dict[str, float]]:
    """Plain SFT and CRaFT from the same snapshot on the toy problem; prints per-step logs and a summary."""
    torch.manual_seed(seed)
    snapshot = ToyVLA()
    problem = make_toy_problem(snapshot, seed=seed)
    results = {}
    for name, use_craft in (("sft", False), ("craft", True)):
        model = copy.deepcopy(snapshot)
        print(f"--- {name} ---")
        start = time.perf_counter()
        history = train_toy(
            model, problem, steps, use_craft, epsilon=epsilon, seed=seed, log_every=max(steps // 10, 1)
        )
        with torch.no_grad():
            l_act = toy_action_loss(model, (problem.x, problem.y)).item()
        results[name] = {
            "action_l1": l_act,
            "drift": feature_drift(model, problem),
            "seconds": time.perf_counter() - start,
            "final_lambda": history[-1].get("craft/lambda_next", 0.0),
        }
    print(
        f"\n{'method':8s} {'action L1':>10s} {'drift L_ret':>12s} {'lambda':>8s} "
        f"{'seconds':>8s}   (epsilon {epsilon})"
    )
    for name, r in results.items():
        print(
            f"{name:8s} {r['action_l1']:10.4f} {r['drift']:12.4f} "
            f"{r['final_lambda']:8.3f} {r['seconds']:8.2f}"
        )
    return results
