"""Metrics go to a JSONL file always, to W&B when a project is given (offline by default).

metrics.jsonl gets every step; W&B gets every `wandb_log_freq`-th step (VLA-Adapter's --wandb_log_freq),
and every validation result whatever its step: they are rare, and a skipped one would be lost.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

ALWAYS_TO_WANDB = "val/"  # the prefix of the metrics W&B gets at any step


class MetricsLogger:
    """Append one JSON line per logged step; mirror to W&B on the main process when enabled."""

    def __init__(
        self,
        run_dir: Path,
        enabled: bool = True,
        wandb_project: str = "",
        wandb_entity: str = "",
        wandb_mode: str = "offline",
        run_name: str = "",
        config: dict[str, Any] | None = None,
        resume_step: int | None = None,
        wandb_log_freq: int = 1,
    ) -> None:
        self.enabled = enabled
        self.wandb_log_freq = wandb_log_freq
        self.path = Path(run_dir) / "metrics.jsonl"
        self._wandb = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.path.exists():
            self._truncate_after(resume_step)
        if wandb_project:
            import wandb

            os.environ.setdefault("WANDB_MODE", wandb_mode)
            self._wandb = wandb.init(
                project=wandb_project,
                entity=wandb_entity or None,
                name=run_name or None,
                dir=str(run_dir),
                config=config,
                mode=wandb_mode,
                resume="allow",
                id=run_name or None,
            )

    def _truncate_after(self, step: int) -> None:
        """A resumed run rewrites the steps after its checkpoint, so the file matches an uninterrupted run."""
        lines = self.path.read_text().splitlines()
        kept = [line for line in lines if line and json.loads(line)["step"] < step]
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, self.path)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        record = {"step": step, **{k: _jsonable(v) for k, v in metrics.items()}}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self._wandb is None:
            return
        if step % self.wandb_log_freq != 0:
            metrics = {k: v for k, v in metrics.items() if k.startswith(ALWAYS_TO_WANDB)}
        if metrics:
            self._wandb.log(metrics, step=step)

    def close(self) -> None:
        if self._wandb is not None:
            self._wandb.finish()


def _jsonable(v: Any) -> Any:
    v = float(v) if not isinstance(v, (bool, str)) else v
    return None if isinstance(v, float) and not math.isfinite(v) else v


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The logged records of a run, in order."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"no metrics.jsonl in {run_dir}: is it a craft-vla run directory?")
    return [json.loads(line) for line in path.read_text().splitlines() if line]
