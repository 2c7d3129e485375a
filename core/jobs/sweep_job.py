"""A sweep run from a background thread (the Compare page's sweep mode): run_sweep into
a folder, exactly as `python -m core sweep --out` would, so the page reads the same
folder back (core/jobs/sweep_read.py) as tasks finish, and it can be opened again later.

A SeedJob in all that a page and ui/runs.RunRegistry touch (status, progress, stop);
only what runs and what is counted differ.
"""
from __future__ import annotations

from pathlib import Path

from core.engine.config import TrainConfig
from core.jobs.seed_job import SeedJob
from core.jobs.sweep import points_of, run_sweep


class SweepJob(SeedJob):
    UNIT = "tasks"   # a stopped sweep counts tasks (grid points x seeds), not seeds

    def __init__(self, cfg: TrainConfig, arms: list, grid: list[tuple[str, list]],
                 seeds: list[int], out: Path, *, run_id: str, **options) -> None:
        super().__init__(cfg, arms, seeds, run_id=run_id, **options)
        self.grid, self.out = grid, Path(out)
        self.done: list[str] = []          # task keys ("lr=0.001/seed_1") as they finish

    @property
    def total(self) -> int:
        return len(points_of(self.grid)) * len(self.seeds)

    @property
    def finished(self) -> int:
        return len(self.done) + len(self.failures)

    def _collect(self, result) -> None:
        with self._lock:
            self.done.append(result.task.key)

    def _work(self) -> None:
        run_sweep(self.cfg, self.arms, self.grid, self.seeds, self.out,
                  warmup_steps=self.warmup_steps, backend=self.backend,
                  workers=self.workers, address=self.address, hook=self.hook,
                  log=self._say, should_stop=self._stop.is_set,
                  on_result=self._collect, on_failure=self._fail)
