"""Arena: two or more arms trained in lockstep, a controlled experiment.

Every arm starts from the same G and D weights (one initialisation, copied), sees
the same real batches and the same z at every step (one data stream, drawn once per
step and fed to every arm), and shares every setting except the generator update
rule and that rule's options. So a difference between arms is the rule's doing,
not the luck of the draw.

Each arm keeps its own policy-noise generator (reinforce's Gaussian samples), seeded
like a single run's, so an arm is bit-for-bit the run `Trainer` would make alone
with that rule; two arms with identical settings stay identical.

Arms can also start from a shared single-run checkpoint (`init_state`), or from a
bce warm-up that the arena trains itself first (`warmup_steps`), then forks:
the source's "RL fine-tuning" scenario.
"""
from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .config import TrainConfig
from .data import load_dataset
from .evaluate import QualityHook
from .metrics import MetricLog
from .samples import SnapshotStore
from .trainer import (RunControls, Status, Trainer, build_nets, fixed_noise, load_nets,
                      make_snapshot, new_run_id, resolve_device, run_state)
from .updates import UPDATE_RULES, Nets, StepContext, draw_batch, train_step

HASH_LEN = 10


@dataclass(frozen=True)
class ArmSpec:
    """An arm: a name, its rule and (optionally) its own reinforce options."""
    rule: str
    name: str = ""
    reinforce: dict = field(default_factory=dict)   # ReinforceConfig overrides

    @staticmethod
    def parse(text: str) -> "ArmSpec":
        """'bce', 'reinforce' or 'reinforce:reward=d:sigma_start=0.05'."""
        rule, *opts = text.strip().split(":")
        options = {}
        for opt in opts:
            key, sep, value = opt.partition("=")
            if not sep:
                raise ValueError(f"arm option {opt!r} in {text!r} must look like key=value")
            options[key.strip()] = _number(value.strip())
        return ArmSpec(rule.strip(), name=text.strip() if options else "", reinforce=options)


