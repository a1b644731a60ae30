"""Faults and bad input in fine-tuning: stop on non-finite values, write nothing broken, mix no runs."""

import dataclasses

import pytest

from craft_vla.training.config import FinetuneConfig
from craft_vla.training.finetune import finetune
from craft_vla.training.step import NonFiniteError


def config(rlds_root, tmp_path, **overrides) -> FinetuneConfig:
    base = FinetuneConfig(
        model="tiny", data_root_dir=rlds_root, dataset_name="toy_tabletop", run_root_dir=tmp_path / "runs",
        batch_size=4, max_steps=6, save_freq=2, use_lora=False, image_aug=False, learning_rate=1e-3,
    )
    return dataclasses.replace(base, **overrides)


def test_a_diverging_run_stops_before_applying_a_non_finite_step_and_saves_nothing_broken(rlds_root, tmp_path):
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
    flags = ["--model", "tiny", "--data_root_dir", str(rlds_root), "--dataset_name", "toy_tabletop",
             "--run_root_dir", str(cfg.run_root_dir), "--batch_size", "4", "--max_steps", "6", "--use_lora", "false",
             "--learning_rate", "1e6"]
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
    with pytest.raises(FileExistsError, match=r"already holds a run \(step-000002, metrics.jsonl\).*--resume True"):
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
