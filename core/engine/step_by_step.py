"""Step by step on a private copy of one arm: a copy of its G, D and optimisers per rule
(bce, reinforce), stepped in lockstep one D step or one G step at a time, on the same
real batches and z, so each step can be drawn. Like two arms of an arena started from
the arm's state now; the arena itself is only read (under its lock), never changed.
"""
from __future__ import annotations

import numpy as np
import torch

from core.engine.rules import RULES
from core.engine.samples import d_heatmap
from core.engine.step import StepContext, discriminator_step, draw_batch
from core.engine.update_field import FIELD_RULES, UpdateField, clone_nets, pull_draws, update_field

SHOWN = 200        # samples drawn (the first of the arena's fixed z): fast to draw
MEAN_DRAWS = 64    # noise draws averaged for the "expected pull" arrows


def rule_configs(arena, arm_name: str) -> dict[str, tuple]:
    """{rule: (config, steps since that rule started, G's Adam state)} for each rule
    drawn, from the arm that runs that rule now (the picked one first): its options (so
    reinforce's sigma is the one in use) and its Adam state, whose second moment holds
    that rule's gradient scale (with another rule's, one reinforce step moved samples
    ~5x further than its own arm's step on ring8). With no such arm: the picked arm's
    settings, the rule's default options and the picked arm's Adam state."""
    picked = arena.arms[arm_name]
    out = {}
    for rule in FIELD_RULES:
        src = picked if picked.cfg.rule == rule else next(
            (a for a in arena.arms.values() if a.cfg.rule == rule), None)
        if src is None:
            out[rule] = (picked.cfg.fresh_options(rule).replace(rule=rule), 0, None)
        else:
            out[rule] = (src.cfg, src.step_count - src.rule_start,
                         src.nets.g_opt.state_dict())
    return out


class StepByStep:
    def __init__(self, nets, configs: dict[str, tuple], data_x: torch.Tensor,
                 z: torch.Tensor, *, seed: int = 0, label: str = "", at_step: int = 0) -> None:
        self.cfgs = {rule: c[0] for rule, c in configs.items()}
        self.rule_steps = {rule: int(c[1]) for rule, c in configs.items()}
        self.nets = {rule: clone_nets(nets, c[0], c[2] if len(c) > 2 else None)
                     for rule, c in configs.items()}
        self.data_x, self.z = data_x, z
        self.seed = int(seed)
        self.gen = torch.Generator(z.device).manual_seed(self.seed)   # the D steps' batches
        self.label, self.at_step = label, int(at_step)   # whose copy, taken at which step
        self.d_steps = self.g_steps = 0
        self._fields: dict | None = None   # {rule: (field, nets after its G step)}
        self._means: dict | None = None

    @classmethod
    def from_arena(cls, arena, arm_name: str, n: int = SHOWN, seed: int = 0) -> "StepByStep":
        """Copies of arm `arm_name` now, drawn on the first n of the arena's fixed z."""
        with arena.lock:   # the training thread waits for the copy, never the other way
            arm = arena.arms[arm_name]
            return cls(arm.nets, rule_configs(arena, arm_name), arena.stream.x,
                       arena.stream.fixed_z[:n].clone(), seed=seed, label=arm_name,
                       at_step=arena.step_count)

    @property
    def _noise_seed(self) -> int:
        return self.seed + 1 + self.g_steps   # new policy noise for every G step

    def fields(self) -> dict[str, UpdateField]:
        """Each rule's field on its copy now (kept until the next step)."""
        if self._fields is None:
            self._fields = {rule: update_field(nets, self.cfgs[rule], self.z,
                                               rule_step=self.rule_steps[rule],
                                               seed=self._noise_seed)
                            for rule, nets in self.nets.items()}
        return {rule: f for rule, (f, _) in self._fields.items()}

    def mean_pulls(self, draws: int = MEAN_DRAWS) -> dict[str, np.ndarray]:
        """Each rule's pull averaged over `draws` noise draws (bce's: its one exact pull)."""
        if self._means is None:
            self._means = {rule: pull_draws(nets, self.cfgs[rule], self.z, draws,
                                            rule_step=self.rule_steps[rule],
                                            seed=self._noise_seed).mean(0)
                           for rule, nets in self.nets.items()}
        return self._means

    def heatmap(self, rule: str, extent: tuple) -> np.ndarray:
        """D(x) of that rule's copy on a grid over extent (rows y, columns x)."""
        with torch.no_grad():
            return d_heatmap(self.nets[rule].D, extent)

    def d_step(self) -> None:
        """One BCE step of every copy's D on one shared real batch and z, against what
        that copy's G emits under its rule (as train_step does)."""
        cfg = next(iter(self.cfgs.values()))
        real, z = draw_batch(self.data_x, cfg, self.gen)
        for rule, nets in self.nets.items():
            cfg = self.cfgs[rule]
            noise = torch.Generator(z.device).manual_seed(self._noise_seed + 10_000)
            ctx = StepContext(cfg, nets, 1, self.rule_steps[rule], noise, z=z)
            with torch.no_grad():
                mu = nets.G(z)
                sample, _ = RULES[rule].emit(mu, ctx)
                discriminator_step(nets, real, mu if cfg.d_sees == "mean" else sample,
                                   RULES[rule].trains_d(ctx.options), cfg.r1)
        self.d_steps += 1
        self._fields = self._means = None

    def g_step(self) -> None:
        """One G update of every copy: exactly the update its field drew (the samples
        move by each field's `moved`)."""
        self.fields()
        self.nets = {rule: after for rule, (_, after) in self._fields.items()}
        self.rule_steps = {rule: n + 1 for rule, n in self.rule_steps.items()}
        self.g_steps += 1
        self._fields = self._means = None
