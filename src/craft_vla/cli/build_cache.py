"""`craft-vla build-cache [--flag value ...]`: the offline anchor cache of the frozen snapshot.

Takes the fine-tuning flags (the same model, data and `--craft_*` flags as the run that will use it)
and writes to `--craft_cache_path`. Resumable: rerun the same command after an interruption.
Several processes: `torchrun --nproc-per-node N -m craft_vla.cli.build_cache --distributed ddp ...`.
"""

from __future__ import annotations

import sys

import draccus

from craft_vla.training.config import FinetuneConfig


def main(argv: list[str] | None = None) -> int:
    cfg = draccus.parse(config_class=FinetuneConfig, args=sys.argv[1:] if argv is None else argv)
    from craft_vla.training.build_cache import build_cache

    build_cache(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
