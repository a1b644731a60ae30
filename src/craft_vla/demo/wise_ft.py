"""WiSE-FT, the weight-interpolation baseline of issue 16 (Wortsman et al., CVPR 2022; RETAIN, ICLR 2026).

After full SFT, the VLM's weights are moved back toward the snapshot's, θ_α = θ_0 + α (θ_SFT − θ_0), and the
SFT run's action head is kept. α is swept; the reported α is chosen on the validation action error only,
by the demo's own bar for CRaFT: the smallest α (the closest to the snapshot) whose action L1 is within
`tolerance` of the SFT run's (α = 1). The questions never enter the choice.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from craft_vla.models.policy import VLAAdapterPolicy, unwrap_vlm


def interpolate(policy: VLAAdapterPolicy, base: dict, tuned: dict, alpha: float) -> None:
    """Set `policy`'s VLM weights to θ_base + α (θ_tuned − θ_base), in place (both given as state dicts)."""
    blended = {k: base[k] + alpha * (v - base[k]) if v.is_floating_point() else v for k, v in tuned.items()}
    unwrap_vlm(policy.vla).load_state_dict(blended)


def choose_alpha(sweep: list[dict[str, float]], tolerance: float = 0.05) -> dict[str, float]:
    """The sweep's row with the smallest α whose action L1 is within `tolerance` of the L1 at α = 1."""
    sft = [row["action_l1"] for row in sweep if row["alpha"] == 1.0]
    if not sft:
        raise ValueError("a WiSE-FT sweep needs α = 1 (full SFT itself): its L1 is the reference")
    within = [row for row in sweep if row["action_l1"] <= (1.0 + tolerance) * sft[0]]
    return min(within, key=lambda row: row["alpha"])


def run_wise_ft(args: tuple) -> dict[str, Any]:
    """Sweep α over the full-SFT run `sft_result` of one seed (action L1 and QA at each α), then evaluate the
    chosen α as every fine-tuned run is evaluated; in a worker process with `ft_cfg.threads` threads."""
    cfg, ft_cfg, seed, snapshot, sft_result = args
    from craft_vla.demo.evaluate import action_l1, load_finetuned, retention_sets, snapshot_policy
    from craft_vla.demo.retention import qa_accuracy
    from craft_vla.demo.run import VAL_DATASET, evaluate_run

    torch.set_num_threads(ft_cfg.threads)
    start = time.perf_counter()
    run_dir = Path(sft_result["run_dir"])
    policy, tokenizer, statistics = load_finetuned(ft_cfg, run_dir)
    config = policy.config
    snapshot_vlm = snapshot_policy(str(snapshot), config.action_dim, config.proprio_dim).vla
    base = unwrap_vlm(snapshot_vlm).state_dict()
    tuned = {k: v.clone() for k, v in unwrap_vlm(policy.vla).state_dict().items()}
    _, test = retention_sets(config.image_size, cfg.retention_scenes)
    sweep = []
    for alpha in sorted({*cfg.wise_ft_alphas, 1.0}):
        interpolate(policy, base, tuned, alpha)
        l1 = action_l1(policy, ft_cfg, tokenizer, statistics, ft_cfg.data_root_dir, VAL_DATASET)["action_l1"]
        qa = qa_accuracy(policy, test, tokenizer)
        sweep.append({"alpha": alpha, "action_l1": l1, "qa_not_needed": qa["task_irrelevant"]})
    chosen = choose_alpha(sweep)
    interpolate(policy, base, tuned, chosen["alpha"])
    result: dict[str, Any] = {
        "method": "wise_ft",
        "seed": seed,
        "run_dir": str(run_dir),
        "train_seconds": 0.0,  # no training of its own: the SFT run's weights, interpolated
        "alpha": chosen["alpha"],
        "sweep": sweep,
        "constraint": {"lambda_peak": None, "over_2eps": None},
    }
    result.update(evaluate_run(cfg, ft_cfg, policy, tokenizer, statistics, snapshot))
    result["eval_seconds"] = time.perf_counter() - start
    (run_dir / "wise_ft_result.json").write_text(json.dumps(result, indent=2))
    return result
