"""How sharply the anchor features f react to the zero-initialised action queries vs the rest of the VLM.

Takes the demo's pretrained snapshot and data (built and cached by `craft-vla demo` on first use),
moves either the action-query embeddings or every other VLM weight by ±s (an Adam-sized step of
size s, random signs), and reports the drift ‖f − f~‖² over 64 demonstration samples, split into
the raw-latent part C_R^(m) and the action-query part C_AQ^(M), next to the spread S of f~.

    python benchmarks/anchor_sensitivity.py
"""

from __future__ import annotations

import torch

from craft_vla.data.collate import VLACollator
from craft_vla.data.dataset import VLADataset
from craft_vla.data.rlds import RLDSReader, resolve_dataset_dir
from craft_vla.demo.evaluate import snapshot_policy
from craft_vla.demo.pretrain import PretrainConfig, pretrained_snapshot
from craft_vla.demo.run import DATASET, DemoConfig, base_finetune_config, generate_data
from craft_vla.sim import ACTION_DIM, STATE_DIM
from craft_vla.training import setup


@torch.no_grad()
def main() -> None:
    torch.set_num_threads(1)
    demo = DemoConfig()
    data_root = generate_data(demo)
    snapshot = pretrained_snapshot(PretrainConfig(), demo.cache_root)
    cfg = base_finetune_config(
        demo, data_root, snapshot, demo.cache_dir / "unused", demo.cache_dir / "unused"
    )
    tokenizer = setup.load_tokenizer(cfg, setup.open_readers(cfg))
    policy = snapshot_policy(str(snapshot), ACTION_DIM, STATE_DIM)
    reader = RLDSReader(resolve_dataset_dir(data_root, DATASET))
    dataset = VLADataset([reader], tokenizer, setup.sample_config(cfg, policy.config, augment=False))
    batch = VLACollator(tokenizer.pad_token_id)([dataset[int(i)] for i in dataset.sample_ids[:64]])
    spec = setup.anchor_spec(cfg, policy.config.llm.num_hidden_layers)
    f_tilde = policy(batch, anchor_spec=spec)
    width = policy.config.hidden_size

    def drift(moves_queries: bool, step: float) -> tuple[float, float]:
        """(drift of C_R part, drift of C_AQ part) after moving the chosen weights by ±step."""
        generator = torch.Generator().manual_seed(0)
        saved = {}
        for name, p in policy.vla.named_parameters():
            if ("action_queries" in name) == moves_queries:
                saved[name] = p.clone()
                p.add_(step * torch.sign(torch.randn(p.shape, generator=generator)))
        delta = policy(batch, anchor_spec=spec) - f_tilde
        for name, p in policy.vla.named_parameters():
            if name in saved:
                p.copy_(saved[name])
        return float(delta[:, :width].pow(2).sum(1).mean()), float(delta[:, width:].pow(2).sum(1).mean())

    spread = float((f_tilde - f_tilde.mean(0)).pow(2).sum(1).mean())
    print(f"spread S of f~ over these samples: {spread:.2f}")
    print(
        "| step s | queries: C_R drift | queries: C_AQ drift "
        "| rest of VLM: C_R drift | rest of VLM: C_AQ drift |"
    )
    print("| --- | --- | --- | --- | --- |")
    for step in (1e-4, 1e-3, 1e-2):
        q, r = drift(True, step), drift(False, step)
        print(f"| {step:g} | {q[0]:.4f} | {q[1]:.4f} | {r[0]:.4f} | {r[1]:.4f} |")


if __name__ == "__main__":
    main()
