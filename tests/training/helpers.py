"""Shared by the trainer tests: a config as command-line flags, a torchrun launch, synthetic episodes."""

import dataclasses
import os
import socket
import subprocess
import sys

import numpy as np

from craft_vla.training.config import FinetuneConfig


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli_args(cfg: FinetuneConfig) -> list[str]:
    """The config as `--flag value` arguments (what a user would type)."""
    args = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if value is None or value == ():
            continue
        args += [f"--{f.name}", *map(str, value if isinstance(value, tuple) else [value])]
    return args


def torchrun(
    cfg: FinetuneConfig, module: str = "craft_vla.cli.finetune", nproc: int = 2, timeout: int = 300
) -> None:
    """`torchrun --nproc-per-node nproc -m module <cfg as flags>` on gloo, one thread per
    process; asserts success."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        str(nproc),
        "--master-port",
        str(free_port()),
        "-m",
        module,
        *cli_args(cfg),
    ]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


# CRAFT_METHOD.md's formulation as first written (the trainer's defaults until 2026-12-08): mean-pooled raw
# and action-query parts, ε relative to their joint spread, g_ret unscaled. The tests that check features, ε
# and the step by hand against those formulas pin it
SEED_FORMULATION = {
    "craft_parts": "both",
    "craft_text": False,
    "craft_epsilon_mode": "relative",
    "craft_epsilon": 0.05,
    "craft_retention_scale": "raw",
    "craft_dual_lr": 1.0,
}


def toy_config(rlds_root, tmp_path, **overrides) -> FinetuneConfig:
    """A tiny full fine-tuning run on the session's toy RLDS dataset, with `overrides`."""
    base = FinetuneConfig(
        model="tiny",
        data_root_dir=rlds_root,
        dataset_name="toy_tabletop",
        run_root_dir=tmp_path / "runs",
        batch_size=4,
        max_steps=4,
        save_freq=100,
        use_lora=False,
        image_aug=True,
        lr_warmup_steps=2,
        num_steps_before_decay=3,
        learning_rate=1e-3,
    )
    return dataclasses.replace(base, **overrides)


INSTRUCTIONS = ("put the red cube on the plate", "push the blue ball left", "open the drawer")


def synthetic_episodes(num_episodes: int, seed: int = 0, image_size: int = 32):
    rng = np.random.default_rng(seed)
    for e in range(num_episodes):
        t = int(rng.integers(5, 9))
        base = rng.uniform(0, 255, size=(1, image_size, image_size, 3))
        images = np.clip(base + rng.normal(0, 20, size=(t, image_size, image_size, 3)), 0, 255).astype(
            np.uint8
        )
        state = rng.normal(size=(t, 8)).astype(np.float32)
        action = np.concatenate(
            [np.tanh(state[:, :6] + 0.1 * rng.normal(size=(t, 6))), rng.uniform(-1, 1, (t, 1))], 1
        )
        yield {
            "steps": {
                "observation": {"image": images, "wrist_image": images[:, ::-1].copy(), "state": state},
                "action": action.astype(np.float32),
                "language_instruction": INSTRUCTIONS[e % len(INSTRUCTIONS)],
                "reward": np.zeros(t, np.float32),
                "discount": np.ones(t, np.float32),
                "is_first": np.arange(t) == 0,
                "is_last": np.arange(t) == t - 1,
                "is_terminal": np.arange(t) == t - 1,
            },
            "episode_metadata": {"file_path": f"synthetic/{e}"},
        }
