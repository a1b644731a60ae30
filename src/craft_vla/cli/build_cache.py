"""`craft-vla build-cache [--flag value ...]`: the offline anchor cache of the frozen snapshot.

Takes the fine-tuning flags (the same model, data and `--craft_*` flags as the run that will use it)
and writes to `--craft_cache_path`. Resumable: rerun the same command after an interruption.
Several processes: `torchrun --nproc-per-node N -m craft_vla.cli.build_cache --distributed ddp ...`.
"""

from __future__ import annotations

import sys

from craft_vla.cli.finetune import parse_config


def main(argv: list[str] | None = None) -> int:
    from craft_vla.craft.cache import CacheError
    from craft_vla.training.build_cache import build_cache

    try:
        build_cache(parse_config(argv))
    except CacheError as err:  # a directory left by another build: say so without a traceback
        print(f"craft-vla build-cache: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
