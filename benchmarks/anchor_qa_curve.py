"""Which anchor features track what the VLM knows (issue 16), measured along weight interpolation (WiSE-FT).

For each fine-tuned demo run and each α, the VLM's weights are set to θ_snapshot + α·(θ_run − θ_snapshot)
(the action head stays the run's: α = 1 is the run, α = 0 the snapshot's VLM under the run's head), and
the script measures
- QA accuracy through the LM head on the demo's held-out perception scenes, on the questions the task does
  not need and on those it needs;
- the drift of several anchor definitions from the snapshot's, each in units of its own spread S over the
  same samples (CRaFT's relative ε): the raw latent (patch tokens) and the action-query latent of every LLM
  layer, mean-pooled and per token, and the mean of the prompt's text tokens, on demonstration samples of
  the training data (un-augmented; "drift") and on the QA scenes under the probe's prompt ("drift_qa_scenes":
  the anchors only ever see the first);
- the action L1 on the validation demonstrations, and with `--closed_loop N` the closed-loop success over
  N episodes per task (training tasks and held-out variants): the WiSE-FT baseline.

An anchor definition that holds the answers is one whose drift predicts QA across runs and methods: for
instance a CRaFT run that kept its pooled drift at ε but lost the answers shows which definitions did move.

    python benchmarks/anchor_qa_curve.py --runs DEMO_OUT/runs/sft_full-seed0 ... --out curve.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import draccus
import torch

from craft_vla.craft import AnchorSpec
from craft_vla.data.collate import VLACollator
from craft_vla.data.dataset import VLADataset
from craft_vla.data.rlds import RLDSReader, resolve_dataset_dir
from craft_vla.demo.config import DemoConfig
from craft_vla.demo.evaluate import action_l1, closed_loop, load_finetuned, retention_sets, snapshot_policy
from craft_vla.demo.retention import evaluating, probe_batches, qa_accuracy
from craft_vla.demo.run import DATASET, VAL_DATASET
from craft_vla.demo.wise_ft import interpolate
from craft_vla.models.bridge import insert_patches, placeholder_mask
from craft_vla.models.policy import VLAAdapterPolicy, spec_features, unwrap_vlm
from craft_vla.training import setup
from craft_vla.training.config import FinetuneConfig


def anchor_definitions(num_layers: int) -> dict[str, AnchorSpec]:
    """Raw and action-query latents of every layer 1..L, mean-pooled and per token; "text/mean/L<l>": the
    mean over the prompt's text tokens (after the patches, before the queries), read with the raw part."""
    specs = {
        f"{part}/{pool}/L{layer}": AnchorSpec(layer, layer, pool, part)
        for part in ("raw", "aq")
        for pool in ("mean", "tokens")
        for layer in range(1, num_layers + 1)
    }
    specs.update(
        {f"text/mean/L{layer}": AnchorSpec(layer, layer, "mean", "raw") for layer in range(1, num_layers + 1)}
    )
    return specs


def text_mask(batch: dict, num_patches: int, num_action_queries: int) -> torch.Tensor:
    """The prompt's text tokens in the multimodal sequence [first, patches, text, queries, padding]."""
    mask = batch["attention_mask"].bool() & ~placeholder_mask(batch["attention_mask"], num_action_queries)
    mask[:, 0] = False
    return insert_patches(mask, mask.new_zeros(mask.shape[0], num_patches))


@torch.no_grad()
def all_features(
    policy: VLAAdapterPolicy, batches: list, specs: dict[str, AnchorSpec]
) -> dict[str, torch.Tensor]:
    """Every definition's features (N, F) from one forward per batch (all hidden states at once)."""
    vlm = unwrap_vlm(policy.vla)
    out: dict[str, list[torch.Tensor]] = {name: [] for name in specs}
    with evaluating(policy):
        for batch in batches:
            hidden = vlm.hidden_states(batch)
            patches = vlm.num_patches(batch["pixel_values"])
            raw_mask, aq_mask = policy.bridge_positions(batch["attention_mask"], patches)
            text = text_mask(batch, patches, policy.config.num_action_queries)
            for name, spec in specs.items():
                positions = text if name.startswith("text/") else raw_mask
                out[name].append(spec_features(hidden, positions, aq_mask, spec).double())
    return {name: torch.cat(parts) for name, parts in out.items()}


