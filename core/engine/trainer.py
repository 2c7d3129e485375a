"""Trainer: one Run trained in a background thread, with its controls.

`RunControls` is the thread, its controls (pause / resume / step_once / stop), the
status and the one training loop (`run_here`), shared by Trainer and arena.Arena and
used alike by the dashboard's thread, CLI `train` and CLI `compare`. After each step
the loop calls the step hooks: quality metrics every eval_every steps, a checkpoint
every checkpoint_every steps; at the step budget it takes a last snapshot and
evaluates the final step. Readers (UI, CLI) use `status`, `log` and `snapshots`, all
safe to read while the thread runs; the thread never touches any UI.
"""
from __future__ import annotations

import math
import os
import threading
import time
import traceback
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch

from core.data.datasets import DataSet, load_dataset
from core.engine.config import ConfigError, TrainConfig
from core.engine.fine_tune import fine_tune_config
from core.engine.rules import RULES
from core.engine.run import RESEEDED, BatchStream, Run
from core.engine.schedule import lr_scale
from core.io.checkpoint import SUFFIX, remove_stale_temp, save_checkpoint
from core.io.saved_points import resume_note, saved_dataset
from core.io.schema import MAX_NOTE_NAME, MAX_NOTE_TEXT, config_of

STATES = ("idle", "running", "paused", "stopped", "finished", "diverged", "failed")
LIVE_STATES = ("running", "paused", "diverged")


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for but no CUDA GPU is available; "
                          "use 'auto' or 'cpu'")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def torch_threads() -> int:
    """Intra-op threads for each training thread: GANLAB_TORCH_THREADS, default 1.

    With other work on a 2-core machine, torch's default of one OpenMP thread per
    core spin-waits for a free core and runs far slower than one thread
    (bench/engine.py measures both); raise it on a bigger machine."""
    raw = os.environ.get("GANLAB_TORCH_THREADS", "1")
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= 256:
        raise ConfigError(f"GANLAB_TORCH_THREADS={raw!r} must be an integer in [1, 256]")
    return int(raw)


