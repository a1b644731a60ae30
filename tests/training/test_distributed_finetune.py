"""`craft-vla finetune` under torchrun (2 gloo processes, DDP and FSDP2) vs one process
on the same global batch.

The exactness runs use SGD with momentum and no head-input noise: Adam turns the rounding-size
noise of analytically zero gradients (an attention key bias, for one) into full ±lr steps, and the
noise is a random draw whose stream differs between process layouts.
"""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import draccus
import pytest
import torch
from helpers import torchrun
from safetensors.torch import load_file

from craft_vla.training.build_cache import build_cache
from craft_vla.training.config import FinetuneConfig
from craft_vla.training.finetune import finetune

STEPS = 5


@pytest.fixture(scope="module")
def base(rlds_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dist")
    cfg = FinetuneConfig(
        model="tiny",
        data_root_dir=rlds_root,
        dataset_name="toy_tabletop",
        run_root_dir=tmp / "runs",
        batch_size=2,
        grad_accumulation_steps=2,
        max_steps=STEPS,
        save_freq=100,
        use_lora=False,
        image_aug=False,
        head_input_noise_std=0.0,
        optimizer="sgd",
        learning_rate=1e-4,
        use_craft=True,
        craft_cache_path=str(tmp / "cache"),
        craft_raw_layer=2,
        craft_aq_layer=4,
        craft_epsilon=0.002,
        craft_dual_lr=1.0,
        craft_anchor_batch_size=2,
    )
    build_cache(cfg)
    reference = dataclasses.replace(cfg, batch_size=4, craft_anchor_batch_size=4, run_id_override="single")
    return cfg, finetune(reference)


def lambdas(run_dir):
    return [
        json.loads(line)["craft/lambda_next"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
    ]


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_two_processes_match_one(base, mode):
    cfg, reference_dir = base
    dist_cfg = dataclasses.replace(cfg, distributed=mode, run_id_override=mode)
    torchrun(dist_cfg)
    run_dir = cfg.run_root_dir / mode
    ref, got = lambdas(reference_dir), lambdas(run_dir)
    assert max(ref) > 0  # λ moved, so it is tested
    torch.testing.assert_close(torch.tensor(got), torch.tensor(ref), rtol=1e-5, atol=1e-7)
    a = load_file(str(reference_dir / f"step-{STEPS:06d}/training_state/trainable.safetensors"))
    b = load_file(str(run_dir / f"step-{STEPS:06d}/training_state/trainable.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-5, atol=1e-6, msg=name)


def test_kill_minus_nine_then_resume_equals_uninterrupted(rlds_root, tmp_path):
    cfg = FinetuneConfig(
        model="tiny",
        data_root_dir=rlds_root,
        dataset_name="toy_tabletop",
        run_root_dir=tmp_path,
        batch_size=2,
        max_steps=40,
        save_freq=4,
        use_lora=False,
        run_id_override="killed",
        learning_rate=1e-3,
    )
    config_path = tmp_path / "cfg.yaml"
    config_path.write_text(draccus.dump(cfg))
    cmd = [sys.executable, "-m", "craft_vla.cli.finetune", "--config_path", str(config_path)]
    proc = subprocess.Popen(
        cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    run_dir = tmp_path / "killed"
    deadline = time.time() + 120
    while not (run_dir / "step-000008").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (run_dir / "step-000008").exists()
    finetune(dataclasses.replace(cfg, resume=True))
    uninterrupted = finetune(dataclasses.replace(cfg, run_id_override="uninterrupted"))
    a = load_file(str(uninterrupted / "step-000040/training_state/trainable.safetensors"))
    b = load_file(str(run_dir / "step-000040/training_state/trainable.safetensors"))
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert (uninterrupted / "metrics.jsonl").read_text() == (run_dir / "metrics.jsonl").read_text()