def _number(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


class Arm:
    """One arm's own state: config (its rule), networks, policy noise, log, samples."""

    def __init__(self, name: str, cfg: TrainConfig, nets: Nets, noise_gen: torch.Generator,
                 data, lock) -> None:
        self.name = name
        self.cfg = cfg
        self.nets = nets
        self.noise_gen = noise_gen
        self.log = MetricLog()
        self.snapshots = SnapshotStore(cfg.max_snapshots)
        self.init_hash = ""
        self._ema_dt = 0.0
        # QualityHook reads trainer-like fields: cfg, nets, log, lock, step_count
        self.lock = lock
        self.step_count = 0
        self.quality = QualityHook(data)

    def timed(self, dt: float) -> float:
        """This arm's own compute rate (its train_step only), steps/s."""
        self._ema_dt = dt if self._ema_dt == 0 else 0.95 * self._ema_dt + 0.05 * dt
        return 1.0 / self._ema_dt


def weights_hash(nets: Nets) -> str:
    """Short sha256 of G's and D's weights (what the page shows to prove equal starts)."""
    h = hashlib.sha256()
    for module in (nets.G, nets.D):
        for key, value in module.state_dict().items():
            h.update(key.encode())
            h.update(value.detach().cpu().numpy().tobytes())
    return h.hexdigest()[:HASH_LEN]


def arm_names(specs: list[ArmSpec]) -> list[str]:
    names = []
    for spec in specs:
        base = spec.name or spec.rule
        name, n = base, 2
        while name in names:
            name, n = f"{base}-{n}", n + 1
        names.append(name)
    return names


class Arena(RunControls):
    """Lockstep training of several arms; same controls and status as Trainer."""
    checkpoint_kind = "arena"

    def __init__(self, cfg: TrainConfig, arms: list, *, init_state: dict | None = None,
                 warmup_steps: int = 0, run_id: str | None = None,
                 run_dir: str | Path | None = None) -> None:
        specs = [a if isinstance(a, ArmSpec) else ArmSpec.parse(a) for a in arms]
        if len(specs) < 2:
            raise ValueError("an arena needs at least two arms")
        for spec in specs:
            if spec.rule not in UPDATE_RULES:
                raise ValueError(f"rule {spec.rule!r} is not one of: {', '.join(UPDATE_RULES)}")
        if init_state is not None and warmup_steps:
            raise ValueError("give either init_state or warmup_steps, not both")
        self.cfg = cfg                      # shared settings; cfg.steps = comparison steps
        self.run_id = run_id or new_run_id("arena")
        self.run_dir = Path(run_dir) if run_dir else None
        self.device = resolve_device(cfg.device)
        self.data = load_dataset(cfg)
        self.x = self.data.x.to(self.device)
        self.data_gen = torch.Generator(self.device).manual_seed(cfg.seed)
        self.fixed_z = fixed_noise(cfg, self.data, self.device)
        self.lock = threading.RLock()       # guards arms, data_gen and step_count
        self.step_count = 0
        self.fork_step = 0                  # where the arms split (0, or the warm-up's end)
        self.batch_hash = ""                # chained hash of every real batch and z fed
        self.arms: dict[str, Arm] = {}
        init_nets = build_nets(cfg, self.data, self.device)   # the one initialisation
        for name, spec in zip(arm_names(specs), specs):
            arm_cfg = cfg.replace(rule=spec.rule,
                                  **{f"reinforce.{k}": v for k, v in spec.reinforce.items()})
            nets = build_nets(arm_cfg, self.data, self.device)
            nets.G.load_state_dict(init_nets.G.state_dict())   # copies the values in
            nets.D.load_state_dict(init_nets.D.state_dict())
            noise = torch.Generator(self.device).manual_seed(cfg.seed + 1)  # as Trainer's
            self.arms[name] = Arm(name, arm_cfg, nets, noise, self.data, self.lock)
        self.warmup: Trainer | None = None
        self.warmup_steps = int(warmup_steps)
        if self.warmup_steps:
            self.warmup = Trainer(cfg.replace(rule="bce", steps=0),
                                  run_id=f"{self.run_id}-warmup")
        if init_state is not None:
            self._fork(init_state, f"from {init_state.get('run_id') or 'a checkpoint'}")
        self._hash_arms()
        self._init_controls()
        self.on_step.append(Arena.evaluate_arms)

    # -- starting points ----------------------------------------------------------------
    def _hash_arms(self) -> None:
        for arm in self.arms.values():
            arm.init_hash = weights_hash(arm.nets)

    def _fork(self, state: dict, label: str) -> None:
        """Every arm continues from one single-run state (weights, optimisers, RNGs, log)."""
        with self.lock:
            for arm in self.arms.values():
                load_nets(arm.nets, state)
                arm.noise_gen.set_state(state["rng"]["noise"])
                arm.log = MetricLog.from_state(state["metrics"])
                arm.snapshots = SnapshotStore.from_state(state.get("snapshots", []),
                                                         self.cfg.max_snapshots)
                arm.log.add_event(int(state["step"]), label)   # same text in every arm
            self.data_gen.set_state(state["rng"]["data"])
            self.fixed_z = state["fixed_z"].to(self.device)
            self.step_count = self.fork_step = int(state["step"])
            self._hash_arms()

    @property
    def warming_up(self) -> bool:
        return self.warmup is not None

    # -- one lockstep iteration -----------------------------------------------------------
    def step(self) -> dict[str, dict[str, float]]:
        """One step of every arm on the same batches (or one warm-up step)."""
        if self.warmup is not None:
            return {"warmup": self._warmup_step()}
        with self.lock:
            batches = [draw_batch(self.x, self.cfg, self.data_gen)
                       for _ in range(self.cfg.d_steps)]
            out = {}
            for arm in self.arms.values():
                ctx = StepContext(arm.cfg, self.step_count, arm.noise_gen)
                t0 = time.perf_counter()
                values = train_step(arm.nets, batches, ctx)
                values["steps_per_s"] = arm.timed(time.perf_counter() - t0)
                out[arm.name] = values
            self._hash_batches(batches)
            self.step_count += 1
            step = self.step_count
            self._tick()
            for arm in self.arms.values():
                values = out[arm.name]
                arm.log.append(step, {k: v for k, v in values.items()
                                      if not k.endswith("_skipped")})
                if step % self.cfg.sample_every == 0:
                    arm.snapshots.add(make_snapshot(arm.nets, self.data, self.fixed_z, step))
        for name, values in out.items():
            self._check_finite(step, values)
            if self._state == "diverged" and not self._message.startswith("arm "):
                self._message = f"arm {name}: {self._message}"
        return out

    def evaluate_arms(self) -> None:
        """Quality metrics (q_*) of every arm, every cfg.eval_every steps."""
        if self.warmup is not None:
            self.warmup.quality(self.warmup)
            return
        for arm in self.arms.values():
            arm.step_count = self.step_count
            arm.quality(arm)

    def _warmup_step(self) -> dict[str, float]:
        with self.lock:
            values = self.warmup.step()
            self.step_count = self.warmup.step_count
            self._tick()
            if self.step_count >= self.warmup_steps:
                self.warmup.take_snapshot()
                state = self.warmup.state_dict()
                self.warmup = None
                self._fork(state, f"bce warm-up ends, arms fork at step {self.step_count}")
        self._check_finite(self.step_count, values)
        return values

    def _hash_batches(self, batches: list) -> None:
        h = hashlib.sha256(self.batch_hash.encode())
        for real, z in batches:
            h.update(real.detach().cpu().numpy().tobytes())
            h.update(z.detach().cpu().numpy().tobytes())
        self.batch_hash = h.hexdigest()

    def _budget_reached(self) -> bool:
        return bool(self.cfg.steps) and self.warmup is None and (
            self.step_count >= self.end_step)

    @property
    def end_step(self) -> int:
        """The last step: the fork (or warm-up end) plus cfg.steps comparison steps."""
        start = self.warmup_steps if self.warmup is not None else self.fork_step
        return start + self.cfg.steps

    def _has_snapshots(self) -> bool:
        return any(arm.snapshots.all() for arm in self.arms.values())

    def take_snapshot(self) -> None:
        with self.lock:
            if self.warmup is not None:
                self.warmup.take_snapshot()
            for arm in self.arms.values():
                arm.snapshots.add(make_snapshot(arm.nets, self.data, self.fixed_z,
                                                self.step_count))

    def set_rule(self, arm_name: str, rule: str) -> None:
        """Switch one arm's rule mid-run; leaves a marker in that arm's log."""
        if rule not in UPDATE_RULES:
            raise ValueError(f"rule {rule!r} is not one of: {', '.join(UPDATE_RULES)}")
        with self.lock:
            arm = self.arms[arm_name]
            if rule != arm.cfg.rule:
                arm.log.add_event(self.step_count, f"rule: {arm.cfg.rule} -> {rule}")
                arm.cfg = arm.cfg.replace(rule=rule)

    @property
    def status(self) -> Status:
        status = super().status
        if self.warmup is not None and not status.message:
            return Status(status.state, status.step, status.steps_per_s, status.elapsed_s,
                          f"warming up with bce: step {self.step_count} of "
                          f"{self.warmup_steps}, then the arms fork")
        return status

    def hashes(self) -> dict:
        """Short hashes the page shows: each arm's starting weights, the batch stream."""
        return {"init": {n: a.init_hash for n, a in self.arms.items()},
                "batches": self.batch_hash[:HASH_LEN]}

    # -- checkpoints ----------------------------------------------------------------------
    def arm_state(self, name: str) -> dict:
        """One arm as a single-run checkpoint dict (Trainer.load_state_dict accepts it)."""
        with self.lock:
            arm = self.arms[name]
            return run_state(arm.cfg, f"{self.run_id}-{name}", self.step_count, arm.nets,
                             self.data_gen, arm.noise_gen, self.fixed_z, arm.log,
                             arm.snapshots)

    def state_dict(self) -> dict:
        with self.lock:
            if self.warmup is not None:
                raise RuntimeError(f"the arena is still warming up (step {self.step_count} of "
                                   f"{self.warmup_steps}); save after the arms fork")
            return {
                "config": self.cfg.to_dict(),
                "run_id": self.run_id,
                "step": self.step_count,
                "rule": ",".join(a.cfg.rule for a in self.arms.values()),
                "fork_step": self.fork_step,
                "batch_hash": self.batch_hash,
                "init_hashes": {n: a.init_hash for n, a in self.arms.items()},
                "arms": {name: self.arm_state(name) for name in self.arms},
            }

    def load_state_dict(self, state: dict) -> None:
        """Restore an arena checkpoint into an arena built with the same arms."""
        with self.lock:
            if set(state["arms"]) != set(self.arms):
                raise ValueError(f"checkpoint arms {sorted(state['arms'])} differ from this "
                                 f"arena's {sorted(self.arms)}")
            for name, arm in self.arms.items():
                s = state["arms"][name]
                arm.cfg = TrainConfig.from_dict(s["config"])
                load_nets(arm.nets, s)
                arm.noise_gen.set_state(s["rng"]["noise"])
                arm.log = MetricLog.from_state(s["metrics"])
                arm.snapshots = SnapshotStore.from_state(s["snapshots"], self.cfg.max_snapshots)
                arm.init_hash = state.get("init_hashes", {}).get(name, weights_hash(arm.nets))
                self.data_gen.set_state(s["rng"]["data"])
                self.fixed_z = s["fixed_z"].to(self.device)
            self.step_count = int(state["step"])
            self.fork_step = int(state.get("fork_step", 0))
            self.batch_hash = str(state.get("batch_hash", ""))

    @classmethod
    def from_state(cls, state: dict, **changes) -> "Arena":
        """An arena that continues an arena checkpoint (load_checkpoint() dict)."""
        from .checkpoint import config_of
        cfg = config_of(state)
        if changes:
            cfg = cfg.replace(**changes)
        specs = [ArmSpec(TrainConfig.from_dict(s["config"]).rule, name=name)
                 for name, s in state["arms"].items()]
        arena = cls(cfg, specs, run_id=state.get("run_id"))
        arena.load_state_dict(state)
        return arena


def extract_arm(state: dict, name: str) -> dict:
    """One arm of an arena checkpoint as a single-run checkpoint dict."""
    arms = state.get("arms") or {}
    if name not in arms:
        raise KeyError(f"no arm {name!r} in this arena checkpoint; arms: {', '.join(arms)}")
    return {k: v for k, v in arms[name].items()
            if k not in ("schema_version", "kind", "torch_version", "saved_at")}
