"""QA kept and action error against the budget ε: the curve craft's default ε is read from (issue 16).

Reads finished demos (their `results.json`): one or more with full SFT, and one per ε with `craft` runs of
the same seeds. For each ε it reports, over seeds, the share of the snapshot's answers to the questions the
task does not need that CRaFT kept, its action L1 relative to SFT's mean, λ's peak after step 100 and the
share of those steps with L_ret > 2ε; it plots the first two against ε, one point per run.

    python benchmarks/epsilon_curve.py --sft DEMO_SFT --craft DEMO_EPS_0.2 DEMO_EPS_0.1 DEMO_EPS_0.05 \
        --out docs/demo/epsilon_curve.png
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np


def load(demo: Path) -> dict:
    return json.loads((demo / "results.json").read_text())


def runs_of(demo: dict, methods: set[str]) -> list[dict]:
    return [r for r in demo["results"] if r["method"] in methods]


def curve(sft_demos: list[dict], craft_demos: list[dict], methods: set[str]) -> tuple[dict, float]:
    """ε -> per-run rows (seed, QA kept, L1 / SFT's mean L1, λ peak, over 2ε), and the snapshot's QA."""
    snapshot_qa = sft_demos[0]["snapshot"]["retention"]["qa"]["task_irrelevant"]
    sft_l1 = float(np.mean([r["action_l1"] for d in sft_demos for r in runs_of(d, {"sft_full"})]))
    points: dict[float, list[dict]] = defaultdict(list)
    for demo in craft_demos:
        epsilon = demo["config"]["epsilon"]
        for r in runs_of(demo, methods):
            points[epsilon].append(
                {
                    "seed": r["seed"],
                    "qa_kept": r["retention"]["qa"]["task_irrelevant"] / snapshot_qa,
                    "l1_ratio": r["action_l1"] / sft_l1,
                    "lambda_peak": r["constraint"]["lambda_peak"],
                    "over_2eps": r["constraint"]["over_2eps"],
                }
            )
    return dict(sorted(points.items())), snapshot_qa


def markdown(points: dict) -> str:
    lines = [
        "| ε (per part) | QA kept (runs) | mean | L1 / SFT's (runs) | mean | λ peak after 100 | steps > 2ε |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for epsilon, rows in points.items():
        qa, l1 = [r["qa_kept"] for r in rows], [r["l1_ratio"] for r in rows]
        lines.append(
            f"| {epsilon} | {' / '.join(f'{v:.1%}' for v in qa)} | {np.mean(qa):.1%} | "
            f"{' / '.join(f'{v:.2f}' for v in l1)} | {np.mean(l1):.2f} | "
            f"{max(r['lambda_peak'] for r in rows):.2f} | {max(r['over_2eps'] for r in rows):.1%} |"
        )
    return "\n".join(lines)


def plot(points: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    for epsilon, rows in points.items():
        left.scatter([epsilon] * len(rows), [100 * r["qa_kept"] for r in rows], color="C0")
        right.scatter([epsilon] * len(rows), [r["l1_ratio"] for r in rows], color="C1")
    epsilons = list(points)
    left.plot(epsilons, [100 * np.mean([r["qa_kept"] for r in points[e]]) for e in epsilons], color="C0")
    right.plot(epsilons, [np.mean([r["l1_ratio"] for r in points[e]]) for e in epsilons], color="C1")
    left.axhline(95, ls="--", color="grey", lw=1)
    right.axhline(1.05, ls="--", color="grey", lw=1)
    left.set(xscale="log", xlabel="ε per anchored part (× its spread)", ylabel="QA kept, % of snapshot's")
    right.set(xscale="log", xlabel="ε per anchored part (× its spread)", ylabel="action L1 / full SFT's")
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sft", type=Path, nargs="+", required=True, help="demos with sft_full runs")
    parser.add_argument("--craft", type=Path, nargs="+", required=True, help="one demo per ε")
    parser.add_argument("--methods", nargs="+", default=["craft"], help="the method names of those runs")
    parser.add_argument("--out", type=Path, default=Path("epsilon_curve.png"))
    args = parser.parse_args()
    points, snapshot_qa = curve([load(d) for d in args.sft], [load(d) for d in args.craft], set(args.methods))
    print(f"snapshot QA (not needed by the task) {snapshot_qa:.3f}")
    print(markdown(points))
    plot(points, args.out)
    print(f"plot: {args.out}")


if __name__ == "__main__":
    main()
