"""VLA-Adapter's entry point, kept for its users: the same flags, plus `--use_craft` and `--craft_*`.

torchrun --standalone --nnodes 1 --nproc-per-node 1 vla-scripts/finetune.py --vlm_path ... --use_craft True
"""

import sys

from craft_vla.cli.finetune import main

if __name__ == "__main__":
    sys.exit(main())
