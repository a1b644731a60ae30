"""`python -m craft_vla.cli.build_cache` (for torchrun): the same as `craft-vla build-cache`.

torchrun --nproc-per-node N -m craft_vla.cli.build_cache --distributed ddp ...
"""

from __future__ import annotations

import sys

from craft_vla.cli.main import run_command


def main(argv: list[str] | None = None) -> int:
    return run_command("build-cache", sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
