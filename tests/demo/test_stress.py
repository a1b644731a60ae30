"""`craft-vla demo --stress`: one demo per setting, and a report that judges every run, not only means."""

import json
from pathlib import Path

import pytest

from craft_vla.demo.config import DemoConfig
from craft_vla.demo.stress import STRESS_SETTINGS, run_stress, setting_config, stress_checks


def run(method, seed, qa, l1=0.2, heldout=0.5, lam=0.3, over=0.0):
    return {
        "method": method,
        "seed": seed,
        "action_l1": l1,
        "closed_loop": {"train": {"success_rate": 0.8}, "heldout": {"success_rate": heldout}},
        "retention": {"qa": {"task_relevant": qa, "task_irrelevant": qa}},
        "constraint": {
            "lambda_peak": None if method == "sft_full" else lam,
            "over_2eps": None if method == "sft_full" else over,
        },
    }


def demo(*runs, snapshot=0.8):
    return {"results": list(runs), "snapshot": {"retention": {"qa": {"task_irrelevant": snapshot}}}}


def checks_by_name(demos):
    return {name: (value, op, bar) for name, value, op, bar in stress_checks(demos)}


def test_every_run_is_judged_not_only_the_mean():
    demos = {
        "default": demo(run("sft_full", 0, 0.0), run("craft", 0, 0.8), run("craft", 1, 0.8)),
        # one seed of four loses the answers: the mean over runs (0.925) would nearly pass, the worst does not
        "noise0.3": demo(
            run("sft_full", 0, 0.0, l1=0.2), run("craft", 0, 0.8, l1=0.2), run("craft", 1, 0.56, l1=0.22)
        ),
    }
    checks = checks_by_name(demos)
    assert checks["craft: QA kept, worst run / snapshot"][0] == pytest.approx(0.7)
    assert checks["craft: QA kept, mean over 4 runs / snapshot"][0] == pytest.approx((1 + 1 + 1 + 0.7) / 4)
    assert checks["noise0.3: craft's action L1 / full SFT's"][0] == pytest.approx(0.21 / 0.2)
    assert checks["default: craft's held-out success minus full SFT's"][0] == pytest.approx(0.0)


def test_the_constraint_health_is_the_worst_run_and_sft_runs_have_none():
    demos = {
        "default": demo(
            run("sft_full", 0, 0.0), run("craft", 0, 0.8, lam=12.0), run("craft", 1, 0.8, over=0.1)
        )
    }
    checks = checks_by_name(demos)
    assert checks["craft: λ peak after step 100, worst run"][0] == 12.0
    assert checks["craft: fraction of steps with L_ret > 2ε after step 100, worst run"][0] == 0.1


def test_settings_change_only_their_fields_and_report_to_their_own_directory(tmp_path):
    cfg = DemoConfig(out_dir=tmp_path, stress=True)
    noisy = setting_config(cfg, "noise0.3")
    assert (noisy.action_noise, noisy.episodes_per_task, noisy.stress) == (0.3, 300, False)
    assert noisy.out_dir == tmp_path / "noise0.3" and noisy.protocol == "default"
    assert setting_config(cfg, "demos600").episodes_per_task == 600
    assert setting_config(cfg, "bf16").precision == "bf16"


def test_run_stress_runs_one_demo_per_setting_and_writes_one_report(tmp_path, monkeypatch):
    seen = []

    def fake_run_demo(cfg):
        seen.append((cfg.out_dir.name, cfg.action_noise, cfg.episodes_per_task))
        cfg.out_dir.mkdir(parents=True)
        runs = [run(m, s, 0.0 if m == "sft_full" else 0.78) for s in cfg.seeds for m in cfg.methods]
        (cfg.out_dir / "results.json").write_text(json.dumps(demo(*runs)))
        return Path(cfg.out_dir)

    monkeypatch.setattr("craft_vla.demo.run.run_demo", fake_run_demo)
    cfg = DemoConfig.preset("stress", out_dir=tmp_path, stress_settings=("default", "noise0.3", "demos600"))
    report = run_stress(cfg).read_text()
    assert seen == [("default", 0.0, 300), ("noise0.3", 0.3, 300), ("demos600", 0.0, 600)]
    # a row per setting and method, the worst seed beside the mean, and the bars judged
    assert report.count("| noise0.3 | craft_seed |") == 1 and "(worst 0.780)" in report
    assert "| craft: QA kept, worst run / snapshot | 0.975 | >= 0.9 | yes |" in report
    saved = json.loads((tmp_path / "stress_results.json").read_text())
    assert list(saved["settings"]) == ["default", "noise0.3", "demos600"]


def test_the_stress_preset_and_its_refusals(capsys):
    from craft_vla.cli.main import main, parse

    cfg = parse("demo", ["--stress"])
    assert (cfg.protocol, cfg.methods, cfg.seeds) == (
        "stress",
        ("sft_full", "craft_seed", "craft"),
        (0, 1, 2),
    )
    assert cfg.stress_settings == tuple(STRESS_SETTINGS)
    assert parse("demo", ["--stress", "--stress_settings", "default", "bf16"]).stress_settings == (
        "default",
        "bf16",
    )
    assert main(["demo", "--stress", "--quick"]) == 2
    assert "choose one" in capsys.readouterr().err
    assert main(["demo", "--stress", "--stress_settings", "fp8"]) == 2
    err = capsys.readouterr().err
    assert "stress_settings" in err and "noise0.3" in err  # the flag and the choices
