"""Where compare's tasks run (core/jobs/backends.py): serial vs the local pool vs Ray, and a
worker node lost mid-sweep on a 2-node Ray cluster.

    python bench/cluster.py                  # both parts
    python bench/cluster.py --part 1         # 8 ring8 seeds x bce,reinforce, 2,000 steps,
                                             # serial / local pool (2) / local Ray (2 CPUs)
    python bench/cluster.py --part 2         # ray.cluster_utils.Cluster: a head with no CPU
                                             # and two 1-CPU worker nodes; a sweep; one worker
                                             # node removed while tasks run on it

Part 1 runs the tasks as `python -m core compare` does (core.jobs.multi_seed.run_compare),
prints wall times, speedups, Ray's per-task overhead (the Ray wall minus the pool wall,
per task, and the round trip of a no-op and of a 1-step task), and checks that every
seed's metrics are bit-identical on the three backends. Part 2 runs core.jobs.sweep.run_sweep
against the cluster's address and prints PASS/FAIL per check. The machine may be shared,
so the load average is printed around each timed part. Every Ray process started here is
shut down at the end, also on failure.
"""
from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402

from core.engine.arena import ArmSpec  # noqa: E402
from core.engine.config import preset  # noqa: E402
from core.jobs.multi_seed import run_compare  # noqa: E402

ARMS = [ArmSpec("bce"), ArmSpec("reinforce")]
TIMING = ("steps_per_s",)      # the only column that differs between identical runs


def load() -> str:
    return "load average %.2f %.2f %.2f" % os.getloadavg()


def ray_env() -> dict:
    """The runtime_env core/jobs/backends.py's _Ray uses, so a Ray started here runs the same."""
    return {"py_modules": [str(ROOT / "core")], "excludes": ["__pycache__", "*.pyc"]}


def metrics_of(out: Path, seeds: list[int]) -> dict:
    """Every seed's per-arm metrics CSV (timing column dropped) and hashes.json."""
    found = {}
    for seed in seeds:
        folder = out / f"seed_{seed}"
        for arm in ("bce", "reinforce"):
            frame = pd.read_csv(folder / arm / "metrics.csv").drop(columns=list(TIMING),
                                                                   errors="ignore")
            buf = io.StringIO()
            frame.to_csv(buf, index=False)
            found[(seed, arm)] = buf.getvalue()
        found[(seed, "hashes")] = (folder / "hashes.json").read_text()
    return found


# -- part 1 ------------------------------------------------------------------------------
def part1(steps: int, n_seeds: int, workers: int, tmp: Path) -> bool:
    import ray

    cfg = preset("recommended", data="ring8", steps=steps)
    seeds = list(range(n_seeds))
    print(f"\n== part 1: {n_seeds} ring8 seeds x bce,reinforce, {steps} steps "
          f"(eval every {cfg.eval_every}), {workers} workers, {os.cpu_count()} CPUs", flush=True)
    print(f"before: {load()}", flush=True)
    walls: dict[str, float] = {}
    outs: dict[str, Path] = {}

    def timed(name: str, **kw) -> None:
        outs[name] = tmp / name
        start = time.perf_counter()
        table = run_compare(cfg, ARMS, seeds, outs[name], **kw)
        walls[name] = time.perf_counter() - start
        assert not table.attrs["failures"], table.attrs["failures"]
        print(f"  {name}: {walls[name]:.1f} s  ({load()})", flush=True)

    timed("serial", backend="serial")
    timed("local", backend="local", workers=workers)
    # Ray started here (as _Ray would) so its start-up is timed apart from the tasks;
    # run_compare joins it and leaves it running for the round-trip probes below.
    start = time.perf_counter()
    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False,
             runtime_env=ray_env())
    ray_start = time.perf_counter() - start
    try:
        timed("ray", backend="ray")
        noop_rt, one_rt, one_in = ray_probes(cfg)
    finally:
        ray.shutdown()
    print(f"after:  {load()}", flush=True)

    n = len(seeds)
    print(f"\nwall times, {n} tasks:")
    for name in ("serial", "local", "ray"):
        print(f"  {name:6s} {walls[name]:7.1f} s   speedup vs serial {walls['serial'] / walls[name]:.2f}x")
    print(f"  ray start-up (ray.init, not in the ray wall above): {ray_start:.1f} s; "
          f"with it: {walls['ray'] + ray_start:.1f} s, "
          f"{walls['serial'] / (walls['ray'] + ray_start):.2f}x")
    print(f"Ray per-task overhead: (ray wall - pool wall) / tasks = "
          f"{(walls['ray'] - walls['local']) / n * 1000:+.0f} ms; "
          f"no-op task round trip {noop_rt * 1000:.1f} ms (median of 20); "
          f"1-step task round trip {one_rt * 1000:.0f} ms vs {one_in * 1000:.0f} ms in "
          f"the worker (overhead {(one_rt - one_in) * 1000:.0f} ms)")

    ref = metrics_of(outs["serial"], seeds)
    ok = True
    for name in ("local", "ray"):
        got = metrics_of(outs[name], seeds)
        diff = sorted({k[0] for k in ref if got.get(k) != ref[k]})
        ok &= not diff
        print(f"{'PASS' if not diff else 'FAIL'}: {name} metrics and hashes bit-identical to "
              f"serial for all {n} seeds" + (f" (differ: seeds {diff})" if diff else ""))
    return ok


