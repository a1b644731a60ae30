import os

import torch

os.environ.setdefault("WANDB_MODE", "offline")
torch.set_num_threads(1)
