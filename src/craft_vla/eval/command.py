"""`craft-vla eval libero` and `craft-vla eval compare`: LIBERO / LIBERO-PRO success
rates; two runs side by side.

craft-vla eval libero --pretrained_checkpoint RUN/CKPT --suite libero_spatial --num_envs 4
craft-vla eval libero --policy random --suite libero_spatial --tasks 0 --num_trials_per_task 2
craft-vla eval compare runs/eval_sft runs/eval_craft
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from craft_vla.eval.closed_loop import ChunkPolicy
from craft_vla.eval.libero import LiberoEvalConfig, evaluate_libero
from craft_vla.eval.libero_policy import RandomChunkPolicy, ReplayChunkPolicy
from craft_vla.eval.libero_suites import require_libero
from craft_vla.eval.results import compare_table, load_results, markdown_table

POLICIES = ("checkpoint", "random", "replay")


@dataclass
class LiberoCommand(LiberoEvalConfig):
    """`craft-vla eval libero`: closed-loop success rates of a policy on LIBERO / LIBERO-PRO suites.
    Suites: libero_spatial, libero_object, libero_goal, libero_10, libero_90, and every LIBERO-PRO suite
    derived from them, <suite>_<perturbation> (e.g. libero_spatial_swap, libero_object_lan,
    libero_goal_task).
    Policies: checkpoint (--pretrained_checkpoint), random (plumbing check, no weights),
    replay (--replay_actions)."""

    policy: str = "checkpoint"  # checkpoint | random (plumbing check, no weights) | replay (--replay_actions)
    pretrained_checkpoint: str = ""  # a checkpoint dir in VLA-Adapter's layout (ours or released)
    checkpoint_step: str = "latest"  # which `*--{step}_checkpoint.pt` files to load
    base_vla_path: str = ""  # for a LoRA checkpoint: the VLA (HF-format dir or Prismatic run dir) it adapts
    use_pro_version: bool | None = None  # the head's block type; unset: read from its keys
    head_input_bf16: bool | None = None  # action-query states rounded to bf16; unset: for VLA-Adapter's
    unnorm_key: str = ""  # dataset statistics to unnormalise with; empty: the suite's LIBERO dataset
    center_crop: bool = (
        True  # centre crop of 90 percent of the area, for policies trained with crop augmentation
    )
    device: str = "auto"  # auto: cuda (bf16) when available, else cpu (fp32)
    replay_actions: str = ""  # .npy file with (L, 7) actions for --policy replay


def build_chunk_policy(command: LiberoCommand) -> tuple[ChunkPolicy, dict[str, Any]]:
    """The policy the command asks for, and what the results should record about it."""
    if command.policy not in POLICIES:
        raise ValueError(f"--policy must be one of {POLICIES}, got {command.policy!r}")
    if command.policy == "random":
        return RandomChunkPolicy(seed=command.seed), {}
    if command.policy == "replay":
        if not command.replay_actions:
            raise ValueError("--policy replay needs --replay_actions FILE.npy holding (L, 7) actions")
        return ReplayChunkPolicy(np.load(command.replay_actions)), {"replay_actions": command.replay_actions}
    if not command.pretrained_checkpoint:
        raise ValueError("--pretrained_checkpoint DIR is required (or --policy random for a plumbing check)")
    from craft_vla.eval.libero_vla_adapter import VLAAdapterChunkPolicy

    policy = VLAAdapterChunkPolicy.from_checkpoint(
        command.pretrained_checkpoint,
        suites=command.suites(),
        step=command.checkpoint_step,
        unnorm_key=command.unnorm_key or None,
        center_crop=command.center_crop,
        base_vla_path=command.base_vla_path,
        device=command.device,
        use_pro_version=command.use_pro_version,
        head_input_bf16=command.head_input_bf16,
    )
    return policy, policy.describe()


def libero(**options: Any) -> dict[str, Any]:
    """Run `craft-vla eval libero` with the flags as keyword arguments; prints and returns the results."""
    command = LiberoCommand(**options)
    command.out_dir = Path(command.out_dir)
    require_libero()  # before loading a model
    policy, info = build_chunk_policy(command)
    fields = {k: v for k, v in asdict(command).items() if k in LiberoEvalConfig.__dataclass_fields__}
    document = evaluate_libero(
        policy, LiberoEvalConfig(**fields), policy_info={"command": _policy_flags(command), **info}
    )
    print(markdown_table(document))
    print(
        f"\nresults: {command.out_dir / 'results.json'}  "
        f"({document['timing']['mean_episode_seconds']:.1f} s per episode)"
    )
    return document


def _policy_flags(command: LiberoCommand) -> dict[str, Any]:
    return {
        k: getattr(command, k)
        for k in LiberoCommand.__dataclass_fields__
        if k not in LiberoEvalConfig.__dataclass_fields__
    }


def compare(path_a: str | Path, path_b: str | Path) -> str:
    """Print two results files (or run directories) side by side; returns the markdown table."""
    a, b = load_results(Path(path_a)), load_results(Path(path_b))
    table = compare_table(a, b, name_a=Path(path_a).name or "A", name_b=Path(path_b).name or "B")
    print(table)
    return table


@dataclass
class CompareCommand:
    """`craft-vla eval compare RUN_A RUN_B`: two results.json files (or their run
    directories) side by side."""

    run_a: Path = Path(".")
    run_b: Path = Path(".")


def compare_command(cmd: CompareCommand) -> int:
    compare(cmd.run_a, cmd.run_b)
    return 0


def libero_command(command: LiberoCommand) -> int:
    libero(**asdict(command))
    return 0