def ray_probes(cfg) -> tuple[float, float, float]:
    """Ray's fixed cost per task: a no-op's round trip, and a 1-step arena task's round
    trip against the time it spends in its worker (TaskResult.seconds)."""
    import ray

    from core.jobs.arena_task import Task, execute

    noop = ray.remote(num_cpus=1, max_retries=0)(lambda: None)
    ray.get(noop.remote())                              # a warm worker
    trips = []
    for _ in range(20):
        start = time.perf_counter()
        ray.get(noop.remote())
        trips.append(time.perf_counter() - start)
    remote = ray.remote(num_cpus=1, max_retries=0)(execute)
    task = Task(key="probe", seed=0, config=cfg.replace(steps=1).to_dict(), arms=tuple(ARMS))
    ray.get(remote.remote(task))                        # imports and data, once
    best = None
    for _ in range(5):
        start = time.perf_counter()
        result = ray.get(remote.remote(task))
        trip = time.perf_counter() - start
        if best is None or trip < best[0]:
            best = (trip, result.seconds)
    return sorted(trips)[len(trips) // 2], best[0], best[1]


# -- part 2 ------------------------------------------------------------------------------
class Marker:
    """The sweep's task hook: notes in a shared folder which node runs which attempt
    (the "cluster" is on this machine, so the driver can read it)."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def __call__(self, task, attempt: int) -> None:
        import ray
        node = ray.get_runtime_context().get_node_id()
        name = f"{task.key.replace('/', '__')}@{attempt}@{node}@{time.time():.3f}"
        Path(self.folder, name).touch()


def markers(folder: Path) -> list[tuple[str, int, str, float]]:
    out = []
    for p in folder.iterdir():
        key, attempt, node, when = p.name.split("@")
        out.append((key.replace("__", "/"), int(attempt), node, float(when)))
    return out


class Tee(io.TextIOBase):
    """stderr, copied line by line with the time each line arrived (the runner's
    progress and retry lines)."""

    def __init__(self, stream) -> None:
        self.stream, self.lines = stream, []

    def write(self, text: str) -> int:
        self.lines += [(time.perf_counter(), line) for line in text.splitlines() if line]
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()

    def fileno(self) -> int:
        return self.stream.fileno()

    def isatty(self) -> bool:
        return self.stream.isatty()


def part2(steps: int, n_points: int, n_seeds: int, tmp: Path) -> bool:
    import ray
    from ray.cluster_utils import Cluster

    from core.jobs.sweep import run_sweep

    cfg = preset("recommended", data="ring8", steps=steps, eval_every=steps // 2)
    lrs = [round(1e-4 * (i + 1), 6) for i in range(n_points)]
    grid = [("lr", lrs)]
    seeds = list(range(n_seeds))
    total = n_points * n_seeds
    out, marks = tmp / "sweep", tmp / "marks"
    marks.mkdir(parents=True)
    print(f"\n== part 2: a sweep of {total} tasks ({n_points} lr x {n_seeds} seeds, ring8, "
          f"{steps} steps) on a Ray cluster on this machine: a head with 0 CPUs and two "
          "1-CPU worker nodes; one worker node is removed mid-sweep", flush=True)
    print(f"before: {load()}", flush=True)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0,
                                                           "include_dashboard": False})
    state: dict = {}
    try:
        workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
        cluster.wait_for_nodes()
        ids = {w.node_id: f"worker{i + 1}" for i, w in enumerate(workers)}
        print(f"cluster at {cluster.address}: nodes {ids}", flush=True)

        def killer() -> None:
            # once some tasks have finished and both workers run one, remove the node
            # running the task that started last (so it is surely mid-run)
            while not state.get("done"):
                finished = {p.parent.relative_to(out).as_posix()
                            for p in out.glob("*/seed_*/arena.safetensors")} if out.exists() else set()
                running = [m for m in markers(marks) if m[0] not in finished and m[2] in ids]
                nodes = {m[2] for m in running}
                if len(finished) >= 2 and len(nodes) == 2:
                    victim_id = max(running, key=lambda m: m[3])[2]
                    time.sleep(1.0)          # let it get past imports into training
                    finished = {p.parent.relative_to(out).as_posix()
                                for p in out.glob("*/seed_*/arena.safetensors")}
                    state["finished"] = {k: (out / k / "arena.safetensors").stat().st_mtime_ns
                                         for k in finished}
                    state["running"] = {m[0] for m in markers(marks)
                                        if m[0] not in finished and m[2] == victim_id}
                    state["victim"] = victim_id
                    state["killed_at"] = time.perf_counter()
                    print(f"\n>>> removing {ids[victim_id]} ({victim_id[:8]}): "
                          f"{len(finished)} task(s) finished, running there: "
                          f"{sorted(state['running'])}", flush=True)
                    cluster.remove_node(next(w for w in workers if w.node_id == victim_id),
                                        allow_graceful=False)
                    return
                time.sleep(0.2)

        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        start = time.perf_counter()
        tee = sys.stderr = Tee(sys.stderr)
        try:
            result = run_sweep(cfg, ARMS, grid, seeds, out, backend="ray",
                               address=cluster.address, hook=Marker(str(marks)))
        finally:
            sys.stderr = tee.stream
            state["done"] = True
            thread.join()
        wall = time.perf_counter() - start
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()
    print(f"after:  {load()}", flush=True)

    if "victim" not in state:
        print(f"FAIL: no worker node was removed (the sweep ended first, {wall:.0f} s)")
        return False
    table = pd.read_csv(out / "sweep.csv")
    ran = markers(marks)
    keys = [f"lr={lr:g}/seed_{s}" for lr in lrs for s in seeds]
    present = {k for k in keys if (out / k / "arena.safetensors").exists()}
    victim, running, finished = state["victim"], state["running"], state["finished"]
    survivor = next(i for i in ids if i != victim)
    print(f"sweep wall {wall:.1f} s, {total} tasks; removed {ids[victim]} "
          f"{state['killed_at'] - start:.1f} s in; attempts: "
          + ", ".join(f"{k} #{a} on {ids.get(n, n[:8])}" for k, a, n, _ in
                      sorted(ran, key=lambda m: m[3]) if a > 1 or k in running))
    for key in sorted(running):
        said = [(t, line) for t, line in tee.lines if f"{key} failed (attempt 1" in line]
        print(f"runner: {said[0][1].strip()[:110]}... ({said[0][0] - state['killed_at']:.1f} s after "
              "the kill)" if said else f"runner: no retry line for {key}")
    checks = []
    kept = all(k in present and (out / k / "arena.safetensors").stat().st_mtime_ns == t
               for k, t in finished.items())
    ns = set(table[table.metric == "g_loss"].n)
    checks.append((kept, f"all {len(finished)} task(s) finished before the kill are in the "
                         "result, their folders untouched (not rerun)"))
    checks.append((bool(running), f"the kill hit running task(s): {sorted(running)}"))
    retried = all(any(k == key and a == 2 and n == survivor for key, a, n, _ in ran)
                  for k in running)
    checks.append((bool(running) and retried,
                   f"each of them was retried (attempt 2) on the surviving {ids[survivor]}"))
    checks.append((bool(running) and running <= present,
                   "each of them finished (its run folder is written)"))
    checks.append((not result.failures and present == set(keys) and ns == {n_seeds},
                   f"the sweep has all {total} tasks ({len(present)} run folders, n per "
                   f"grid point and arm {sorted(ns)}, failures {len(result.failures)})"))
    md = (out / "sweep.md").read_text()
    says = ("Missing tasks" in md) == bool(result.failures)
    checks.append((says, "sweep.md's summary names what is missing: "
                   + ("; ".join(f"{f.task.key} ({f.error})" for f in result.failures)
                      or "nothing")))
    for ok, text in checks:
        print(f"{'PASS' if ok else 'FAIL'}: {text}")
    return all(ok for ok, _ in checks)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--part", choices=["1", "2", "all"], default="all")
    p.add_argument("--steps", type=int, default=2000, help="part 1's steps per task")
    p.add_argument("--seeds", type=int, default=8, help="part 1's seeds (tasks)")
    p.add_argument("--workers", type=int, default=2, help="part 1's pool and Ray CPUs")
    p.add_argument("--sweep-steps", type=int, default=600)
    p.add_argument("--sweep-points", type=int, default=2)
    p.add_argument("--sweep-seeds", type=int, default=4)
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    ok = True
    try:
        if args.part in ("1", "all"):
            ok &= part1(args.steps, args.seeds, args.workers, tmp / "p1")
        if args.part in ("2", "all"):
            ok &= part2(args.sweep_steps, args.sweep_points, args.sweep_seeds, tmp / "p2")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\n{'PASS' if ok else 'FAIL'}: bench/cluster.py")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
