"""Success rates, Wilson intervals, the results files and the side-by-side comparison."""

import numpy as np
import pytest
from PIL import Image

from craft_vla.eval.results import (
    EpisodeResult,
    compare_table,
    load_results,
    results_document,
    summarise,
    wilson_interval,
    write_results,
    write_video,
)


def test_wilson_interval_against_hand_computed_values():
    # z = 1.96: 0/10 -> [0, 0.2775]; 5/10 -> [0.2366, 0.7634]; 10/10 -> [0.7225, 1]; 1/2 -> [0.0945, 0.9055]
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.27753), abs=1e-4)
    assert wilson_interval(5, 10) == pytest.approx((0.23659, 0.76341), abs=1e-4)
    assert wilson_interval(10, 10) == pytest.approx((0.72247, 1.0), abs=1e-4)
    assert wilson_interval(1, 2) == pytest.approx((0.09453, 0.90547), abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def _episodes(suite, successes_per_task):
    return [
        EpisodeResult(suite, task, f"task{task}", f"do {task}", trial, trial < wins, steps=10)
        for task, (wins, trials) in enumerate(successes_per_task)
        for trial in range(trials)
    ]


def test_summary_counts_per_task_and_per_suite():
    episodes = _episodes("libero_spatial", [(5, 10), (0, 10)]) + _episodes("libero_spatial_swap", [(1, 2)])
    summary = summarise(episodes)
    rates = [(r["suite"], r["task_index"], r["successes"], r["trials"]) for r in summary["tasks"]]
    assert rates == [
        ("libero_spatial", 0, 5, 10),
        ("libero_spatial", 1, 0, 10),
        ("libero_spatial_swap", 0, 1, 2),
    ]
    spatial, swap = summary["suites"]
    assert (spatial["successes"], spatial["trials"], spatial["success_rate"]) == (5, 20, 0.25)
    assert spatial["ci95"] == pytest.approx(wilson_interval(5, 20))
    assert (swap["suite"], swap["success_rate"]) == ("libero_spatial_swap", 0.5)


def test_results_files_round_trip_and_compare(tmp_path):
    a = results_document(_episodes("libero_goal", [(5, 10), (10, 10)]), {"checkpoint": "sft"})
    b = results_document(_episodes("libero_goal", [(8, 10), (10, 10)]), {"checkpoint": "craft"})
    json_a, md_a = write_results(a, tmp_path / "a")
    write_results(b, tmp_path / "b")
    loaded = load_results(tmp_path / "a")  # a run directory works as well as the file
    assert loaded["suites"] == a["suites"] and len(loaded["episodes"]) == 20
    assert "| libero_goal | 0: do 0 | 50.0 % [23.7, 76.3] (5/10) |" in md_a.read_text()
    table = compare_table(loaded, load_results(tmp_path / "b" / "results.json"), "sft", "craft")
    row = "| libero_goal | 0: do 0 | 50.0 % [23.7, 76.3] (5/10) | 80.0 % [49.0, 94.3] (8/10) | +30.0 |"
    assert row in table
    assert "| libero_goal | all | 75.0 %" in table and "+15.0 |" in table
    with pytest.raises(FileNotFoundError, match="results.json"):
        load_results(tmp_path / "missing")


def test_gif_video(tmp_path):
    frames = [np.full((8, 8, 3), 40 * i, dtype=np.uint8) for i in range(4)]
    path = write_video(frames, tmp_path / "ep.gif")
    with Image.open(path) as gif:
        assert gif.n_frames == 4
