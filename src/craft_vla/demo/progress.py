"""Live progress of the demo's fine-tuning runs: the table so far and the time left, as each run finishes."""

from __future__ import annotations

import statistics
import time
from typing import Any

from craft_vla.demo.report import markdown_table, summarise


class LiveProgress:
    """Prints, whenever a run finishes, its headline numbers, the table of the runs finished so far and an
    estimate of the demo's remaining wall time.

    The estimate scales the seconds a finished run took per unit of its method's cost (`method_cost`, in
    SFT steps) to all runs, spread over the workers; the runs in flight are counted by the time elapsed.
    """

    def __init__(
        self,
        costs: dict[tuple[str, int], float],
        methods: tuple[str, ...],
        workers: int,
        snapshot_row: dict[str, float] | None = None,
    ) -> None:
        self.costs = costs
        self.methods = methods
        self.workers = max(1, min(workers, len(costs)))
        self.snapshot_row = snapshot_row
        self.results: list[dict[str, Any]] = []
        self.seconds_per_cost: list[float] = []
        self.start = time.perf_counter()

    def remaining_seconds(self) -> float:
        """Estimated wall seconds until every run has finished (nan before the first has)."""
        if not self.seconds_per_cost:
            return float("nan")
        total = sum(self.costs.values()) * statistics.median(self.seconds_per_cost) / self.workers
        return max(0.0, total - (time.perf_counter() - self.start))

    def finished(self, result: dict[str, Any]) -> None:
        self.results.append(result)
        key = (result["method"], result["seed"])
        run_seconds = result["train_seconds"] + result.get("eval_seconds", 0.0)
        self.seconds_per_cost.append(run_seconds / self.costs[key])
        qa = result["retention"]["qa"]["task_irrelevant"]
        success = result["closed_loop"].get("train", {}).get("success_rate", float("nan"))
        print(
            f"\n[{len(self.results)}/{len(self.costs)} runs, {time.perf_counter() - self.start:.0f} s] "
            f"{key[0]} seed {key[1]} ({run_seconds:.0f} s): action L1 {result['action_l1']:.3f}, "
            f"success {success:.2f}, QA not needed by the task {qa:.3f}; "
            f"about {self.remaining_seconds() / 60:.1f} min left"
        )
        done = tuple(m for m in self.methods if any(r["method"] == m for r in self.results))
        print(markdown_table(summarise(self.results, done), self.snapshot_row), flush=True)
