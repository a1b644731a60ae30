"""Build CRaFT's anchor cache with the same flags as vla-scripts/finetune.py (see `craft-vla build-cache`)."""

import sys

from craft_vla.cli.build_cache import main

if __name__ == "__main__":
    sys.exit(main())
