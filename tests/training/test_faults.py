"""Faults and bad input in fine-tuning: stop on non-finite values, write nothing broken, mix no runs."""

import dataclasses

import pytest
from helpers import toy_config

from craft_vla.training.config import FinetuneConfig
from craft_vla.training.finetune import finetune
from craft_vla.training.step import NonFiniteError


def config(rlds_root, tmp_path, **overrides) -> FinetuneConfig:
    """The toy run, with checkpoints every 2 of 6 steps and no augmentation."""
    defaults = {
        "max_steps": 6,
        "save_freq": 2,
        "image_aug": False,
        "lr_warmup_steps": 0,
        "num_steps_before_decay": 100,
    }
    return toy_config(rlds_root, tmp_path, **{**defaults, **overrides})


def test_a_diverging_run_stops_before_applying_a_non_finite_step_and_saves_nothing_broken(
    rlds_root, tmp_path
):
    cfg = config(rlds_root, tmp_path, learning_rate=1e6)
    with pytest.raises(NonFiniteError, match=r"step \d+: .*nan.*--learning_rate"):
        finetune(cfg)
    run_dir = next((tmp_path / "runs").iterdir())
    from safetensors.torch import load_file

    for step_dir in run_dir.glob("step-*"):  # any checkpoint written before the stop holds finite weights
        weights = load_file(str(step_dir / "training_state" / "trainable.safetensors"))
        assert all(t.isfinite().all() for t in weights.values()), step_dir


def test_the_command_line_reports_divergence_in_one_line(rlds_root, tmp_path, capsys):
    from craft_vla.cli.main import main

    cfg = config(rlds_root, tmp_path, learning_rate=1e6)
    flags = [
        "--model",
        "tiny",
        "--data_root_dir",
        str(rlds_root),
        "--dataset_name",
        "toy_tabletop",
        "--run_root_dir",
        str(cfg.run_root_dir),
        "--batch_size",
        "4",
        "--max_steps",
        "6",
        "--use_lora",
        "false",
        "--learning_rate",
        "1e6",
    ]
    assert main(["finetune", *flags]) == 1
    err = capsys.readouterr().err
    assert "--learning_rate" in err and "Traceback" not in err


