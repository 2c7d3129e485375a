"""Independent tasks (one arena per seed and configuration) on one of three backends.

    serial  in this process, one task after another
    local   a process pool on this machine's cores (the default): "spawn" workers,
            os.cpu_count() of them unless told otherwise, one torch thread each (with
            one task or one worker, it runs in this process, as serial)
    ray     a Ray cluster: `address` "auto" or "HOST:PORT" joins a running one (ray start),
            no address starts a local Ray instance with `workers` CPUs, on 127.0.0.1

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
import ipaddress
import os
import re
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
            # (parents[1]: this file is core/jobs/backends.py, and `core` is the package)
            env = {"py_modules": [str(Path(__file__).resolve().parents[1])],
                   "excludes": ["__pycache__", "*.pyc"]}
            try:
                if address:
                    check_reachable(address)    # ray.init retries an absent one for minutes
                    ray.init(address=address, runtime_env=env)
                else:
                    with _loopback_only():
                        ray.init(num_cpus=workers or os.cpu_count() or 1,
                                 include_dashboard=False, runtime_env=env,
                                 _node_ip_address="127.0.0.1")
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


@contextlib.contextmanager
def _loopback_only():
    """A local Ray started here is for this machine alone: its servers listen on
    127.0.0.1. Ray binds them to every interface unless the node's address is a
    loopback one, and ray.init turns 127.0.0.1 back into the machine's network address
    unless its cluster mode is off (ENABLE_RAY_CLUSTER, off by default on macOS and
    Windows), so it is off while Ray starts."""
    from ray._private import ray_constants
    if not hasattr(ray_constants, "ENABLE_RAY_CLUSTER"):   # another Ray: its own way
        yield
        return
    saved = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved


CONNECT_TIMEOUT_S = 5.0
ANSWER_TIMEOUT_S = 3.0    # a gRPC server answers the HTTP/2 preface at once
RAY_CURRENT_CLUSTER = Path("/tmp/ray/ray_current_cluster")   # where `ray start` notes it
MAX_HOST = 253            # the longest DNS name
_HOST_NAME = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9._-]*[A-Za-z0-9_])?")
_PORT = re.compile(r"[0-9]{1,5}")    # ASCII digits: str.isdigit() also takes "²"
# HTTP/2's client preface and an empty SETTINGS frame (RFC 9113, 3.4)
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def _shown(address: str) -> str:
    """The address as an error line quotes it: one line, and not 100k characters."""
    if len(address) <= 80:
        return repr(address)
    return f"{address[:60]!r}... ({len(address)} characters)"


def _valid_host(host: str) -> bool:
    if not host or len(host) > MAX_HOST:
        return False
    if _HOST_NAME.fullmatch(host):
        return True
    try:
        ipaddress.ip_address(host)      # an IPv6 address, [brackets] taken off
    except ValueError:
        return False
    return True


def parse_address(address: str) -> tuple[str, int]:
    """(host, port) of a Ray address "HOST:PORT" or "ray://HOST:PORT"; RunnerError in
    one line unless the host is a host name or an IP address and the port 1-65535."""
    host, _, port = address.strip().removeprefix("ray://").rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not (_valid_host(host) and _PORT.fullmatch(port) and 1 <= int(port) <= 65535):
        raise RunnerError(f"Ray address {_shown(address)}: use auto or HOST:PORT, a host "
                          "name or IP address and a port 1-65535 (e.g. 10.0.0.5:6379)")
    return host, int(port)


def _speaks_grpc(conn: socket.socket, timeout: float) -> bool:
    """Ray's GCS (and the ray:// client server) speak gRPC, so HTTP/2: the server
    answers the client preface with a SETTINGS frame (type 4, stream 0). A port that
    is not Ray says nothing, closes, or answers otherwise, and ray.init would retry it
    for minutes."""
    deadline = time.monotonic() + timeout
    head = b""
    try:
        conn.sendall(_H2_PREFACE)
        while len(head) < 9:            # the first frame header
            conn.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = conn.recv(9 - len(head))
            if not chunk:
                return False
            head += chunk
    except OSError:                     # timed out, reset
        return False
    return head[3] == 0x04 and head[5:9] == bytes(4)


def _tls() -> bool:
    """With RAY_USE_TLS the port wants a TLS handshake first: plain HTTP/2 gets no answer."""
    return os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true")


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S,
                    answer_timeout: float = ANSWER_TIMEOUT_S) -> None:
    """Raise RunnerError in one line unless a Ray cluster answers at the address
    (HOST:PORT, ray://HOST:PORT, or "auto": $RAY_ADDRESS or the cluster `ray start`
    last noted on this machine): something accepts a TCP connection there within
    `timeout` and answers as a gRPC server within `answer_timeout`. "auto" with neither
    is left to Ray, which says at once that it found no cluster."""
    target = address.strip()
    if target == "auto":
        target = os.environ.get("RAY_ADDRESS", "").strip()
        if not target and RAY_CURRENT_CLUSTER.is_file():
            target = RAY_CURRENT_CLUSTER.read_text().strip()
        if not target or target == "auto":
            return
    host, port = parse_address(target)
    via = "" if target == address.strip() else f" (from {address})"
    try:
        conn = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise RunnerError(f"Ray address {target}{via}: no Ray cluster answers there within "
                          f"{timeout:g} s ({reason}); start one with `ray start --head` on "
                          "that machine, or leave the address out for a local Ray") from None
    with conn:
        if _tls() or _speaks_grpc(conn, answer_timeout):
            return
    raise RunnerError(f"Ray address {target}{via}: something listens there but it is not "
                      f"Ray (no gRPC answer within {answer_timeout:g} s); give the head "
                      "node's address as `ray start --head` prints it (port 6379 unless "
                      "--port was given), or leave the address out for a local Ray")


def make_backend(backend: str, workers: int | None = None, address: str | None = None,
                 tasks: int = 0):
    if backend not in BACKENDS:
        raise RunnerError(f"backend {backend!r} is not one of: {', '.join(BACKENDS)}")
    if workers is not None and workers < 1:
        raise RunnerError(f"workers {workers}: use 1 or more")
    if address and backend != "ray":
        raise RunnerError("an address is for the ray backend (--backend ray)")
    if address and address.strip() != "auto":
        parse_address(address)     # before Ray is imported or asked: one line, not a trace
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