def relative_drift(features: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> dict[str, float]:
    """mean ‖f − f~‖² / S per definition, S = mean ‖f~ − mean f~‖² over the same samples."""
    result = {}
    for name, f_tilde in reference.items():
        spread = ((f_tilde - f_tilde.mean(0)) ** 2).sum(1).mean()
        result[name] = float(((features[name] - f_tilde) ** 2).sum(1).mean() / spread)
    return result


def demonstration_batches(cfg: FinetuneConfig, policy: VLAAdapterPolicy, tokenizer, samples: int) -> list:
    """`samples` training samples spread evenly over the dataset, un-augmented, in batches of 64."""
    reader = RLDSReader(resolve_dataset_dir(cfg.data_root_dir, DATASET))
    dataset = VLADataset([reader], tokenizer, setup.sample_config(cfg, policy.config, augment=False))
    ids = dataset.sample_ids[:: max(1, len(dataset.sample_ids) // samples)][:samples]
    collate = VLACollator(tokenizer.pad_token_id)
    return [collate([dataset[int(i)] for i in ids[s : s + 64]]) for s in range(0, len(ids), 64)]


def measure_run(run_dir: Path, args: argparse.Namespace) -> list[dict]:
    cfg = draccus.parse(FinetuneConfig, config_path=run_dir / "config.yaml", args=[])
    demo = DemoConfig()  # the demo's closed-loop protocol (tasks, one-object scenes, replanning)
    policy, tokenizer, statistics = load_finetuned(cfg, run_dir)
    snapshot = snapshot_policy(cfg.vlm_path, policy.config.action_dim, policy.config.proprio_dim)
    tuned = {k: v.clone() for k, v in unwrap_vlm(policy.vla).state_dict().items()}
    base = unwrap_vlm(snapshot.vla).state_dict()
    specs = anchor_definitions(policy.config.llm.num_hidden_layers)
    batches = demonstration_batches(cfg, policy, tokenizer, args.samples)
    reference = all_features(snapshot, batches, specs)
    _, test = retention_sets(policy.config.image_size, args.scenes)
    config = policy.config
    qa_batches = list(probe_batches(test, tokenizer, config.num_action_queries, config.image_size))
    qa_reference = all_features(snapshot, qa_batches, specs)
    rows = []
    for alpha in args.alphas:
        interpolate(policy, base, tuned, alpha)
        start = time.perf_counter()
        qa = qa_accuracy(policy, test, tokenizer)
        row = {
            "run": run_dir.name,
            "alpha": alpha,
            "qa_not_needed": qa["task_irrelevant"],
            "qa_needed": qa["task_relevant"],
            "drift": relative_drift(all_features(policy, batches, specs), reference),
            "drift_qa_scenes": relative_drift(all_features(policy, qa_batches, specs), qa_reference),
        }
        with torch.no_grad():
            row.update(action_l1(policy, cfg, tokenizer, statistics, cfg.data_root_dir, VAL_DATASET))
            if args.closed_loop:
                row["closed_loop"] = closed_loop(
                    policy,
                    tokenizer,
                    statistics[DATASET],
                    policy.config.image_size,
                    args.closed_loop,
                    ("train", "heldout"),
                    demo.tasks,
                    demo.world(),  # the scenes the run was trained on
                    execute_steps=demo.execute_steps,
                )
        row["seconds"] = time.perf_counter() - start
        print(json.dumps({k: v for k, v in row.items() if not k.startswith("drift")}), flush=True)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, nargs="+", required=True, help="demo run directories")
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0])
    parser.add_argument("--samples", type=int, default=256, help="demonstration samples for the drift")
    parser.add_argument("--scenes", type=int, default=400, help="the demo's --retention_scenes")
    parser.add_argument("--closed_loop", type=int, default=0, help="episodes per task; 0: no WiSE-FT eval")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("anchor_qa_curve.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = [row for run in args.runs for row in measure_run(run, args)]
    args.out.write_text(json.dumps(rows, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
