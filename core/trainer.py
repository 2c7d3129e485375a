"""Trainer: owns the models, optimisers and RNG streams of one run, and its thread.

`step()` does one training iteration; `start()` runs steps in a background daemon
thread that never touches any UI. Controls: pause / resume / step_once / stop.
Readers (UI, CLI) use `status`, `log` (MetricLog) and `snapshots` (SnapshotStore),
all safe to read while the thread runs.
"""
from __future__ import annotations

import copy
import math
import os
import threading
import time
import traceback
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import ConfigError, TrainConfig
from .data import DataSet, load_dataset
from .evaluate import QualityHook
from .metrics import MetricLog
from .models import build_models, flatten_parameters
from .samples import Snapshot, SnapshotStore, d_heatmap, grid_png, toy_extent
from .updates import UPDATE_RULES, Nets, StepContext, draw_batch, train_step

STATES = ("idle", "running", "paused", "stopped", "finished", "diverged", "failed")
LIVE_STATES = ("running", "paused", "diverged")
FIXED_IMAGES = 64     # fixed-noise grid: 8 x 8
FIXED_POINTS = 1000   # fixed-noise scatter for 2-D data


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but no CUDA GPU is available; "
                           "use 'auto' or 'cpu'")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def torch_threads() -> int:
    """Intra-op threads for each training thread: GANLAB_TORCH_THREADS, default 1.

    Measured on the 2-core machine with other work running: torch's default of 2
    OpenMP threads ran the source preset at ~30 steps/s (threads spin-waiting for a
    core), 1 thread at ~275. Only on an otherwise idle machine are 2 threads faster
    (see bench/engine.py), so 1 is the safe default; raise it on a bigger machine.
    """
    raw = os.environ.get("GANLAB_TORCH_THREADS", "1")
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(f"GANLAB_TORCH_THREADS={raw!r} must be a positive integer")
    return int(raw)


def new_run_id(prefix: str = "run") -> str:
    return f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"


def make_adam(flat: torch.nn.Parameter, opt_cfg) -> torch.optim.Adam:
    return torch.optim.Adam([flat], lr=opt_cfg.lr, betas=(opt_cfg.beta1, opt_cfg.beta2),
                            fused=True)


def build_nets(cfg: TrainConfig, data: DataSet, device: torch.device) -> Nets:
    G, D = build_models(cfg, data.dim, data.is_image)
    G, D = G.to(device), D.to(device)
    g_flat, d_flat = flatten_parameters(G), flatten_parameters(D)
    return Nets(G, D, g_flat, d_flat, make_adam(g_flat, cfg.g_opt), make_adam(d_flat, cfg.d_opt))


def fixed_noise(cfg: TrainConfig, data: DataSet, device: torch.device) -> torch.Tensor:
    """The z shown in every snapshot; from its own seed so it never shifts the batches."""
    n = FIXED_IMAGES if data.is_image else FIXED_POINTS
    gen = torch.Generator().manual_seed(cfg.seed + 7919)
    return torch.randn(n, cfg.latent_dim, generator=gen).to(device)


def make_snapshot(nets: Nets, data: DataSet, z: torch.Tensor, step: int) -> Snapshot:
    with torch.no_grad():
        out = nets.G(z)
    if data.is_image:
        return Snapshot(step, png=grid_png(out, data.image_shape))
    extent = toy_extent(data.modes)
    return Snapshot(step, points=out.float().cpu().numpy(),
                    heatmap=d_heatmap(nets.D, extent), extent=extent)


def run_state(cfg: TrainConfig, run_id: str, step: int, nets: Nets, data_gen: torch.Generator,
              noise_gen: torch.Generator, fixed_z: torch.Tensor, log: MetricLog,
              snapshots: SnapshotStore) -> dict:
    """One run's checkpoint fields as plain tensors / dicts (see checkpoint.py); a
    Trainer and every arena arm are saved through this."""
    return {
        "config": cfg.to_dict(),
        "run_id": run_id,
        "step": step,
        "rule": cfg.rule,
        "generator": _cpu(nets.G.state_dict()),
        "discriminator": _cpu(nets.D.state_dict()),
        "g_optimizer": _cpu(nets.g_opt.state_dict()),
        "d_optimizer": _cpu(nets.d_opt.state_dict()),
        "rng": {"data": data_gen.get_state(), "noise": noise_gen.get_state()},
        "fixed_z": fixed_z.cpu(),
        "metrics": log.state(),
        "snapshots": snapshots.state(),
    }


def load_nets(nets: Nets, state: dict) -> None:
    """Weights and optimiser states of a run state into `nets`. The optimiser states
    are copied: torch keeps the given moment tensors and updates them in place, so two
    runs loaded from one dict would share (and corrupt) them."""
    nets.G.load_state_dict(state["generator"])
    nets.D.load_state_dict(state["discriminator"])
    nets.g_opt.load_state_dict(copy.deepcopy(state["g_optimizer"]))
    nets.d_opt.load_state_dict(copy.deepcopy(state["d_optimizer"]))