def metric_steps(run_dir):
    import json

    return [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_a_rerun_without_resume_refuses_the_directory_of_another_run(rlds_root, tmp_path):
    cfg = config(rlds_root, tmp_path, max_steps=2)
    run_dir = finetune(cfg)
    before = {p.name: p.stat().st_mtime_ns for p in run_dir.rglob("*")}
    with pytest.raises(
        FileExistsError, match=r"already holds a run \(step-000002, metrics.jsonl\).*--resume True"
    ):
        finetune(cfg)
    assert {p.name: p.stat().st_mtime_ns for p in run_dir.rglob("*")} == before  # nothing touched
    assert finetune(dataclasses.replace(cfg, overwrite=True)) == run_dir
    assert metric_steps(run_dir) == [0, 1]  # one run in the directory, not two mixed


def test_resume_refuses_flags_that_change_the_run_and_allows_extending_it(rlds_root, tmp_path):
    cfg = config(rlds_root, tmp_path, max_steps=2, run_id_override="my-run")
    run_dir = finetune(cfg)
    changed = dataclasses.replace(cfg, resume=True, batch_size=2, learning_rate=0.5, max_steps=4)
    with pytest.raises(ValueError, match=r"--batch_size was 4, now 2; --learning_rate was 0.001, now 0.5"):
        finetune(changed)
    assert metric_steps(run_dir) == [0, 1]
    finetune(dataclasses.replace(cfg, resume=True, max_steps=4, save_freq=1))
    assert metric_steps(run_dir) == [0, 1, 2, 3]


def run_until_killed(cmd: list[str], done, timeout: float = 120.0) -> bool:
    """Start `cmd`, SIGKILL it as soon as `done()` holds; False if it finished first."""
    import os
    import signal
    import subprocess
    import time

    proc = subprocess.Popen(
        cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + timeout
    while proc.poll() is None and not done() and time.time() < deadline:
        time.sleep(0.002)
    finished = proc.poll() is not None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return not finished


@pytest.mark.slow  # 45 s: the single kill of test_distributed_finetune.py runs in CI
def test_finetune_killed_at_five_seeded_points_resumes_to_the_uninterrupted_run(rlds_root, tmp_path):
    """kill -9 after a seeded number of logged steps, five times, `--resume True` each time: the same weights
    and metrics as one uninterrupted run (a kill can land mid-checkpoint: writes are atomic)."""
    import sys

    import draccus
    import numpy as np
    import torch
    from safetensors.torch import load_file

    cfg = config(rlds_root, tmp_path, max_steps=30, save_freq=3, run_id_override="killed", image_aug=True)
    run_dir = tmp_path / "runs" / "killed"
    kill_after = sorted(np.random.default_rng(2026).choice(np.arange(4, 29), size=5, replace=False).tolist())
    for k, steps in enumerate(kill_after):
        path = tmp_path / f"cfg{k}.yaml"
        path.write_text(draccus.dump(dataclasses.replace(cfg, resume=k > 0)))
        cmd = [sys.executable, "-m", "craft_vla.cli.finetune", "--config_path", str(path)]

        def logged(steps=steps):
            log = run_dir / "metrics.jsonl"
            return log.exists() and log.read_text().count("\n") >= steps

        run_until_killed(cmd, logged)
    finetune(dataclasses.replace(cfg, resume=True))
    whole = finetune(dataclasses.replace(cfg, run_id_override="uninterrupted"))
    a = load_file(str(whole / "step-000030/training_state/trainable.safetensors"))
    b = load_file(str(run_dir / "step-000030/training_state/trainable.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)
    assert (whole / "metrics.jsonl").read_text() == (run_dir / "metrics.jsonl").read_text()


@pytest.mark.slow  # 45 s: the single kill of test_anchor_cache_build.py runs in CI
def test_build_cache_killed_at_five_seeded_points_resumes_to_the_uninterrupted_cache(
    rlds_root_large, tmp_path
):
    """kill -9 once a seeded number of shards exist, five times, then the same command again: the
    uninterrupted build's shards, byte for byte."""
    import json
    import sys

    import numpy as np

    from craft_vla.cli import build_cache as build_cache_cli

    cfg = config(
        rlds_root_large,
        tmp_path,
        use_craft=True,
        batch_size=1,
        craft_cache_shard_size=4,
        craft_cache_path=str(tmp_path / "killed"),
    )
    flags = ["--config_path", str(tmp_path / "cache.yaml")]
    import draccus

    (tmp_path / "cache.yaml").write_text(draccus.dump(cfg))
    root = tmp_path / "killed"
    cmd = [sys.executable, "-m", "craft_vla.cli.build_cache", *flags]
    for shards in sorted(
        np.random.default_rng(2026).choice(np.arange(1, 40), size=5, replace=False).tolist()
    ):
        run_until_killed(cmd, lambda shards=shards: len(list(root.glob("shard-*.safetensors"))) >= shards)
    assert build_cache_cli.main(flags) == 0
    whole = tmp_path / "whole"
    (tmp_path / "whole.yaml").write_text(draccus.dump(dataclasses.replace(cfg, craft_cache_path=str(whole))))
    assert build_cache_cli.main(["--config_path", str(tmp_path / "whole.yaml")]) == 0
    resumed, uninterrupted = (json.loads((r / "meta.json").read_text()) for r in (root, whole))
    for key in ("fingerprint", "spread", "num_samples", "shards"):  # equal checksums: the same bytes
        assert resumed[key] == uninterrupted[key], key
    assert not list(root.glob("*.tmp"))
