"""Independent tasks (one arena per seed and configuration) on one of three backends.

    serial  in this process, one task after another
    local   a process pool on this machine's cores (the default): "spawn" workers,
            os.cpu_count() of them unless told otherwise, one torch thread each (with
            one task or one worker, it runs in this process, as serial)
    ray     a Ray cluster: `address` "auto" or "HOST:PORT" joins a running one (ray start),
            no address starts a local Ray instance with `workers` CPUs

A task (`Task`) is plain data; a worker runs `execute(task)` and sends back everything
the run folder needs as bytes (`TaskResult`: metric CSVs, final values, the picture,
hashes, the arena checkpoint), so the driver writes the folders and no shared file
system is needed. A seed gives bit-identical metrics on every backend: each task
builds its arena from its config alone and trains with torch_threads() threads.

A task that raises, or whose worker (or node) dies, runs once more; if it fails again
it is reported as a `TaskFailure` and the other tasks go on. Progress lines go to
stderr as tasks finish: done/total, failures, ETA.
"""
from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from core.engine.trainer import torch_threads
from core.jobs.arena_task import Task, TaskResult, execute

BACKENDS = ("serial", "local", "ray")
DEFAULT_BACKEND = "local"
MAX_ATTEMPTS = 2          # a failed task is retried once
RAY_REQUIREMENTS = "requirements-ray.txt"


class RunnerError(ValueError):
    """A backend that cannot start (Ray missing, no cluster at the address, ...)."""


@dataclass
class TaskFailure:
    task: Task
    error: str
    attempts: int


class WorkerDied(Exception):
    """A local worker died while several tasks ran: which one killed it is unknown."""


class FailFor:
    """A test hook: raise in the worker for these seeds, on these attempts (1, 2);
    how = "raise" or "exit" (the worker process dies)."""

    def __init__(self, seeds, attempts=(1, 2), how: str = "raise") -> None:
        self.seeds, self.attempts, self.how = set(seeds), set(attempts), how

    def __call__(self, task: Task, attempt: int) -> None:
        if task.seed in self.seeds and attempt in self.attempts:
            if self.how == "exit":
                os._exit(3)
            raise RuntimeError(f"injected failure (seed {task.seed}, attempt {attempt})")


def _pool_init() -> None:
    import torch

    torch.set_num_threads(torch_threads())


def describe(exc: BaseException) -> str:
    """One line: the task's own exception where a backend wrapped it."""
    cause = getattr(exc, "cause", None)      # ray.exceptions.RayTaskError
    if isinstance(cause, BaseException):
        exc = cause
    if type(exc).__name__ == "BrokenProcessPool":
        return "WorkerDied: the worker process running it died"
    text = " ".join(str(exc).split())
    if len(text) > 300:
        text = text[:300] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# -- backends: submit(task, attempt) -> handle; wait(handles) -> [(handle, result | exc)]
class _Serial:
    slots = 1

    def __init__(self) -> None:
        self._done: dict[int, object] = {}

    def submit(self, task: Task, attempt: int):
        handle = len(self._done)
        try:
            self._done[handle] = execute(task, attempt, log_every=5.0)
        except Exception as exc:   # noqa: BLE001 - reported as the task's failure
            self._done[handle] = exc
        return handle

    def wait(self, handles: list) -> list:
        return [(h, self._done.pop(h)) for h in handles]

    def close(self) -> None:
        pass


@contextlib.contextmanager
def _importable_main():
    """Spawned workers re-run the parent's __main__ when it is a script path. Under
    Streamlit (or its AppTest) that is a page, which must not run in a worker, so a
    bare __main__ stands in while workers start; `python -m core` (a module) is kept."""
    main = sys.modules.get("__main__")
    if main is None or getattr(getattr(main, "__spec__", None), "name", None):
        yield
        return
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


