"""The options every rule shares for quality: learning-rate schedules and R1."""
import math
from types import SimpleNamespace

import pytest
import torch

from core.engine.arena import Arena
from core.engine.config import ConfigError, TrainConfig
from core.engine.models import MLP, flatten_parameters
from core.engine.schedule import lr_scale
from core.engine.step import add_r1_grad_
from core.engine.trainer import Trainer


def test_lr_scale_shapes():
    assert lr_scale("constant", 50, 100) == 1.0
    assert lr_scale("linear", 25, 100) == pytest.approx(0.75)
    assert lr_scale("cosine", 50, 100) == pytest.approx(0.5)
    assert lr_scale("cosine", 100, 100) == pytest.approx(0.0, abs=1e-12)
    assert lr_scale("linear", 10, 0) == 1.0   # no budget: nothing to decay towards


def test_a_bad_schedule_is_named():
    with pytest.raises(ConfigError, match="lr_schedule = 'step' is not one of: constant"):
        TrainConfig(data="ring8", lr_schedule="step")
    with pytest.raises(ConfigError, match="r1 = -1"):
        TrainConfig(data="ring8", r1=-1.0)


def test_a_run_decays_to_its_budget_and_an_arena_over_its_compared_steps():
    trainer = Trainer(TrainConfig(data="ring8", steps=10, lr_schedule="linear", eval_every=0)
                      .replace(**{"g_opt.lr": 1e-3}))
    for _ in range(10):
        trainer.step()
    assert trainer.nets.g_opt.param_groups[0]["lr"] == pytest.approx(1e-4)  # 1e-3 * (1 - 9/10)
    arena = Arena(TrainConfig(data="ring8", steps=4, lr_schedule="cosine", eval_every=0),
                  ["bce", "reinforce"], warmup_steps=3)
    for _ in range(3):
        arena.step()   # the warm-up keeps its rates; the compared steps start at the fork
    arena.step()
    for arm in arena.arms.values():
        assert arm.nets.d_opt.param_groups[0]["lr"] == pytest.approx(arm.cfg.d_opt.lr)
    arena.step()
    for arm in arena.arms.values():
        expected = arm.cfg.d_opt.lr * 0.5 * (1 + math.cos(math.pi / 4))
        assert arm.nets.d_opt.param_groups[0]["lr"] == pytest.approx(expected)


def test_r1_gradient_matches_finite_differences_of_the_penalty():
    torch.manual_seed(0)
    D = MLP([2, 8, 8, 1], tanh_out=False).double()
    flat = flatten_parameters(D)
    nets = SimpleNamespace(D=D, d_flat=flat)
    real = torch.randn(16, 2, dtype=torch.double)
    gamma = 2.0

    def penalty() -> float:
        x = real.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(D(x).sum(), x)
        return float(0.5 * gamma * g.pow(2).sum(1).mean())

    flat.grad.zero_()
    add_r1_grad_(nets, real, gamma)
    got = flat.grad.clone()
    assert got.abs().max() > 0
    eps = 1e-6
    for i in range(0, flat.numel(), 7):
        with torch.no_grad():
            flat[i] += eps
        up = penalty()
        with torch.no_grad():
            flat[i] -= 2 * eps
        down = penalty()
        with torch.no_grad():
            flat[i] += eps
        assert got[i].item() == pytest.approx((up - down) / (2 * eps), rel=1e-5, abs=1e-8)


def test_r1_runs_in_training_and_changes_the_run():
    runs = []
    for r1 in (0.0, 1.0):
        trainer = Trainer(TrainConfig(data="ring8", r1=r1, eval_every=0, steps=20))
        for _ in range(20):
            trainer.step()
        runs.append(trainer.nets.d_flat.detach().clone())
    assert torch.isfinite(runs[1]).all() and not torch.equal(runs[0], runs[1])
