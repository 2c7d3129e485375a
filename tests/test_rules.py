"""Update rules: each rule's fast path equals its autograd loss, and the engine's
guarantees around rules (schedules start with the rule, the logged D loss is the one
differentiated, shared clipping, what D sees, the EMA of G, resume overrides)."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from core.engine.arena import Arena
from core.engine.config import TrainConfig
from core.engine.models import MLP
from core.engine.rules import RULES
from core.engine.step import StepContext, discriminator_step, train_step
from core.engine.trainer import Trainer
from core.io.checkpoint import load_checkpoint, to_bytes

FAST_RULES = [name for name in RULES if RULES[name].fast_grad is not None]
TINY = dict(g_hidden=(16, 12), d_hidden=(16,), latent_dim=6, batch_size=8, eval_every=0)


def tiny(**changes) -> TrainConfig:
    return TrainConfig(**TINY).replace(**changes)


def twin_trainers(cfg: TrainConfig) -> tuple[Trainer, Trainer]:
    """Two trainers with identical weights and streams, one per gradient path."""
    fast, ref = Trainer(cfg), Trainer(cfg)
    ref.run.fast = False
    return fast, ref


@pytest.mark.parametrize("data", ["ring8", "mnist5k"])
@pytest.mark.parametrize("rule", FAST_RULES)
def test_fast_path_equals_the_autograd_loss(rule, data):
    """Gradient and metrics of one step, then the weights after 20 steps."""
    cfg = tiny(data=data, rule=rule, d_steps=2, **(
        {"reinforce.cosine_every": 3} if rule == "reinforce" else {}))
    fast, ref = twin_trainers(cfg)
    for _ in range(3):   # step 3 includes the gradient-cosine diagnostic for reinforce
        values_fast, values_ref = fast.step(), ref.step()
    torch.testing.assert_close(fast.nets.g_flat.grad, ref.nets.g_flat.grad,
                               rtol=1e-4, atol=1e-6)
    assert values_fast.keys() == values_ref.keys()
    for key in values_fast:
        if key != "steps_per_s":
            assert values_fast[key] == pytest.approx(values_ref[key], rel=1e-4, abs=1e-6), key
    for _ in range(17):
        fast.step(), ref.step()
    torch.testing.assert_close(fast.nets.g_flat.detach(), ref.nets.g_flat.detach(),
                               rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(fast.run.ema_flat, ref.run.ema_flat, rtol=1e-4, atol=1e-5)


def test_a_rule_without_a_fast_path_trains_through_autograd():
    trainer = Trainer(tiny(data="ring8", rule="reinforce"))
    trainer.run.fast = False      # what a rule with only loss() runs
    before = trainer.nets.g_flat.detach().clone()
    for _ in range(3):
        values = trainer.step()
    assert math.isfinite(values["g_loss"]) and math.isfinite(values["adv_std"])
    assert not torch.equal(before, trainer.nets.g_flat.detach())


def test_logged_d_loss_is_the_loss_whose_gradient_d_follows():
    trainer = Trainer(tiny(data="ring8", **{"d_opt.lr": 1e-9}))
    nets = trainer.nets
    real, z = trainer.stream.draw(trainer.cfg)[0]
    D = type(nets.D)([2, 16, 1], tanh_out=False)
    D.load_state_dict(nets.D.state_dict())
    with torch.no_grad():
        fake = nets.G(z)
    loss = (F.binary_cross_entropy_with_logits(D(real), torch.ones(8, 1))
            + F.binary_cross_entropy_with_logits(D(fake), torch.zeros(8, 1)))
    loss.backward()
    expected = torch.cat([p.grad.reshape(-1) for p in D.parameters()])
    with torch.no_grad():
        out = discriminator_step(nets, real, fake)
    torch.testing.assert_close(nets.d_flat.grad, expected, rtol=1e-5, atol=1e-6)
    assert float(out["d_loss"]) == pytest.approx(float(loss.detach()), rel=1e-5)


def test_sigma_schedule_starts_when_the_rule_starts():
    opts = {"reinforce.sigma_start": 0.2, "reinforce.sigma_end": 0.05,
            "reinforce.sigma_anneal_steps": 100}
    trainer = Trainer(tiny(data="ring8", **opts))
    for _ in range(150):      # a bce warm-up longer than the anneal
        trainer.step()
    trainer.set_rule("reinforce")
    assert trainer.step()["sigma"] == pytest.approx(0.2)
    # an arena forking from a bce warm-up: the reinforce arm starts at sigma_start too
    arena = Arena(tiny(data="ring8", steps=5, **opts), ["bce", "reinforce"], warmup_steps=120)
    for _ in range(121):
        out = arena.step()
    assert out["reinforce"]["sigma"] == pytest.approx(0.2)


def test_gradient_clip_applies_to_every_rule_alike():
    for clip in (0.0, 0.01):
        arena = Arena(tiny(data="ring8", grad_clip=clip), ["bce", "reinforce"])
        starts = {n: a.nets.g_flat.detach().clone() for n, a in arena.arms.items()}
        arena.step()
        for name, arm in arena.arms.items():
            norm = float(arm.nets.g_flat.grad.norm())
            assert norm <= clip + 1e-6 if clip else norm > 0.01, (name, norm)
            assert not torch.equal(starts[name], arm.nets.g_flat.detach())


def test_d_sees_the_policy_mean_when_asked():
    """With d_sees='mean', bce's and reinforce's D get the same first update."""
    for sees, same in (("sample", False), ("mean", True)):
        arena = Arena(tiny(data="ring8", d_sees=sees), ["bce", "reinforce"])
        arena.step()
        d = [arm.nets.d_flat.detach() for arm in arena.arms.values()]
        assert torch.equal(d[0], d[1]) == same, sees


def test_ema_is_kept_saved_restored_and_used_for_samples():
    cfg = tiny(data="ring8", g_ema=0.9, ema_samples=True, sample_every=5)
    trainer = Trainer(cfg)
    for _ in range(10):
        trainer.step()
    run = trainer.run
    assert not torch.equal(run.ema_flat, trainer.nets.g_flat.detach())
    with torch.no_grad():
        expected = run.G_ema(trainer.fixed_z).numpy()
    assert (trainer.snapshots.latest().points == expected).all()
    state = load_checkpoint(to_bytes(trainer.state_dict()))
    again = Trainer(cfg)
    again.load_state_dict(state)
    assert torch.equal(again.run.ema_flat, run.ema_flat)
    for t in (trainer, again):
        t.step()
    assert torch.equal(again.run.ema_flat, run.ema_flat)
    off = Trainer(dataclasses.replace(cfg, g_ema=0.0))
    off.step()
    assert not torch.equal(off.run.ema_flat, off.nets.g_flat.detach())   # never updated


def test_overrides_on_resume_reach_the_optimiser():
    trainer = Trainer(tiny(data="ring8"))
    for _ in range(3):
        trainer.step()
    state = load_checkpoint(to_bytes(trainer.state_dict()))
    resumed = Trainer.from_checkpoint(state, **{"g_opt.lr": 5e-4, "d_opt.beta1": 0.3})
    assert resumed.nets.g_opt.param_groups[0]["lr"] == 5e-4
    assert resumed.nets.d_opt.param_groups[0]["betas"][0] == 0.3
    assert resumed.cfg.g_opt.lr == 5e-4


def test_budget_not_a_multiple_of_eval_every_ends_evaluated(tmp_path):
    trainer = Trainer(tiny(data="ring8", steps=25, eval_every=10, checkpoint_every=10),
                      run_dir=tmp_path)
    trainer.run_here()
    frame = trainer.log.to_frame()
    assert list(frame.dropna(subset=["q_modes"]).step) == [10, 20, 25]
    assert [p.name for p in trainer.saved] == ["step_10.safetensors", "step_20.safetensors"]
    assert trainer.status.state == "finished"


def test_rule_metrics_are_logged_under_their_own_names():
    """No central key list: whatever a rule returns becomes a column."""
    trainer = Trainer(tiny(data="ring8", rule="reinforce", **{"reinforce.cosine_every": 1}))
    trainer.step()
    assert {"adv_std", "sigma", "grad_cosine"} <= set(trainer.log.columns)


def test_step_context_gives_rules_d_logits_once_per_input():
    trainer = Trainer(tiny(data="ring8"))
    ctx = StepContext(trainer.cfg, trainer.nets, 0, 0, trainer.run.noise_gen)
    x = torch.randn(4, 2)
    assert ctx.d_logits(x) is ctx.d_logits(x)
    with torch.no_grad():
        values = train_step(trainer.nets, trainer.stream.draw(trainer.cfg), ctx)
    assert math.isfinite(values["d_loss"])


def _leave_one_out(reward: torch.Tensor) -> torch.Tensor:
    k = reward.shape[1]
    return reward - (reward.sum(1, keepdim=True) - reward) / (k - 1)


@pytest.mark.parametrize("dim", [2, 784])
def test_a_policy_s_samples_are_scored_as_d_scores_them(dim):
    # D.logits_near splits D's first layer as (W mu + b) + sigma (W eps), the second
    # product in bfloat16 on images where the CPU has it: its rounding must scale with
    # sigma, so even a small sigma keeps reinforce's advantages (x in bfloat16 would not)
    torch.manual_seed(0)
    D = MLP([dim, 128, 128, 1], tanh_out=False)
    mu, eps = torch.rand(64, dim) * 2 - 1, torch.randn(64, 8, dim)
    for sigma in (0.3, 0.01):
        x = (mu.unsqueeze(1) + sigma * eps).reshape(-1, dim)
        with torch.no_grad():
            exact, near = D(x).view(64, 8), D.logits_near(mu, eps, sigma).view(64, 8)
        if dim == 2:   # small products stay in float32
            assert torch.allclose(near, exact, atol=1e-6)
        a, b = _leave_one_out(exact).flatten(), _leave_one_out(near).flatten()
        assert torch.corrcoef(torch.stack([a, b]))[0, 1] > 0.999, sigma


def test_reinforce_scores_its_samples_through_the_split_first_layer():
    trainer = Trainer(tiny(data="ring8", rule="reinforce"))
    ctx = StepContext(trainer.cfg, trainer.nets, 0, 0, trainer.run.noise_gen)
    mu = torch.randn(8, 2)
    with torch.no_grad():
        x, extra = RULES["reinforce"].emit(mu, ctx)
        flat = extra["x"].reshape(-1, 2)
        ctx.policy_samples(flat, extra["mu"], extra["eps"], extra["sigma"])
        near = ctx.d_logits(flat)
        assert torch.allclose(near, trainer.nets.D(flat), atol=1e-6)
    with torch.enable_grad():   # a reward that needs D's gradient gets D itself
        other = flat.clone().requires_grad_(True)
        assert ctx.d_logits(other).requires_grad