class _Local:
    def __init__(self, workers: int) -> None:
        self.slots = workers
        self._pool = None

    def _executor(self):
        if self._pool is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor
            self._pool = ProcessPoolExecutor(self.slots,
                                             mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_pool_init)
        return self._pool

    def submit(self, task: Task, attempt: int):
        with _importable_main():   # workers start here, on the first submits
            return self._executor().submit(execute, task, attempt)

    def wait(self, handles: list) -> list:
        from concurrent.futures import FIRST_COMPLETED, wait
        from concurrent.futures.process import BrokenProcessPool
        done, _ = wait(handles, return_when=FIRST_COMPLETED)
        out, broken = [], False
        for future in done:
            exc = future.exception()
            broken |= isinstance(exc, BrokenProcessPool)
            out.append((future, exc if exc is not None else future.result()))
        if broken:
            # A worker died, and the pool fails every task in flight: with one, that is
            # the culprit; with several, none is charged (WorkerDied: each reruns alone).
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
            if len(handles) > 1:
                out = [(h, WorkerDied(o) if isinstance(o, BrokenProcessPool) else o)
                       for h, o in out]
        return out

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


def import_ray():
    try:
        import ray
    except ImportError:
        raise RunnerError(f"the ray backend needs Ray: pip install -r {RAY_REQUIREMENTS}") \
            from None
    return ray


class _Ray:
    def __init__(self, workers: int | None, address: str | None) -> None:
        ray = self.ray = import_ray()
        self.started = False
        if not ray.is_initialized():
            # the workers run this checkout's core package, uploaded: every node runs
            # the driver's code, wherever (and whether) the project is checked out there
            env = {"py_modules": [str(Path(__file__).resolve().parent)],
                   "excludes": ["__pycache__", "*.pyc"]}
            try:
                if address:
                    check_reachable(address)    # ray.init retries an absent one for minutes
                    ray.init(address=address, runtime_env=env)
                else:
                    ray.init(num_cpus=workers or os.cpu_count() or 1, include_dashboard=False,
                             runtime_env=env)
            except ConnectionError as exc:
                raise RunnerError(f"--address {address}: no Ray cluster there ({describe(exc)}); "
                                  "start one with `ray start --head`") from None
            self.started = True
        self.slots = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self._remote = ray.remote(num_cpus=1, max_retries=0)(execute)

    def submit(self, task: Task, attempt: int):
        return self._remote.remote(task, attempt)

    def wait(self, handles: list) -> list:
        ready, _ = self.ray.wait(handles, num_returns=1)
        out = []
        for ref in ready:
            try:
                out.append((ref, self.ray.get(ref)))
            except Exception as exc:   # noqa: BLE001 - the task raised, or its worker died
                out.append((ref, exc))
        return out

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()


