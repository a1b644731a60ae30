"""`craft-vla finetune [--flag value ...]`: VLA-Adapter fine-tuning, with `--use_craft True` for CRaFT.

Flags are `FinetuneConfig`'s (draccus); `--config_path FILE.yaml` loads a saved config first.
Multi-GPU: `torchrun --nproc-per-node N -m craft_vla.cli.finetune --distributed ddp ...`.
"""

from __future__ import annotations

import sys

import draccus

from craft_vla.training.config import FinetuneConfig


def parse_config(argv: list[str] | None) -> FinetuneConfig:
    """The fine-tuning flags (draccus), from `argv` or the command line."""
    return draccus.parse(config_class=FinetuneConfig, args=sys.argv[1:] if argv is None else argv)


def main(argv: list[str] | None = None) -> int:
    cfg = parse_config(argv)
    from craft_vla.training.finetune import finetune

    finetune(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