def new_run_id(prefix: str = "run") -> str:
    return f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"


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
    """The background thread, its controls and the training loop, shared by Trainer
    and arena.Arena.

    A subclass provides cfg, run_id, run_dir, lock, step_count, step() (one
    iteration of every run it drives), active_runs(), take_snapshot() and
    state_dict(), and calls _init_controls() in its __init__.
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
        self.saved: list[Path] = []       # checkpoints written by checkpoint_every
        self.on_step = []                 # more step hooks: callables(job), in the loop
        self._swept: set[Path] = set()    # folders cleared of stale temp files
        self.notes = {"name": "", "text": ""}   # the user's display name and note

    def set_notes(self, name: str = "", text: str = "") -> None:
        """A display name and a note, saved with the checkpoints (cut to the lengths
        core/io/checkpoint.py accepts back)."""
        self.notes = {"name": " ".join(str(name).split())[:MAX_NOTE_NAME],
                      "text": str(text)[:MAX_NOTE_TEXT]}

    def _notes_field(self) -> dict:
        # only when set: files without notes stay as before
        return {"notes": dict(self.notes)} if any(self.notes.values()) else {}

    def _load_notes(self, state: dict) -> None:
        if isinstance(state.get("notes"), dict):   # validated by load_checkpoint
            self.set_notes(state["notes"].get("name", ""), state["notes"].get("text", ""))

    def _tick(self) -> None:
        now = time.perf_counter()
        if self._last_t is not None:
            dt = now - self._last_t
            self._run_time += dt
            self._ema_dt = dt if self._ema_dt == 0 else 0.95 * self._ema_dt + 0.05 * dt
        self._last_t = now

    def _check_finite(self, step: int, values: dict, who: str = "") -> None:
        bad = [k for k in ("d_loss", "g_loss") if not math.isfinite(values[k])]
        bad += [k.replace("_skipped", "") + " gradient" for k in ("d_skipped", "g_skipped")
                if values[k] > 0]
        if bad and self._state != "diverged":
            self._pause.set()
            self._state = "diverged"
            self._message = (f"{who}diverged at step {step}: {', '.join(bad)} not finite. "
                             "The bad update was skipped, so the weights are intact; save a "
                             "checkpoint and fine-tune with lower learning rates, or resume.")

    def _budget_reached(self) -> bool:
        return bool(self.cfg.steps) and self.step_count >= self.end_step

    @property
    def end_step(self) -> int:
        return self.cfg.steps

    # -- the one training loop --------------------------------------------------------
    def after_step(self) -> None:
        """Step hooks: quality metrics every eval_every steps (each run's own hook),
        a checkpoint every checkpoint_every steps, then any hook in on_step."""
        for run in self.active_runs():
            run.quality(run)
        every = self.cfg.checkpoint_every
        if every and self.step_count % every == 0 and self.can_save:
            self.saved.append(self.save_checkpoint())
            keep = self.cfg.keep_checkpoints
            if keep and len(self.saved) > keep:   # only files this loop wrote
                for old in self.saved[:-keep]:
                    old.unlink(missing_ok=True)
                self.saved = self.saved[-keep:]
        for hook in self.on_step:
            hook(self)

    def run_here(self, should_stop=None, on_step=None) -> None:
        """Train in the calling thread until the budget, stop() or should_stop();
        while paused, wait. The dashboard's thread and the CLI both run this loop."""
        while not self._stop.is_set():
            if should_stop is not None and should_stop():
                return
            if self._pause.is_set():
                if self._state == "running":
                    self._state = "paused"
                self._last_t = None
                self._parked.set()
                self._wake.wait(0.05)
                self._wake.clear()
                continue
            self._parked.clear()
            if self._state in ("paused", "idle"):
                self._state = "running"
            values = self.step()
            self.after_step()
            if on_step is not None:
                on_step(values)
            if self._budget_reached():
                self._finish()
                return

    def _finish(self) -> None:
        """At the step budget: a last snapshot and quality evaluation of the final step."""
        for run in self.active_runs():
            if run.step_count % self.cfg.sample_every:
                run.take_snapshot(self.stream.fixed_z)
            run.quality(run, final=True)
        self._state = "finished"
        self._message = f"reached the step budget ({self.end_step} steps)"

    # -- the background thread ------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        if self.step_count == 0 and not any(r.snapshots.all() for r in self.active_runs()):
            self.take_snapshot()
        for run in self.active_runs():
            run.quality.warm_up(run)
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
            self.run_here()
        except Exception as exc:  # surface the crash; the UI shows status and error
            self.error = f"{type(exc).__name__}: {exc}"
            self.error_trace = traceback.format_exc()
            self._state = "failed"
            self._message = f"training thread crashed at step {self.step_count}: {self.error}"

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

    def step_once(self) -> dict:
        """One step (and its hooks) while paused or before starting; refused while
        running."""
        if self._state == "running":
            raise RuntimeError("step_once needs a paused run: pause it first")
        if self._state in ("failed", "stopped", "finished"):
            raise RuntimeError(f"the run is {self._state}; resume it from a checkpoint")
        values = self.step()
        self.after_step()
        return values

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

    @property
    def can_save(self) -> bool:
        return True

    def save_checkpoint(self, path: str | Path | None = None,
                        folder: str | Path | None = None) -> Path:
        """Save state_dict() atomically; by default to <folder>/step_<N>.safetensors, where
        folder defaults to run_dir, then checkpoints/<run_id>. The file is named after
        the step the saved state holds (a running run moves on while it is saved)."""
        state = self.state_dict()
        if path is None:
            base = folder or self.run_dir or Path("checkpoints") / self.run_id
            path = Path(base) / f"step_{state['step']}{SUFFIX}"
        if path.parent not in self._swept and path.parent.is_dir():
            remove_stale_temp(path.parent)   # left by an earlier process killed mid-save
            self._swept.add(path.parent)
        return save_checkpoint(state, path, kind=self.checkpoint_kind)


class Trainer(RunControls):
    """One Run on its own batch stream."""

    def __init__(self, cfg: TrainConfig, *, run_id: str | None = None,
                 run_dir: str | Path | None = None, data: DataSet | None = None) -> None:
        self.run_id = run_id or new_run_id()
        self.run_dir = Path(run_dir) if run_dir else None
        self.device = resolve_device(cfg.device)
        self.data = data if data is not None else load_dataset(cfg)   # data: a checkpoint's
        self.lock = threading.RLock()     # guards the run's weights, RNGs and step
        self.stream = BatchStream(cfg, self.data, self.device)
        self.run = Run(cfg, self.data, self.device, self.lock)
        self._init_controls()

    # The run's fields, read by the UI and the CLI
    cfg = property(lambda self: self.run.cfg)
    nets = property(lambda self: self.run.nets)
    log = property(lambda self: self.run.log)
    snapshots = property(lambda self: self.run.snapshots)
    step_count = property(lambda self: self.run.step_count)
    quality = property(lambda self: self.run.quality)
    fixed_z = property(lambda self: self.stream.fixed_z)

    def active_runs(self) -> list[Run]:
        return [self.run]

    def step(self) -> dict[str, float]:
        """One training iteration (thread-safe); returns the logged values."""
        with self.lock:
            values = self.run.train(self.stream.draw(self.cfg), self.stream.fixed_z,
                                    lr_scale(self.cfg.lr_schedule, self.step_count,
                                             self.cfg.steps))
            step = self.step_count
            self._tick()
        self._check_finite(step, values)
        return values

    def take_snapshot(self):
        return self.run.take_snapshot(self.stream.fixed_z)

    def set_rule(self, rule: str, **changes) -> None:
        """Switch the generator update rule on a live run; leaves a marker in the log."""
        self.run.set_rule(rule, **changes)

    def reconfigure(self, **changes) -> None:
        """Change settings of the run as it goes (validated like any config): a new
        reward model between feedback rounds."""
        cfg = self.cfg.replace(**changes)
        RULES[cfg.rule].ready(cfg)
        with self.lock:
            self.run.cfg = cfg

    def extend(self, steps: int) -> None:
        """A budget `steps` past the current step, for Continue after a stop or the end
        of the budget (the caller starts the thread again)."""
        if self.thread_alive:
            raise RuntimeError("the run is still training; stop or pause it first")
        with self.lock:
            self.run.cfg = self.cfg.replace(steps=self.step_count + int(steps))
            self.log.add_event(self.step_count, f"continued for {int(steps):,} steps")

    # -- checkpoints ----------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything a checkpoint needs, as plain tensors / dicts (see checkpoint.py)."""
        with self.lock:
            return {**self.run.state(self.run_id, self.stream), **self._notes_field()}

    def best_state(self) -> dict | None:
        """The run at its best evaluation since the rule started (rlhf with a gold oracle:
        the gold peak), as a checkpoint dict, or None when no rule keeps one."""
        with self.lock:
            state = self.run.best_state(self.run_id, self.stream)
            return None if state is None else {**state, **self._notes_field()}

    @property
    def best_step(self) -> int | None:
        """The step best_state() would hold, or None."""
        best = self.run.best
        return best["step"] if best else None

    def save_best(self, folder: str | Path) -> str | None:
        """Save the run at its best evaluation beside its checkpoints, as
        <rule's best_checkpoint_name>_step_<N>, when that came before the end; a line
        saying what happened, or None when the rule keeps no best point."""
        step = self.best_step
        if step is None or step == self.step_count:
            return None
        if step == self.run.rule_start:
            return (f"the best score came where the rule started (step {step:,}): the "
                    "checkpoint it started from is the best one")
        name = RULES[self.cfg.rule].best_checkpoint_name
        path = save_checkpoint(self.best_state(), Path(folder) / f"{name}_step_{step}{SUFFIX}")
        return f"the best score came at step {step:,}: saved {path}"

    def load_state_dict(self, state: dict) -> None:
        with self.lock:
            self.run.load(state)
            self._load_notes(state)
            if not self.stream.load(state, self.cfg.seed):
                self.log.add_event(self.step_count, RESEEDED)

    @classmethod
    def from_checkpoint(cls, state: dict, *, rule: str | None = None,
                        run_id: str | None = None, run_dir: str | Path | None = None,
                        **changes) -> "Trainer":
        """A new run that continues a checkpoint (a validated load_checkpoint() dict).

        `rule` switches the generator update (RL fine-tuning: pretrain with bce, go on
        with reinforce) with that rule's default options, and leaves a marker in the
        log; `changes` are config overrides (steps, learning rates, ...) and take
        effect, optimiser included. A step budget the checkpoint already reached is
        lifted.
        """
        cfg, note = config_of(state), None
        if rule:
            cfg, note = fine_tune_config(cfg, [rule])
            if "r1" in changes:   # an r1 asked for is the user's
                note = None
        if cfg.steps and int(state["step"]) >= cfg.steps and "steps" not in changes:
            changes["steps"] = 0
        if changes.get("pac", cfg.pac) != cfg.pac:   # D's weights are sized for its packs
            raise ConfigError(f"pac = {changes['pac']!r} cannot change when continuing a "
                              f"checkpoint: its D scores packs of {cfg.pac} (D's input is pac "
                              "x the data's size); leave pac out, or start a new run")
        if changes:
            cfg = cfg.replace(**changes)
        # the user's points saved in the checkpoint, wherever its CSV is now
        trainer = cls(cfg, run_id=run_id, run_dir=run_dir, data=saved_dataset(state))
        trainer.load_state_dict(state)
        source = state.get("run_id") or "a checkpoint"
        trainer.log.add_event(trainer.step_count, f"from {source} @ {trainer.step_count}")
        if saved_note := resume_note(state):
            trainer.log.add_event(trainer.step_count, saved_note)
        if rule:
            trainer.set_rule(rule)
        if note:
            trainer.log.add_event(trainer.step_count, note)
        return trainer
