"""A Run: one generator/discriminator pair and everything that moves with it.

Weights, optimisers, the EMA of G, the policy-noise stream, the metric log, the
sample history, the step and where the current rule started. A Trainer drives one
Run; an Arena drives several in lockstep on one BatchStream. Saving and restoring go
through `state()` / `load()` here, the one restore path for every kind of run.
"""
from __future__ import annotations

import copy
import time

import numpy as np
import torch

from core.data.datasets import DataSet
from core.engine.config import TrainConfig
from core.engine.metric_log import MetricLog
from core.engine.models import MLP, build_models, flatten_parameters, make_adam
from core.engine.rules import RULES
from core.engine.samples import Snapshot, SnapshotStore, d_heatmap, grid_png
from core.engine.step import Nets, StepContext, draw_batch, train_step
from core.io.checkpoint import optimizer_state_for
from core.io.saved_points import fields_of
from core.quality.evaluate import QualityHook

FIXED_IMAGES = 64     # fixed-noise grid: 8 x 8
FIXED_POINTS = 1000   # fixed-noise scatter for 2-D data
RESEEDED = "random streams reseeded: the run was saved on another kind of device"


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


def make_snapshot(G: MLP, D: MLP, data: DataSet, z: torch.Tensor, step: int) -> Snapshot:
    with torch.no_grad():
        out = G(z)
    if data.is_image:
        return Snapshot(step, png=grid_png(out, data.image_shape))
    extent = data.extent()
    return Snapshot(step, points=out.float().cpu().numpy(),
                    heatmap=d_heatmap(D, extent), extent=extent)


def restore_rng(gen: torch.Generator, saved: torch.Tensor, seed: int) -> bool:
    """Set a generator's saved state. A CPU and a CUDA generator's states differ in
    size, so a run saved on one device and resumed on the other restarts the stream
    from `seed` instead (returns False; the caller logs it)."""
    if saved.numel() != gen.get_state().numel():
        gen.manual_seed(seed)
        return False
    gen.set_state(saved)
    return True


class BatchStream:
    """The real batches and z every run of a Trainer or Arena is fed, and the fixed
    noise of the sample grid: one seeded stream, so lockstep arms see the same data."""

    def __init__(self, cfg: TrainConfig, data: DataSet, device: torch.device) -> None:
        self.x = data.x.to(device)
        self.gen = torch.Generator(device).manual_seed(cfg.seed)
        self.fixed_z = fixed_noise(cfg, data, device)
        self.device = device

    def draw(self, cfg: TrainConfig) -> list[tuple]:
        return [draw_batch(self.x, cfg, self.gen) for _ in range(cfg.d_steps)]

    def load(self, state: dict, seed: int) -> bool:
        """The saved data stream and fixed noise; False if the stream was saved on
        another kind of device (then it restarts from `seed`)."""
        self.fixed_z = state["fixed_z"].to(self.device)
        return restore_rng(self.gen, state["rng"]["data"], seed)


