"""The demo's live progress: the time-left estimate and what it prints as runs finish."""

import craft_vla.demo.progress as progress_module
from craft_vla.demo.progress import LiveProgress


def result(method, seed, seconds):
    return {
        "method": method,
        "seed": seed,
        "train_seconds": seconds - 5.0,
        "eval_seconds": 5.0,
        "action_l1": 0.2,
        "closed_loop": {"train": {"success_rate": 0.8}},
        "retention": {"qa": {"task_irrelevant": 0.7, "task_relevant": 0.6}, "probe_accuracy": 0.8},
    }


def test_time_left_scales_the_finished_runs_cost_to_all_runs_over_the_workers(monkeypatch, capsys):
    clock = [100.0]
    monkeypatch.setattr(progress_module.time, "perf_counter", lambda: clock[0])
    costs = {("sft_full", 0): 1.0, ("craft", 0): 2.0, ("sft_full", 1): 1.0, ("craft", 1): 2.0}
    live = LiveProgress(costs, ("sft_full", "craft"), workers=2, snapshot_row={"QA not needed by task": 0.9})
    assert live.remaining_seconds() != live.remaining_seconds()  # nan before any run has finished
    clock[0] = 140.0
    live.finished(result("sft_full", 0, 40.0))  # 40 s per unit: 6 units over 2 workers is 120 s in all
    assert live.remaining_seconds() == 80.0
    clock[0] = 300.0  # past the estimate: nothing is left to wait for, not a negative time
    assert live.remaining_seconds() == 0.0
    out = capsys.readouterr().out
    assert "[1/4 runs, 40 s] sft_full seed 0 (40 s)" in out and "about 1.3 min left" in out
    assert "| sft_full |" in out and "| craft |" not in out and "snapshot (before fine-tuning)" in out
