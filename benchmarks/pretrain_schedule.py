"""Pretraining the demo's snapshot with fewer steps: wall time against the knowledge the demo measures.

Pretrains the "craft-demo" VLM (`craft_vla.demo.pretrain`) once per step budget, each with its own full
cosine schedule, and reports its wall time and the QA accuracy of its LM head on the pretraining's held-out
questions and on the demo's retention scenes (`demo.evaluate.retention_sets`, the scenes of the demo's
table), split into questions the manipulation tasks need and questions they do not.

    python benchmarks/pretrain_schedule.py --steps 1500 3000 --threads 2 --out /tmp/pretrain_schedule.json
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import torch

from craft_vla.demo.evaluate import retention_sets
from craft_vla.demo.pretrain import PretrainConfig, pretrain
from craft_vla.demo.retention import qa_accuracy


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, nargs="+", default=[1500, 3000])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="JSON file, rewritten after each budget")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for steps in args.steps:
        cfg = replace(PretrainConfig(), steps=steps)
        vlm, tokenizer, metrics = pretrain(cfg, progress=False)
        _, test = retention_sets(vlm.config.image_size, 400)
        retention = qa_accuracy(vlm, test, tokenizer)
        heldout = metrics["heldout_qa"]
        rows.append(
            {
                "steps": steps,
                "seconds": metrics["train_seconds"],
                "heldout_relevant": heldout["task_relevant"],
                "heldout_not_needed": heldout["task_irrelevant"],
                "retention_relevant": retention["task_relevant"],
                "retention_not_needed": retention["task_irrelevant"],
            }
        )
        print(json.dumps(rows[-1]), flush=True)
        if args.out:
            args.out.write_text(json.dumps(rows, indent=2))
    print("\n| steps | seconds | held-out QA: needed / not needed | retention scenes: needed / not needed |")
    print("| --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['steps']} | {r['seconds']:.0f} "
            f"| {r['heldout_relevant']:.3f} / {r['heldout_not_needed']:.3f} "
            f"| {r['retention_relevant']:.3f} / {r['retention_not_needed']:.3f} |"
        )


if __name__ == "__main__":
    main()