@dataclass(frozen=True)
class Status:
    state: str
    step: int
    steps_per_s: float
    elapsed_s: float
    message: str = ""

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES


class RunControls:
    """The background thread and its controls, shared by Trainer and arena.Arena.

    A subclass provides cfg, run_id, run_dir, step_count, step(), take_snapshot(),
    _has_snapshots() and state_dict(), and calls _init_controls() in its __init__.
    """
    checkpoint_kind = "run"

    def _init_controls(self) -> None:
        self.error: str | None = None
        self.error_trace: str | None = None
        self._state = "idle"
        self._message = ""
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._pause = threading.Event()
        self._wake = threading.Event()
        self._parked = threading.Event()  # set while the thread idles in a pause
        self._run_time = 0.0              # seconds spent running (pauses excluded)
        self._ema_dt = 0.0
        self._last_t: float | None = None
        self.on_step = []                 # callables(trainer) run in the thread after a step

    def _tick(self) -> float:
        now = time.perf_counter()
        if self._last_t is not None:
            dt = now - self._last_t
            self._run_time += dt
            self._ema_dt = dt if self._ema_dt == 0 else 0.95 * self._ema_dt + 0.05 * dt
        self._last_t = now
        return 1.0 / self._ema_dt if self._ema_dt > 0 else float("nan")

    def _check_finite(self, step: int, values: dict) -> None:
        bad = [k for k in ("d_loss", "g_loss") if not math.isfinite(values[k])]
        bad += [k.replace("_skipped", "") + " gradient" for k in ("d_skipped", "g_skipped")
                if values[k] > 0]
        if bad:
            self._pause.set()
            self._state = "diverged"
            self._message = (f"diverged at step {step}: {', '.join(bad)} not finite. "
                             "The bad update was skipped, so the weights are intact; save a "
                             "checkpoint and fine-tune with lower learning rates, or resume.")

    def _budget_reached(self) -> bool:
        return bool(self.cfg.steps) and self.step_count >= self.cfg.steps

    # -- the background thread ------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        if self.step_count == 0 and not self._has_snapshots():
            self.take_snapshot()
        self._stop.clear()
        self._pause.clear()
        self._state = "running"
        self._message = ""
        self._last_t = None
        self._thread = threading.Thread(target=self._loop, name=f"trainer-{self.run_id}",
                                        daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        try:
            torch.set_num_threads(torch_threads())  # the OpenMP setting is per OS thread
            while not self._stop.is_set():
                if self._pause.is_set():
                    if self._state == "running":
                        self._state = "paused"
                    self._last_t = None
                    self._parked.set()
                    self._wake.wait(0.05)
                    self._wake.clear()
                    continue
                self._parked.clear()
                if self._state == "paused":
                    self._state = "running"
                self.step()
                for hook in self.on_step:
                    hook(self)
                if self._budget_reached():
                    self._finish()
                    return
        except Exception as exc:  # surface the crash; the UI shows status and error
            self.error = f"{type(exc).__name__}: {exc}"
            self.error_trace = traceback.format_exc()
            self._state = "failed"
            self._message = f"training thread crashed at step {self.step_count}: {self.error}"

    def _finish(self) -> None:
        if self.step_count % self.cfg.sample_every:
            self.take_snapshot()
        self._state = "finished"
        self._message = f"reached the step budget ({self.cfg.steps} steps)"

    def pause(self, wait: float = 2.0) -> None:
        if self._state in ("running", "idle"):
            self._pause.set()
            self._state = "paused" if self._thread else self._state
            # Return once the in-flight step (and its hooks) is done, so the step count
            # shown next to "paused" is the one the run holds at.
            if self.thread_alive and threading.current_thread() is not self._thread:
                self._parked.wait(wait)

    def resume(self) -> None:
        if self._state in ("paused", "diverged"):
            self._message = ""
            self._state = "running"
            self._parked.clear()
            self._pause.clear()
            self._wake.set()

    def step_once(self) -> dict[str, float]:
        """One step while paused (or before starting); refused while running."""
        if self._state == "running":
            raise RuntimeError("step_once needs a paused run: pause it first")
        if self._state in ("failed", "stopped", "finished"):
            raise RuntimeError(f"the run is {self._state}; resume it from a checkpoint")
        return self.step()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self._pause.clear()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._state in ("running", "paused", "diverged", "idle"):
            self._state = "stopped"
            self._message = f"stopped at step {self.step_count}"

    @property
    def thread_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def status(self) -> Status:
        sps = 1.0 / self._ema_dt if self._ema_dt > 0 and self._state == "running" else 0.0
        return Status(self._state, self.step_count, sps, self._run_time, self._message)

    def save_checkpoint(self, path: str | Path | None = None) -> Path:
        """Save state_dict() atomically; by default to <run_dir>/step_<N>.pt, where
        run_dir defaults to checkpoints/<run_id>."""
        from .checkpoint import save_checkpoint  # avoid an import cycle
        if path is None:
            base = self.run_dir or Path("checkpoints") / self.run_id
            path = Path(base) / f"step_{self.step_count}.pt"
        return save_checkpoint(self.state_dict(), path, kind=self.checkpoint_kind)


class Trainer(RunControls):
    def __init__(self, cfg: TrainConfig, *, run_id: str | None = None,
                 run_dir: str | Path | None = None) -> None:
        self.cfg = cfg
        self.run_id = run_id or new_run_id()
        self.run_dir = Path(run_dir) if run_dir else None
        self.device = resolve_device(cfg.device)
        self.data = load_dataset(cfg)
        self.x = self.data.x.to(self.device)
        self.nets = build_nets(cfg, self.data, self.device)
        self.data_gen = torch.Generator(self.device).manual_seed(cfg.seed)
        self.noise_gen = torch.Generator(self.device).manual_seed(cfg.seed + 1)
        self.fixed_z = fixed_noise(cfg, self.data, self.device)
        self.log = MetricLog()
        self.snapshots = SnapshotStore(cfg.max_snapshots)
        self.step_count = 0
        self.lock = threading.RLock()     # guards nets, RNGs and step_count
        self._init_controls()
        self.quality = QualityHook(self.data)  # q_* metrics every cfg.eval_every steps
        self.on_step.append(self.quality)

    # -- one iteration --------------------------------------------------------------
    def step(self) -> dict[str, float]:
        """One training iteration (thread-safe); returns the logged values."""
        with self.lock:
            cfg = self.cfg
            ctx = StepContext(cfg, self.step_count, self.noise_gen)
            batches = [draw_batch(self.x, cfg, self.data_gen) for _ in range(cfg.d_steps)]
            values = train_step(self.nets, batches, ctx)
            self.step_count += 1
            step = self.step_count
            values["steps_per_s"] = self._tick()
            self.log.append(step, {k: v for k, v in values.items() if not k.endswith("_skipped")})
            if step % cfg.sample_every == 0:
                self.take_snapshot()
        self._check_finite(step, values)
        return values

    def _has_snapshots(self) -> bool:
        return bool(self.snapshots.all())

    def take_snapshot(self) -> Snapshot:
        with self.lock:
            snap = make_snapshot(self.nets, self.data, self.fixed_z, self.step_count)
            self.snapshots.add(snap)
        return snap

    def set_rule(self, rule: str) -> None:
        """Switch the generator update rule on a live run; leaves a marker in the log."""
        if rule not in UPDATE_RULES:
            raise ValueError(f"rule {rule!r} is not one of: {', '.join(UPDATE_RULES)}")
        with self.lock:
            if rule != self.cfg.rule:
                self.log.add_event(self.step_count, f"rule: {self.cfg.rule} -> {rule}")
                self.cfg = self.cfg.replace(rule=rule)

    # -- checkpoints ----------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything a checkpoint needs, as plain tensors / dicts (see checkpoint.py)."""
        with self.lock:
            return run_state(self.cfg, self.run_id, self.step_count, self.nets, self.data_gen,
                             self.noise_gen, self.fixed_z, self.log, self.snapshots)

    def load_state_dict(self, state: dict) -> None:
        with self.lock:
            load_nets(self.nets, state)
            self.data_gen.set_state(state["rng"]["data"])
            self.noise_gen.set_state(state["rng"]["noise"])
            self.fixed_z = state["fixed_z"].to(self.device)
            self.step_count = int(state["step"])
            self.log = MetricLog.from_state(state["metrics"])
            self.snapshots = SnapshotStore.from_state(state["snapshots"], self.cfg.max_snapshots)

    @classmethod
    def from_checkpoint(cls, state: dict, *, rule: str | None = None,
                        run_id: str | None = None, run_dir: str | Path | None = None,
                        **changes) -> "Trainer":
        """A new run that continues a checkpoint (a validated load_checkpoint() dict).

        `rule` switches the generator update (RL fine-tuning: pretrain with bce, go on
        with reinforce) and leaves a marker in the log; `changes` are config overrides
        such as steps=0. A step budget the checkpoint already reached is lifted.
        """
        from .checkpoint import config_of  # avoid an import cycle
        cfg = config_of(state)
        if cfg.steps and int(state["step"]) >= cfg.steps and "steps" not in changes:
            changes["steps"] = 0
        if changes:
            cfg = cfg.replace(**changes)
        trainer = cls(cfg, run_id=run_id, run_dir=run_dir)
        trainer.load_state_dict(state)
        source = state.get("run_id") or "a checkpoint"
        trainer.log.add_event(trainer.step_count, f"from {source} @ {trainer.step_count}")
        if rule:
            trainer.set_rule(rule)
        return trainer



def _cpu(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().clone()
    if isinstance(obj, dict):
        return {k: _cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_cpu(v) for v in obj]
    return obj
