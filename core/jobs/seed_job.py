"""A comparison over many seeds, run from a background thread (the Compare page's
many-seed mode): one task per seed through core/jobs/backends.py, results kept in memory
as they arrive so a page can draw them while the others still run.

The job looks like a run to ui/runs.RunRegistry (run_id, status.state / .live,
start(), stop()), so it is kept, listed and re-attached the way arenas are.
"""
from __future__ import annotations

import io
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from core.engine.config import TrainConfig
from core.jobs.arena_task import SUMMARY_METRICS, Task, TaskResult, read_progress
from core.jobs.backends import RunnerError, TaskFailure, describe, run_tasks
from core.jobs.multi_seed import check_and_prepare

LOG_LINES = 200      # the runner's progress lines kept for the page


@dataclass(frozen=True)
class JobStatus:
    state: str          # created, running, finished, stopped, failed
    message: str = ""

    @property
    def live(self) -> bool:
        return self.state == "running"


@dataclass
class SeedResult:
    seed: int
    frames: dict[str, pd.DataFrame]   # arm -> its metric log
    finals: dict[str, dict]           # arm -> final values
    seconds: float
    worker: str
    attempts: int
    message: str                      # why it stopped early, else ""
    png: bytes = b""                  # every arm's final samples, side by side


class SeedJob:
    UNIT = "seeds"   # what a stopped job's message counts

    def __init__(self, cfg: TrainConfig, arms: list, seeds: list[int], *, run_id: str,
                 warmup_steps: int = 0, backend: str = "local",
                 address: str | None = None, workers: int | None = None,
                 hook=None) -> None:
        self.cfg, self.arms, self.seeds = cfg, list(arms), list(seeds)
        self.arm_names = [a if isinstance(a, str) else (a.name or a.rule) for a in arms]
        self.run_id, self.warmup_steps = run_id, warmup_steps
        self.backend, self.address, self.workers, self.hook = backend, address, workers, hook
        self.results: dict[int, SeedResult] = {}
        self.failures: list[TaskFailure] = []
        self.lines: list[str] = []
        self._state, self._message = "created", ""
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.started_at = self.ended_at = None
        self._progress_dir: str | None = None   # the workers' progress files (seed_progress)

    # -- what a page reads ----------------------------------------------------------
    @property
    def status(self) -> JobStatus:
        return JobStatus(self._state, self._message)

    @property
    def total(self) -> int:
        return len(self.seeds)

    @property
    def finished(self) -> int:
        return len(self.results) + len(self.failures)

    def elapsed(self) -> float:
        if self.started_at is None:
            return 0.0
        return (self.ended_at or time.monotonic()) - self.started_at

    def eta(self) -> float | None:
        """Seconds left at the pace so far (None before the first seed finishes)."""
        if not self.finished or self.finished >= self.total:
            return None if not self.finished else 0.0
        return self.elapsed() / self.finished * (self.total - self.finished)

    def snapshot(self) -> tuple[dict[int, SeedResult], list[TaskFailure]]:
        """The results so far, in seed order (copies: the thread adds to them)."""
        with self._lock:
            return dict(sorted(self.results.items())), list(self.failures)

    def seed_progress(self) -> dict[int, tuple[int, int, int]]:
        """seed -> (step, warm-up steps, compared steps per arm) of each seed that is
        training now, as its worker last wrote it (every half second); seeds whose
        worker shares no disk with this process (a remote Ray node) are missing."""
        folder = self._progress_dir
        if folder is None:
            return {}
        done = {f.task.seed for f in self.failures} | set(self.results)
        out = {}
        for seed in self.seeds:
            if seed not in done and (got := read_progress(self._progress_file(seed))):
                out[seed] = got
        return out

    def _progress_file(self, seed: int) -> str:
        return str(Path(self._progress_dir or ".") / f"seed_{seed}.txt")

    def finals(self) -> dict[int, dict[str, dict]]:
        """seed -> arm -> final values, for core/quality/paired.py."""
        return {seed: r.finals for seed, r in self.snapshot()[0].items()}

    # -- control ----------------------------------------------------------------------
    def start(self) -> None:
        self._state, self.started_at = "running", time.monotonic()
        self._thread = threading.Thread(target=self._run, name=f"seeds-{self.run_id}",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Start no more seeds; the job ends when a running one finishes (the others
        finish in their workers, unseen)."""
        if self._state == "running" and not self._stop.is_set():
            self._message = "stopping: no more seeds start; waiting for a running one"
        self._stop.set()
        if self._thread is not None and timeout is not None:
            self._thread.join(timeout)

    @property
    def thread_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- the thread ---------------------------------------------------------------------
    def _say(self, line: str) -> None:
        with self._lock:
            self.lines = (self.lines + [line])[-LOG_LINES:]

    def _collect(self, result: TaskResult) -> None:
        # only what the charts draw: many seeds of full logs would fill the server
        keep = lambda c: c == "step" or c.startswith("q_") or c in SUMMARY_METRICS  # noqa: E731
        frames = {arm: pd.read_csv(io.BytesIO(csv), usecols=keep)
                  for arm, csv in result.logs.items()}
        with self._lock:
            self.results[result.task.seed] = SeedResult(
                result.task.seed, frames, result.finals, result.seconds, result.worker,
                result.attempts, result.message, result.png)

    def _fail(self, failure: TaskFailure) -> None:
        with self._lock:
            self.failures.append(failure)

    def _run(self) -> None:
        try:
            self._work()
            if self._stop.is_set() and self.finished < self.total:
                self._state = "stopped"
                self._message = f"stopped after {self.finished} of {self.total} {self.UNIT}"
            else:
                self._state, self._message = "finished", ""
        except Exception as exc:   # noqa: BLE001 - shown on the page, in one line
            # a backend that cannot start says so itself (address, `ray start --head`)
            self._state = "failed"
            self._message = str(exc) if isinstance(exc, RunnerError) else describe(exc)
        finally:
            self.ended_at = time.monotonic()
            folder, self._progress_dir = self._progress_dir, None
            if folder:
                shutil.rmtree(folder, ignore_errors=True)

    def _work(self) -> None:
        """Run every seed's task (the thread's state follows from what it counted)."""
        cfgs = [self.cfg.replace(seed=seed) for seed in self.seeds]
        check_and_prepare(cfgs, self.arms, self.warmup_steps, self.backend, self.address)
        self._progress_dir = tempfile.mkdtemp(prefix="ganlab-seeds-")
        tasks = [Task(key=f"seed_{s}", seed=s, config=c.to_dict(), arms=tuple(self.arms),
                      warmup_steps=self.warmup_steps, run_id=f"{self.run_id}-seed{s}",
                      hook=self.hook, progress=self._progress_file(s))
                 for s, c in zip(self.seeds, cfgs)]
        run_tasks(tasks, self._collect, backend=self.backend, workers=self.workers,
                  address=self.address, log=self._say, on_failure=self._fail,
                  should_stop=self._stop.is_set)
