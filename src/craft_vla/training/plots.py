"""Plots of a run's CRaFT dynamics: λ, and L_ret against ε, over training steps."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from craft_vla.training.metrics import read_metrics


def plot_craft_dynamics(run_dir: Path, out_path: Path | None = None) -> Path:
    """Write `craft_dynamics.png` (λ; L_ret with ε; L_act; conflict rate) for the run; returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [r for r in read_metrics(run_dir) if "craft/lambda" in r]
    if not records:
        raise ValueError(
            f"{run_dir}/metrics.jsonl has no craft/ keys: was the run started with --use_craft True?"
        )
    steps = [r["step"] for r in records]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    axes[0].plot(steps, [r["craft/lambda"] for r in records], color="tab:purple")
    axes[0].set_title("Lagrange multiplier λ")
    axes[1].plot(steps, [r["craft/L_ret"] for r in records], label="L_ret", color="tab:blue", lw=0.8)
    axes[1].plot(steps, [r["craft/epsilon"] for r in records], label="ε", color="black", ls="--")
    axes[1].set_title("retention loss vs budget")
    axes[1].legend()
    conflicts = [float(r["craft/conflict"]) for r in records]
    window = max(len(conflicts) // 20, 1)
    rate = [
        sum(conflicts[max(0, i - window + 1) : i + 1]) / len(conflicts[max(0, i - window + 1) : i + 1])
        for i in range(len(conflicts))
    ]
    axes[2].plot(steps, [r["craft/L_act"] for r in records], label="L_act", color="tab:orange")
    axes[2].plot(steps, rate, label=f"conflict rate ({window}-step mean)", color="tab:red", lw=0.8)
    axes[2].set_title("action loss and conflicts")
    axes[2].legend()
    for ax in axes:
        ax.set_xlabel("step")
    fig.tight_layout()
    out_path = Path(out_path or Path(run_dir) / "craft_dynamics.png")
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
    return out_path


@dataclass
class PlotConfig:
    """`craft-vla plot RUN_DIR`: lambda and L_ret against epsilon over training,
    from the run's metrics.jsonl."""

    run_dir: Path = Path(".")  # a run directory of `craft-vla finetune --use_craft True`
    out: Path | None = None  # PNG path; default RUN_DIR/craft_dynamics.png


def plot(cfg: PlotConfig) -> None:
    print(plot_craft_dynamics(cfg.run_dir, cfg.out))
