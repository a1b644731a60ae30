import os

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # every process a test starts runs one torch thread
torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="session")
def _cache_outside_home(tmp_path_factory):
    """Every cache the tests build (RLDS indexes, statistics, demo data) goes to a temporary directory."""
    if "CRAFT_VLA_CACHE" not in os.environ:
        os.environ["CRAFT_VLA_CACHE"] = str(tmp_path_factory.mktemp("craft_vla_cache"))
