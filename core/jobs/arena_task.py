"""One task of many: train one arena (one seed of one configuration) and return its
outputs as bytes, so a worker on any backend (core/jobs/backends.py) needs no shared
file system. Also what the driver and the CLI share with it: running an arena to its
budget, each arm's final values, the arms' samples side by side."""
from __future__ import annotations

import io
import os
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from core.engine.arena import Arena
from core.engine.config import TrainConfig
from core.engine.metric_info import METRICS
from core.engine.samples import Snapshot, snapshot_image
from core.engine.trainer import torch_threads
from core.io.checkpoint import to_bytes


@dataclass(frozen=True)
class Task:
    """One arena: a config (TrainConfig.to_dict(), seed included) and its arms."""
    key: str                    # the run folder, relative to the output folder
    seed: int
    config: dict
    arms: tuple                 # ArmSpec or arm texts
    warmup_steps: int = 0
    run_id: str = ""
    point: dict = field(default_factory=dict)   # a sweep's grid values ({} in compare)
    hook: Callable | None = None  # hook(task, attempt), run in the worker first (FailFor)
    # a file the worker rewrites with its step as it trains (read_progress), so a page
    # can show progress inside a seed; only seen where driver and worker share a disk
    progress: str = ""


@dataclass
class TaskResult:
    task: Task
    logs: dict[str, bytes]          # arm -> metrics CSV
    finals: dict[str, dict]         # arm -> final_values()
    png: bytes                      # every arm's samples, side by side
    hashes: dict
    checkpoint: bytes               # the arena checkpoint (kind "arena")
    checkpoints: dict[str, bytes]   # step_<N>.safetensors written by checkpoint_every
    message: str                    # why it stopped early (diverged), else ""
    seconds: float
    worker: str                     # host:pid
    attempts: int = 1


# -- what a worker runs -----------------------------------------------------------------
def execute(task: Task, attempt: int = 1, log_every: float = float("inf")) -> TaskResult:
    """Train one task's arena here and return its outputs as bytes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(torch_threads())
    start = time.perf_counter()
    try:
        if task.hook is not None:
            task.hook(task, attempt)
        cfg = TrainConfig.from_dict(task.config)
        with tempfile.TemporaryDirectory(prefix="ganlab-task-") as tmp:
            arena = Arena(cfg, list(task.arms), warmup_steps=task.warmup_steps,
                          run_id=task.run_id or None, run_dir=tmp)
            if cfg.eval_every and cfg.eval_every <= cfg.steps + task.warmup_steps:
                # build the classifier before the clock starts, where an evaluation falls due
                arena.active_runs()[0].quality.prepare(
                    log=lambda msg: print(msg, file=sys.stderr, flush=True))
            run_arena(arena, log_every=log_every, quiet=True, progress_file=task.progress)
            message = arena.status.message if arena.status.state == "diverged" else ""
            saved = {p.name: p.read_bytes() for p in sorted(Path(tmp).glob("*.safetensors"))}
        return TaskResult(
            task=task,
            logs={name: arm.log.to_csv() for name, arm in arena.arms.items()},
            finals={name: final_values(arm.log) for name, arm in arena.arms.items()},
            png=side_by_side_png(arena), hashes=arena.hashes(),
            checkpoint=to_bytes(arena.state_dict(), kind="arena"), checkpoints=saved,
            message=message, seconds=time.perf_counter() - start,
            worker=f"{socket.gethostname()}:{os.getpid()}", attempts=attempt)
    finally:
        torch.set_num_threads(threads)


FINAL_WINDOW = 100
SUMMARY_METRICS = METRICS.names(summary=True)   # the mean +- s.e. table's rows


def final_values(log, window: int = FINAL_WINDOW) -> dict[str, float]:
    """An arm's final metrics: step-metric means over the last `window` steps, and the
    last value of each quality (q_*) column."""
    return frame_finals(log.to_frame(), window)


def frame_finals(frame, window: int = FINAL_WINDOW) -> dict[str, float]:
    """final_values of a metric table (a saved run's metrics.csv read back)."""
    if frame.empty:
        return {}
    out = {}
    tail = frame.tail(window)
    for name in SUMMARY_METRICS:
        if name in tail:
            out[name] = float(tail[name].mean())
    for name in frame.columns:
        if name.startswith("q_"):
            valid = frame[name].dropna()
            if len(valid):
                out[name] = float(valid.iloc[-1])
    return out


# -- pictures -----------------------------------------------------------------------------
def side_by_side_png(arena: Arena) -> bytes:
    """Every arm's latest fixed-noise samples, side by side, labelled."""
    snaps = {name: arm.snapshots.latest() for name, arm in arena.arms.items()}
    if arena.data.is_image:
        return _join_grids(snaps)
    return _scatter_panels(arena.data, snaps)


def _join_grids(snaps: dict[str, Snapshot]) -> bytes:
    """The arms' grids side by side; each checked and decoded by snapshot_image (an
    arena resumed from a file carries that file's grids): SnapshotImageError, naming
    the step, for a damaged or oversized one."""
    from PIL import Image, ImageDraw
    images = {n: snapshot_image(s.png, s.step).convert("L") for n, s in snaps.items()}
    w = max(im.width for im in images.values())
    h = max(im.height for im in images.values())
    pad, top = 10, 18
    canvas = Image.new("L", (len(images) * (w + pad) - pad, h + top), 255)
    draw = ImageDraw.Draw(canvas)
    for i, (name, im) in enumerate(images.items()):
        x = i * (w + pad)
        draw.text((x + 2, 3), name, fill=0)
        canvas.paste(im, (x, top))
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    return buf.getvalue()


def _scatter_panels(data, snaps: dict) -> bytes:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(snaps), figsize=(4.2 * len(snaps), 4.4), dpi=90)
    real = data.x[:2000].numpy()
    for ax, (name, snap) in zip(np.atleast_1d(axes), snaps.items()):
        ax.imshow(snap.heatmap, extent=snap.extent, origin="lower", cmap="Blues",
                  vmin=0, vmax=1, alpha=0.7)
        ax.scatter(real[:, 0], real[:, 1], s=3, c="0.45", label="real")
        ax.scatter(snap.points[:, 0], snap.points[:, 1], s=3, c="tab:red", alpha=0.6,
                   label="generated")
        ax.set_xlim(snap.extent[:2])
        ax.set_ylim(snap.extent[2:])
        ax.set_aspect("equal")
        ax.set_title(f"{name} @ step {snap.step}", fontsize=10)
    np.atleast_1d(axes)[0].legend(loc="upper right", fontsize=7)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


