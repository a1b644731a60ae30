"""Closed-loop results: episode records, success rates with Wilson 95 % intervals, JSON, markdown, videos."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

Z_95 = 1.959963984540054  # two-sided 95 % normal quantile


@dataclass(frozen=True)
class EpisodeResult:
    """One closed-loop episode of any backend: which task and initial state, whether it succeeded, after
    how many environment steps."""

    suite: str  # a LIBERO / LIBERO-PRO suite, or "tabletop_<split>"
    task_index: int
    task: str
    instruction: str
    trial: int  # LIBERO: index of the initial state used; tabletop: the episode seed
    success: bool
    steps: int  # actions executed (LIBERO's settle steps not counted)
    seconds: float = 0.0  # wall time of the episode in its worker
    error: str = ""  # the exception that ended the episode (counted as a failure), if any


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion; (0, 1) when there are no trials."""
    if trials == 0:
        return 0.0, 1.0
    p = successes / trials
    denom = 1.0 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials))
    return max(0.0, centre - half), min(1.0, centre + half)


def _rate(successes: int, trials: int) -> dict[str, Any]:
    low, high = wilson_interval(successes, trials)
    return {
        "successes": successes,
        "trials": trials,
        "success_rate": successes / trials if trials else 0.0,
        "ci95": [low, high],
    }


def summarise(episodes: list[EpisodeResult]) -> dict[str, Any]:
    """Per-task and per-suite success rates with Wilson 95 % intervals, in first-seen order.

    A task row's instruction is its episodes' one instruction, or the task's name when they differ
    (the tabletop phrases each episode's instruction anew).
    """
    tasks: dict[tuple[str, int], dict[str, Any]] = {}
    suites: dict[str, list[int]] = {}
    for ep in episodes:
        row = tasks.setdefault(
            (ep.suite, ep.task_index),
            {
                "suite": ep.suite,
                "task_index": ep.task_index,
                "task": ep.task,
                "instruction": ep.instruction,
                "n": [0, 0],
            },
        )
        if row["instruction"] != ep.instruction:
            row["instruction"] = ep.task
        row["n"][0] += ep.success
        row["n"][1] += 1
        counts = suites.setdefault(ep.suite, [0, 0])
        counts[0] += ep.success
        counts[1] += 1
    task_rows = [{**{k: v for k, v in row.items() if k != "n"}, **_rate(*row["n"])} for row in tasks.values()]
    suite_rows = [{"suite": suite, **_rate(*counts)} for suite, counts in suites.items()]
    return {"tasks": task_rows, "suites": suite_rows}


def success_rates(episodes: list[EpisodeResult]) -> dict[str, dict[str, Any]]:
    """{suite: {"success_rate": rate, "per_task": {task: rate}}}, in first-seen order."""
    summary = summarise(episodes)
    rates = {row["suite"]: {"success_rate": row["success_rate"], "per_task": {}} for row in summary["suites"]}
    for row in summary["tasks"]:
        rates[row["suite"]]["per_task"][row["task"]] = row["success_rate"]
    return rates


def results_document(episodes: list[EpisodeResult], config: dict[str, Any]) -> dict[str, Any]:
    """The JSON written by an evaluation run: its config, the summary and every episode."""
    return {"config": config, **summarise(episodes), "episodes": [asdict(ep) for ep in episodes]}


def write_results(document: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """Write `results.json` and `results.md` into `out_dir`; returns both paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / "results.json", out_dir / "results.md"
    json_path.write_text(json.dumps(document, indent=2) + "\n")
    md_path.write_text(markdown_table(document) + "\n")
    return json_path, md_path


def load_results(path: Path) -> dict[str, Any]:
    """Read a results file (or the `results.json` inside a run directory)."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"no results file at {path}; expected the results.json written by `craft-vla eval libero`"
        )
    document = json.loads(path.read_text())
    if "tasks" not in document or "suites" not in document:
        raise ValueError(f"{path} is not an evaluation results file (no 'tasks'/'suites' entries)")
    return document


def format_rate(row: dict[str, Any]) -> str:
    low, high = row["ci95"]
    rate, counts = 100 * row["success_rate"], f"({row['successes']}/{row['trials']})"
    return f"{rate:.1f} % [{100 * low:.1f}, {100 * high:.1f}] {counts}"


def markdown_table(document: dict[str, Any]) -> str:
    """Per-task rows then one row per suite: success rate, 95 % interval, successes/trials."""
    lines = ["| suite | task | success (95 % CI) |", "| --- | --- | --- |"]
    lines += [
        f"| {r['suite']} | {r['task_index']}: {r['instruction']} | {format_rate(r)} |"
        for r in document["tasks"]
    ]
    lines += [f"| **{r['suite']}** | all | **{format_rate(r)}** |" for r in document["suites"]]
    return "\n".join(lines)


def compare_table(a: dict[str, Any], b: dict[str, Any], name_a: str = "A", name_b: str = "B") -> str:
    """Two results side by side (markdown), per task and per suite, with the difference in points."""

    def rows(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
        table = {(r["suite"], f"{r['task_index']}: {r['instruction']}"): r for r in document["tasks"]}
        table.update({(r["suite"], "all"): r for r in document["suites"]})
        return table

    rows_a, rows_b = rows(a), rows(b)
    keys = list(rows_a) + [k for k in rows_b if k not in rows_a]
    lines = [
        f"| suite | task | {name_a} | {name_b} | {name_b} − {name_a} |",
        "| --- | --- | --- | --- | --- |",
    ]
    for key in keys:
        ra, rb = rows_a.get(key), rows_b.get(key)
        diff = f"{100 * (rb['success_rate'] - ra['success_rate']):+.1f}" if ra and rb else ""
        cells = [format_rate(r) if r else "—" for r in (ra, rb)]
        lines.append(f"| {key[0]} | {key[1]} | {cells[0]} | {cells[1]} | {diff} |")
    return "\n".join(lines)


def write_video(frames: list[np.ndarray], path: Path, fps: int = 30) -> Path:
    """Write (H, W, 3) uint8 frames as mp4 (needs imageio with imageio-ffmpeg) or, for a .gif path, as GIF."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gif":
        from PIL import Image

        images = [Image.fromarray(frame) for frame in frames]
        images[0].save(path, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)
        return path
    try:
        import imageio.v2 as imageio
        import imageio_ffmpeg  # noqa: F401  (the mp4 writer's backend)
    except ImportError as err:
        raise ImportError(
            "mp4 videos need imageio and imageio-ffmpeg: pip install imageio imageio-ffmpeg, "
            "or pass --video_format gif"
        ) from err
    imageio.mimwrite(path, frames, fps=fps)
    return path
