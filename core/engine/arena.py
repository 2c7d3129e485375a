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
from dataclasses import dataclass, field
from pathlib import Path

from core.data.datasets import load_dataset
from core.engine.config import TrainConfig
from core.engine.rules import RULES, takes_reward_model
from core.engine.run import BatchStream, Run
from core.engine.schedule import lr_scale
from core.engine.trainer import RunControls, Status, new_run_id, resolve_device
from core.io.saved_points import saved_dataset
from core.io.schema import config_of

HASH_LEN = 10
WARMUP_NAME = "bce warm-up"


@dataclass(frozen=True)
class ArmSpec:
    """An arm: its rule, a name, and (optionally) options of that rule."""
    rule: str
    name: str = ""
    options: dict = field(default_factory=dict)   # the rule's option overrides

    @staticmethod
    def parse(text: str) -> "ArmSpec":
        """'bce', 'reinforce' or 'reinforce:reward=d:sigma_start=0.05'."""
        rule, *opts = text.strip().split(":")
        options = {}
        for opt in opts:
            key, sep, value = opt.partition("=")
            if not sep:
                raise ValueError(f"arm option {opt!r} in {text!r} must look like key=value")
            options[key.strip()] = number_or_text(value.strip())
        return ArmSpec(rule.strip(), name=text.strip() if options else "", options=options)

    def config(self, cfg: TrainConfig) -> TrainConfig:
        """The shared config with this arm's rule and rule options."""
        return cfg.replace(rule=self.rule,
                           **{f"{self.rule}.{k}": v for k, v in self.options.items()})


