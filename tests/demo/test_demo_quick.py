"""`craft-vla demo --quick` end to end: it finishes, writes its report, and every metric is finite.

Only what is robust is asserted: no comparison between methods (that is what the full run measures).
It runs in CI: about 3 minutes on 2 cores from an empty cache, pretraining included (README).
"""

import json
import math
import os
import subprocess
import sys


def finite_numbers(value):
    if isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from finite_numbers(v)
    elif isinstance(value, list):
        for v in value:
            yield from finite_numbers(v)


def test_quick_demo_end_to_end(tmp_path):
    # threads as a user's run chooses them (the idle cores), not the one thread the other tests run with
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env["CRAFT_VLA_CACHE"] = str(tmp_path / "cache")
    out = tmp_path / "report"
    result = subprocess.run(
        [sys.executable, "-m", "craft_vla.cli.main", "demo", "--quick", "--out_dir", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "wall time" in result.stdout
    assert (out / "report.md").read_text().count("|") > 10
    data = json.loads((out / "results.json").read_text())
    runs = data["results"]
    assert {r["method"] for r in runs} == {"sft_full", "craft"}
    for run in runs:
        numbers = list(finite_numbers({k: v for k, v in run.items() if k != "retention"}))
        numbers += list(finite_numbers(run["retention"]["qa"])) + [
            run["retention"]["probe_accuracy"],
            run["retention"]["anchor_drift"],
        ]
        assert numbers and all(math.isfinite(x) for x in numbers)
    snapshot_qa = data["snapshot"]["heldout_qa"]["overall"]
    assert snapshot_qa > 0.3  # 38 possible answers: chance is a few percent
    craft_log = (out / "runs" / "craft-seed0" / "metrics.jsonl").read_text().splitlines()
    assert json.loads(craft_log[0])["craft/L_ret"] < 1e-3  # the model starts as the snapshot (‖f~‖² is ~10²)
    # progress: the table fills in as runs finish, with the time left; the stages say what they build
    assert "[1/2 runs" in result.stdout and "min left" in result.stdout
    assert "building the snapshot" in result.stdout and "building the demonstrations" in result.stdout
    # a second demo on the same cache reuses data, snapshot and anchor cache (craft needs it; the cache is
    # built for retention methods only), and says so; it also runs WiSE-FT on its SFT run
    again = subprocess.run(
        [
            sys.executable,
            "-m",
            "craft_vla.cli.main",
            "demo",
            "--quick",
            "--methods",
            "sft_full",
            "craft",
            "wise_ft",
            "--steps",
            "2",
        ]
        + ["--eval_episodes_per_task", "1", "--retention_scenes", "40", "--out_dir", str(tmp_path / "again")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    for stage in ("demonstrations", "snapshot", "anchor cache"):
        assert f"reusing the cached {stage}" in again.stdout, stage
    assert "building the" not in again.stdout
    wise = [
        r
        for r in json.loads((tmp_path / "again" / "results.json").read_text())["results"]
        if r["method"] == "wise_ft"
    ]
    assert len(wise) == 1 and [row["alpha"] for row in wise[0]["sweep"]] == [0.2, 0.4, 0.6, 0.8, 1.0]
    assert wise[0]["alpha"] in (0.2, 0.4, 0.6, 0.8, 1.0) and math.isfinite(wise[0]["action_l1"])