CONNECT_TIMEOUT_S = 5.0
RAY_CURRENT_CLUSTER = Path("/tmp/ray/ray_current_cluster")   # where `ray start` notes it


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Raise RunnerError in one line unless something accepts a TCP connection at the
    Ray address (HOST:PORT, ray://HOST:PORT, or "auto": $RAY_ADDRESS or the cluster
    `ray start` last noted on this machine). "auto" with neither is left to Ray, which
    says at once that it found no cluster."""
    target = address.strip()
    if target == "auto":
        target = os.environ.get("RAY_ADDRESS", "").strip()
        if not target and RAY_CURRENT_CLUSTER.is_file():
            target = RAY_CURRENT_CLUSTER.read_text().strip()
        if not target or target == "auto":
            return
    host, _, port = target.removeprefix("ray://").rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit():
        raise RunnerError(f"Ray address {address!r}: use auto or HOST:PORT (e.g. 10.0.0.5:6379)")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        via = "" if target == address.strip() else f" (from {address})"
        raise RunnerError(f"Ray address {target}{via}: no Ray cluster answers there within "
                          f"{timeout:g} s ({reason}); start one with `ray start --head` on "
                          "that machine, or leave the address out for a local Ray") from None


def make_backend(backend: str, workers: int | None = None, address: str | None = None,
                 tasks: int = 0):
    if backend not in BACKENDS:
        raise RunnerError(f"backend {backend!r} is not one of: {', '.join(BACKENDS)}")
    if workers is not None and workers < 1:
        raise RunnerError(f"workers {workers}: use 1 or more")
    if address and backend != "ray":
        raise RunnerError("an address is for the ray backend (--backend ray)")
    if backend == "serial":
        return _Serial()
    if backend == "local":
        slots = max(1, min(workers or os.cpu_count() or 1, tasks or 1))
        return _Local(slots) if slots > 1 else _Serial()   # a pool of one: this process
    return _Ray(workers, address)


# -- the driver -------------------------------------------------------------------------
def run_tasks(tasks: list[Task], on_result: Callable[[TaskResult], None], *,
              backend: str = DEFAULT_BACKEND, workers: int | None = None,
              address: str | None = None, log=None,
              on_failure: Callable[[TaskFailure], None] | None = None,
              should_stop: Callable[[], bool] | None = None) -> list[TaskFailure]:
    """Run every task; on_result(result) in this process as each one finishes (in
    the order they finish), on_failure(failure) as one fails twice. Returns the tasks
    that failed twice. should_stop() true: no more tasks start, and it returns once a
    running one finishes (the pool is shut down; its workers end their current task)."""
    say = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    runner = make_backend(backend, workers, address, tasks=len(tasks))
    total, done, failures = len(tasks), 0, []
    pending = [(task, 1, False) for task in tasks]   # (task, attempt, alone), in order
    running: dict = {}                               # handle -> (task, attempt, alone)
    start = time.perf_counter()
    if backend != "serial":
        say(f"{total} task(s) on the {backend} backend, {runner.slots} at a time")
    try:
        while pending or running:
            if should_stop is not None and should_stop():
                say(f"stopped with {done + len(failures)} of {total} task(s) finished")
                break
            while pending and len(running) < runner.slots:
                task, attempt, alone = pending[0]
                if (alone and running) or any(a for _, _, a in running.values()):
                    break                # a suspect of a worker's death runs alone
                pending.pop(0)
                running[runner.submit(task, attempt)] = (task, attempt, alone)
            for handle, outcome in runner.wait(list(running)):
                task, attempt, _ = running.pop(handle)
                if isinstance(outcome, WorkerDied):
                    say(f"  {task.key}: a worker died while it ran with others; it reruns "
                        "alone (the one that fails alone is charged)")
                    pending.insert(0, (task, attempt, True))
                    continue
                if isinstance(outcome, BaseException):
                    if attempt < MAX_ATTEMPTS:
                        say(f"  {task.key} failed (attempt {attempt} of {MAX_ATTEMPTS}): "
                            f"{describe(outcome)}; retrying")
                        pending.insert(0, (task, attempt + 1, False))
                        continue
                    failures.append(TaskFailure(task, describe(outcome), attempt))
                    if on_failure is not None:
                        on_failure(failures[-1])
                    say(f"  {task.key} FAILED after {attempt} attempts: {describe(outcome)}")
                else:
                    outcome.attempts = attempt
                    on_result(outcome)
                    done += 1
                    if outcome.message:
                        say(f"  {task.key}: {outcome.message}")
                say(_progress(done + len(failures), total, len(failures),
                              time.perf_counter() - start, task, outcome))
    finally:
        runner.close()
    return failures


def _progress(finished: int, total: int, failed: int, elapsed: float, task: Task,
              outcome) -> str:
    eta = elapsed / finished * (total - finished) if finished else float("nan")
    what = ("failed" if isinstance(outcome, BaseException)
            else f"done in {outcome.seconds:.1f}s on {outcome.worker}")
    return (f"[{finished}/{total}] {task.key} {what}; {failed} failed; "
            f"elapsed {_clock(elapsed)}, ETA {_clock(eta) if finished < total else '0s'}")


def _clock(seconds: float) -> str:
    if seconds != seconds:
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