class Run:
    def __init__(self, cfg: TrainConfig, data: DataSet, device: torch.device, lock,
                 name: str = "") -> None:
        RULES[cfg.rule].ready(cfg)   # files the rule needs: checked when training starts
        self.cfg = cfg
        self.data = data
        self.device = device
        self.lock = lock                  # the owner's lock: guards weights, RNGs, step
        self.name = name
        self.nets = build_nets(cfg, data, device)
        self.G_ema = copy.deepcopy(self.nets.G)
        self.G_ref = self._frozen_copy()  # G when the rule started (KL-anchored rules)
        self.ema_flat = flatten_parameters(self.G_ema).requires_grad_(False)
        self.noise_gen = torch.Generator(device).manual_seed(cfg.seed + 1)
        self.log = MetricLog()
        self.snapshots = SnapshotStore(cfg.max_snapshots)
        self.step_count = 0
        self.rule_start = 0               # step at which the current rule took over
        self.quality = QualityHook(data)  # q_* metrics every cfg.eval_every steps
        self.fast = True                  # use a rule's fast path where it has one
        self.rule_state: dict = {}        # the rule's own state (reset when it starts)
        self.best: dict | None = None     # weights at the best score since the rule started
                                          # (dropped when a rule starts or a state loads)
        self._ema_dt = 0.0

    def _frozen_copy(self) -> MLP:
        return copy.deepcopy(self.nets.G).requires_grad_(False)

    @property
    def uses_reference(self) -> bool:
        return RULES[self.cfg.rule].uses_reference

    @property
    def shown_G(self) -> MLP:
        """The generator that snapshots and quality metrics use (raw or EMA)."""
        return self.G_ema if self.cfg.ema_samples and self.cfg.g_ema else self.nets.G

    def train(self, batches: list[tuple], fixed_z: torch.Tensor,
              lr_scale: float = 1.0) -> dict[str, float]:
        """One iteration on the given batches: G and D update, EMA, log, snapshot;
        `lr_scale` times the configured learning rates (the owner's schedule, which
        knows the budget). The caller holds self.lock."""
        for opt, opt_cfg in ((self.nets.g_opt, self.cfg.g_opt), (self.nets.d_opt, self.cfg.d_opt)):
            opt.param_groups[0]["lr"] = opt_cfg.lr * lr_scale
        ctx = StepContext(self.cfg, self.nets, self.step_count,
                          self.step_count - self.rule_start, self.noise_gen, ref=self.G_ref,
                          state=self.rule_state)
        start = time.perf_counter()
        values = train_step(self.nets, batches, ctx, fast=self.fast)
        if self.cfg.g_ema:
            self.ema_flat.lerp_(self.nets.g_flat.detach(), 1.0 - self.cfg.g_ema)
        dt = time.perf_counter() - start
        self._ema_dt = dt if self._ema_dt == 0 else 0.95 * self._ema_dt + 0.05 * dt
        values["steps_per_s"] = 1.0 / self._ema_dt   # this run's own compute rate
        self.step_count += 1
        self.log.append(self.step_count, {k: v for k, v in values.items()
                                          if not k.endswith("_skipped")})
        if self.step_count % self.cfg.sample_every == 0:
            self.take_snapshot(fixed_z)
        return values

    def take_snapshot(self, fixed_z: torch.Tensor) -> Snapshot:
        with self.lock:
            snap = make_snapshot(self.shown_G, self.nets.D, self.data, fixed_z,
                                 self.step_count)
            self.snapshots.add(snap)
        return snap

    def set_rule(self, rule: str, **changes) -> None:
        """Switch the generator update rule (with `changes` to the config, such as the
        options it cannot start without); its schedules start now; marks the log."""
        RULES.entry(rule)   # a clear error for an unknown name
        with self.lock:
            if rule != self.cfg.rule:
                cfg = self.cfg.replace(rule=rule, **changes)
                RULES[rule].ready(cfg)
                old, self.cfg = self.cfg.rule, cfg
                self.log.add_event(self.step_count, f"rule: {old} -> {rule}")
                self.rule_start = self.step_count
                self.G_ref = self._frozen_copy()
                self.rule_state = {}
                self.best = None

    # -- the best point of a fine-tune ---------------------------------------------------
    def keep_if_best(self, score: float, at_start: bool = False) -> None:
        """Keep this step's weights when `score` beats every earlier one since the rule
        started (a rule's quality hook reports it: rlhf's gold score, whose peak is the
        checkpoint an over-optimised fine-tune should go back to). `at_start`: the score
        of the start, whose weights are the checkpoint the run started from (not kept
        twice). The caller holds self.lock."""
        best = self.best   # a tie goes to the start: the earlier of two equal scores
        if best is not None and (score < best["score"]
                                 or (score == best["score"] and not at_start)):
            return
        self.best = {"score": float(score),
                     "step": self.rule_start if at_start else self.step_count,
                     "weights": None if at_start else self._weights()}

    def _weights(self) -> dict:
        return {"generator": _cpu(self.nets.G.state_dict()),
                "generator_ema": _cpu(self.G_ema.state_dict()),
                "discriminator": _cpu(self.nets.D.state_dict()),
                "g_optimizer": _cpu(self.nets.g_opt.state_dict()),
                "d_optimizer": _cpu(self.nets.d_opt.state_dict())}

    def best_state(self, run_id: str, stream: BatchStream) -> dict | None:
        """This run as it was at its best step (see keep_if_best), or None (none, or the
        start): the weights then, the log and snapshots up to that step; the batch stream
        is today's."""
        with self.lock:
            best = self.best
            if best is None or best["weights"] is None:
                return None
            state = self.state(run_id, stream)
        step = best["step"]
        columns = state["metrics"]["columns"]
        upto = np.asarray(columns.get("step", [])) <= step
        state["metrics"] = {"columns": {k: np.asarray(v)[upto] for k, v in columns.items()},
                            "events": [e for e in state["metrics"]["events"] if e[0] <= step]}
        state["snapshots"] = [s for s in state["snapshots"] if s["step"] <= step]
        return {**state, **best["weights"], "step": step}

    # -- saving and restoring ---------------------------------------------------------
    def state(self, run_id: str, stream: BatchStream) -> dict:
        """This run as checkpoint fields (plain tensors and dicts; see checkpoint.py)."""
        with self.lock:
            return {
                "config": self.cfg.to_dict(),
                "run_id": run_id,
                "step": self.step_count,
                "rule": self.cfg.rule,
                "rule_start": self.rule_start,
                "generator": _cpu(self.nets.G.state_dict()),
                "generator_ema": _cpu(self.G_ema.state_dict()),
                "discriminator": _cpu(self.nets.D.state_dict()),
                "g_optimizer": _cpu(self.nets.g_opt.state_dict()),
                "d_optimizer": _cpu(self.nets.d_opt.state_dict()),
                "rng": {"data": stream.gen.get_state(), "noise": self.noise_gen.get_state()},
                "fixed_z": stream.fixed_z.cpu(),
                "metrics": self.log.state(),
                "snapshots": self.snapshots.state(),
                **({"generator_ref": _cpu(self.G_ref.state_dict())} if self.uses_reference
                   else {}),
                **({"rule_state": _cpu(self.rule_state)} if self.rule_state else {}),
                **fields_of(self.data),   # the user's own points travel with the run
            }

    def load(self, state: dict) -> None:
        """Weights, optimisers (with this run's lr and betas: the config decides),
        EMA, step, log, samples and noise stream of a validated run state."""
        with self.lock:
            nets = self.nets
            nets.G.load_state_dict(state["generator"])
            nets.D.load_state_dict(state["discriminator"])
            nets.g_opt.load_state_dict(optimizer_state_for(state["g_optimizer"], self.cfg.g_opt))
            nets.d_opt.load_state_dict(optimizer_state_for(state["d_optimizer"], self.cfg.d_opt))
            self.G_ema.load_state_dict(state.get("generator_ema", state["generator"]))
            self.step_count = int(state["step"])
            saved_rule = state.get("config", {}).get("rule", self.cfg.rule)
            same_rule = saved_rule == self.cfg.rule
            self.rule_start = int(state.get("rule_start", 0)) if same_rule else self.step_count
            self.G_ref.load_state_dict(state["generator_ref"] if same_rule and
                                       "generator_ref" in state else state["generator"])
            self.best = None
            self.rule_state = {k: v.clone() for k, v in state.get("rule_state", {}).items()
                               } if same_rule else {}
            self.log = MetricLog.from_state(state["metrics"])
            self.snapshots = SnapshotStore.from_state(state.get("snapshots", []),
                                                      self.cfg.max_snapshots)
            if not restore_rng(self.noise_gen, state["rng"]["noise"], self.cfg.seed + 1):
                self.log.add_event(self.step_count, RESEEDED)


def _cpu(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().clone()
    if isinstance(obj, dict):
        return {k: _cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_cpu(v) for v in obj]
    return obj