# -- the headless run -----------------------------------------------------------------------
PROGRESS_EVERY_S = 0.5


def write_progress(path: str, arena: Arena) -> None:
    """'step warmup_steps steps' into path, atomically (a reader never sees half)."""
    try:
        tmp = f"{path}.tmp"
        Path(tmp).write_text(f"{arena.step_count} {arena.warmup_steps} {arena.cfg.steps}")
        os.replace(tmp, path)
    except OSError:
        pass   # progress is a courtesy: never fail the task over it


def read_progress(path: str) -> tuple[int, int, int] | None:
    """(step, warm-up steps, compared steps per arm) a worker last wrote, or None."""
    try:
        step, warmup, steps = (int(v) for v in Path(path).read_text().split())
    except (OSError, ValueError):
        return None
    return step, warmup, steps


def run_arena(arena: Arena, log_every: float = 5.0, quiet: bool = False,
              progress_file: str = "") -> None:
    """Step an arena to its budget in this thread (the same loop as the dashboard's),
    with a progress line on stderr every log_every seconds (and the step in
    progress_file every PROGRESS_EVERY_S, if given); stops early if an arm diverges
    (and says so, unless quiet: the caller reports arena.status.message)."""
    last = [time.perf_counter()]
    wrote = [0.0]

    def progress(out: dict) -> None:
        if progress_file and time.perf_counter() - wrote[0] > PROGRESS_EVERY_S:
            wrote[0] = time.perf_counter()
            write_progress(progress_file, arena)
        if time.perf_counter() - last[0] > log_every:
            last[0] = time.perf_counter()
            losses = "  ".join(f"{n}: d {v['d_loss']:.3f} g {v['g_loss']:.3f}"
                               for n, v in out.items())
            print(f"  step {arena.step_count}/{arena.end_step}  {losses}", file=sys.stderr,
                  flush=True)

    arena.take_snapshot()
    arena.run_here(should_stop=lambda: arena.status.state == "diverged", on_step=progress)
    if arena.status.state == "diverged":
        if not quiet:
            print(f"\n{arena.status.message}", file=sys.stderr)
        arena.take_snapshot()