def number_or_text(text: str):
    """An option value typed as text: an int, else a float, else the text itself."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def weights_hash(run: Run) -> str:
    """Short sha256 of G's and D's weights (what the page shows to prove equal starts)."""
    h = hashlib.sha256()
    for module in (run.nets.G, run.nets.D):
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
        arm_cfgs = [spec.config(cfg) for spec in specs]   # validates rules and options
        if init_state is not None and warmup_steps:
            raise ValueError("give either init_state or warmup_steps, not both")
        self.cfg = cfg                      # shared settings; cfg.steps = comparison steps
        self.run_id = run_id or new_run_id("arena")
        self.run_dir = Path(run_dir) if run_dir else None
        self.device = resolve_device(cfg.device)
        saved = saved_dataset(init_state) if init_state is not None else None
        self.data = saved if saved is not None else load_dataset(cfg)   # see saved_points
        self.lock = threading.RLock()       # guards every run, the stream and step_count
        self.stream = BatchStream(cfg, self.data, self.device)
        self.step_count = 0
        self.fork_step = 0                  # where the arms split (0, or the warm-up's end)
        self.batch_hash = ""                # chained hash of every real batch and z fed
        self.init_hashes: dict[str, str] = {}
        # Every Run builds its weights from cfg.seed, so all arms start identical.
        self.arms: dict[str, Run] = {
            name: Run(arm_cfg, self.data, self.device, self.lock, name=name)
            for name, arm_cfg in zip(arm_names(specs), arm_cfgs)}
        self.warmup: Run | None = None
        self.warmup_steps = int(warmup_steps)
        if self.warmup_steps:
            self.warmup = Run(cfg.replace(rule="bce"), self.data, self.device, self.lock,
                              name=WARMUP_NAME)
        if init_state is not None:
            self._fork(init_state, f"from {init_state.get('run_id') or 'a checkpoint'}")
        self._hash_arms()
        self._init_controls()

    # -- starting points ----------------------------------------------------------------
    def _hash_arms(self) -> None:
        self.init_hashes = {name: weights_hash(arm) for name, arm in self.arms.items()}

    def _fork(self, state: dict, label: str) -> None:
        """Every arm continues from one single-run state (weights, optimisers, RNGs, log);
        each arm's rule starts here."""
        with self.lock:
            for arm in self.arms.values():
                arm.load(state)
                arm.log.add_event(int(state["step"]), label)   # same text in every arm
            self.stream.load(state, self.cfg.seed)
            self.step_count = self.fork_step = int(state["step"])
            self._hash_arms()

    def mark(self, text: str) -> None:
        """A marker at the current step on every arm's charts."""
        with self.lock:
            for arm in self.arms.values():
                arm.log.add_event(self.step_count, text)

    @property
    def warming_up(self) -> bool:
        return self.warmup is not None

    def active_runs(self) -> list[Run]:
        return [self.warmup] if self.warmup is not None else list(self.arms.values())

    # -- one lockstep iteration -----------------------------------------------------------
    def step(self) -> dict[str, dict[str, float]]:
        """One step of every arm on the same batches (or one warm-up step)."""
        with self.lock:
            batches = self.stream.draw(self.cfg)
            # the schedule spans the compared steps; the warm-up keeps its rates
            scale = 1.0 if self.warmup is not None else lr_scale(
                self.cfg.lr_schedule, self.step_count - self.fork_step, self.cfg.steps)
            out = {run.name: run.train(batches, self.stream.fixed_z, scale)
                   for run in self.active_runs()}
            self._hash_batches(batches)
            self.step_count += 1
            step = self.step_count
            self._tick()
            if self.warmup is not None and step >= self.warmup_steps:
                self.warmup.take_snapshot(self.stream.fixed_z)
                state = self.warmup.state(f"{self.run_id}-warmup", self.stream)
                self.warmup = None
                self._fork(state, f"bce warm-up ends, arms fork at step {step}")
        for name, values in out.items():
            self._check_finite(step, values, who=f"arm {name}: ")
        return out

    def _hash_batches(self, batches: list) -> None:
        h = hashlib.sha256(self.batch_hash.encode())
        for real, z in batches:
            h.update(real.detach().cpu().numpy().tobytes())
            h.update(z.detach().cpu().numpy().tobytes())
        self.batch_hash = h.hexdigest()

    def _budget_reached(self) -> bool:
        return self.warmup is None and super()._budget_reached()

    @property
    def end_step(self) -> int:
        """The last step: the fork (or warm-up end) plus cfg.steps comparison steps."""
        start = self.warmup_steps if self.warmup is not None else self.fork_step
        return start + self.cfg.steps

    def _finish(self) -> None:
        super()._finish()
        # the budget in the count the page's progress bar uses (compared steps per arm),
        # not end_step, which also counts the warm-up
        after = f", after the fork at step {self.fork_step:,}" if self.fork_step else ""
        self._message = (f"reached the step budget: {self.cfg.steps:,} compared steps per "
                         f"arm{after} (step {self.end_step:,})")

    @property
    def can_save(self) -> bool:
        return self.warmup is None

    def take_snapshot(self) -> None:
        for run in self.active_runs():
            run.take_snapshot(self.stream.fixed_z)

    def set_rule(self, arm_name: str, rule: str) -> None:
        """Switch one arm's rule mid-run; leaves a marker in that arm's log."""
        self.arms[arm_name].set_rule(rule)

    def use_reward_model(self, path: str | Path) -> list[str]:
        """The next feedback round: every arm fine-tuning on a reward model takes this one
        (checked as at a start) and goes on where it is, its KL anchor unchanged. Returns
        those arms' names; marks their logs."""
        with self.lock:
            new = {}
            for name, arm in self.arms.items():
                if takes_reward_model(arm.cfg.rule) and arm.cfg.options().reward_model:
                    new[name] = arm.cfg.replace(**{f"{arm.cfg.rule}.reward_model": str(path)})
                    RULES[arm.cfg.rule].ready(new[name])   # nothing changes if one fails
            for name, cfg in new.items():
                self.arms[name].cfg = cfg
                self.arms[name].log.add_event(self.step_count, f"reward model: {Path(path).name}")
        return list(new)

    def extend(self, steps: int) -> None:
        """`steps` more compared steps past the current one (the caller starts the
        thread again)."""
        if self.thread_alive:
            raise RuntimeError("the comparison is still training; stop or pause it first")
        if self.warmup is not None:
            raise RuntimeError("the comparison is still warming up")
        with self.lock:
            self.cfg = self.cfg.replace(steps=self.step_count - self.fork_step + int(steps))

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
        return {"init": dict(self.init_hashes), "batches": self.batch_hash[:HASH_LEN]}

    # -- checkpoints ----------------------------------------------------------------------
    def arm_state(self, name: str) -> dict:
        """One arm as a single-run checkpoint dict (Trainer.load_state_dict accepts it)."""
        with self.lock:
            return self.arms[name].state(f"{self.run_id}-{name}", self.stream)

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
                "init_hashes": dict(self.init_hashes),
                "arms": {name: self.arm_state(name) for name in self.arms},
                **self._notes_field(),
            }

    def load_state_dict(self, state: dict) -> None:
        """Restore an arena checkpoint into an arena built with the same arms."""
        with self.lock:
            if set(state["arms"]) != set(self.arms):
                raise ValueError(f"checkpoint arms {sorted(state['arms'])} differ from this "
                                 f"arena's {sorted(self.arms)}")
            for name, arm in self.arms.items():
                arm.cfg = TrainConfig.from_dict(state["arms"][name]["config"])
                arm.load(state["arms"][name])
                self.stream.load(state["arms"][name], self.cfg.seed)
            saved = state.get("init_hashes", {})
            self.init_hashes = {n: saved.get(n, weights_hash(a)) for n, a in self.arms.items()}
            self.step_count = int(state["step"])
            self.fork_step = int(state.get("fork_step", 0))
            self.batch_hash = str(state.get("batch_hash", ""))
            self._load_notes(state)

    @classmethod
    def from_state(cls, state: dict, **changes) -> "Arena":
        """An arena that continues an arena checkpoint (load_checkpoint() dict)."""
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
