"""Update fields (core/engine/update_field.py) against autograd and reference computations,
the step-by-step copies (core/engine/step_by_step.py), and the field figure's arrows.

Statistical checks use fixed seeds (deterministic: they cannot flake) and tolerances
set from the estimator's own standard error."""
from __future__ import annotations

import copy
import hashlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core.data.datasets import load_dataset
from core.engine.arena import Arena
from core.engine.config import preset
from core.engine.rules.reinforce import sigma_at
from core.engine.run import build_nets
from core.engine.step import StepContext, draw_batch, train_step
from core.engine.step_by_step import StepByStep, rule_configs
from core.engine.update_field import clone_nets, pull_draws, update_field

SIGMA = 0.1


def cfg_for(rule: str, **changes):
    extra = {}
    if rule == "reinforce":   # a fixed sigma and (for the unbiased checks) no clipping
        extra = {"reinforce.sigma_start": SIGMA, "reinforce.sigma_anneal_steps": 0,
                 "reinforce.adv_clip": 100.0}
    return preset("recommended", data="ring8", rule=rule, g_hidden=(32, 32),
                  d_hidden=(32, 32), batch_size=64, **extra, **changes)


@pytest.fixture(scope="module")
def trained():
    """Nets after 30 bce steps: D is no longer flat, both Adams have state."""
    torch.manual_seed(0)
    cfg = cfg_for("bce")
    data = load_dataset(cfg)
    nets = build_nets(cfg, data, torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    for i in range(30):
        ctx = StepContext(cfg, nets, i, i, torch.Generator().manual_seed(1))
        train_step(nets, [draw_batch(data.x, cfg, gen)], ctx)
    z = torch.randn(24, cfg.latent_dim, generator=torch.Generator().manual_seed(5))
    return nets, data, z


def fingerprint(nets) -> str:
    h = hashlib.sha256()
    for t in [nets.g_flat, nets.d_flat, nets.g_flat.grad, nets.d_flat.grad]:
        h.update(t.detach().numpy().tobytes())
    for opt in (nets.g_opt, nets.d_opt):
        for state in opt.state_dict()["state"].values():
            for v in state.values():
                h.update(v.detach().numpy().tobytes())
    return h.hexdigest()


def test_bce_pull_is_minus_batch_times_dloss_dx(trained):
    nets, _, z = trained
    field, _ = update_field(nets, cfg_for("bce"), z)
    x = nets.G(z).detach().requires_grad_(True)
    loss = F.softplus(-nets.D(x)).mean()          # -mean log D(x), the bce loss
    (grad,) = torch.autograd.grad(loss, x)
    assert np.allclose(field.pull, -len(z) * grad.numpy(), atol=1e-6)
    assert np.allclose(field.pull, field.log_d_grad, atol=1e-6)
    assert field.sigma is None and field.agreement() == pytest.approx((1.0, 1.0))


@pytest.mark.parametrize("rule", ["bce", "reinforce"])
def test_moved_is_one_engine_g_update(trained, rule):
    """The drawn move equals what the engine's own step (its hand-written fast path) does
    to G on the same z and policy noise, with D held still (lr 0)."""
    nets, data, z = trained
    cfg = cfg_for(rule)
    field, after = update_field(nets, cfg, z, rule_step=3, seed=11)
    ref = clone_nets(nets, cfg)
    ref.d_opt.param_groups[0]["lr"] = 0.0
    ctx = StepContext(cfg, ref, 1, 3, torch.Generator().manual_seed(11))
    train_step(ref, [(data.x[:64], z)], ctx, fast=True)
    with torch.no_grad():
        expected = (ref.G(z) - nets.G(z)).numpy()
        assert np.allclose(after.G(z).numpy() - field.x, field.moved, atol=1e-6)
    assert np.allclose(field.moved, expected, atol=2e-6)
    assert np.abs(field.moved).max() > 1e-4   # it did move


def test_reinforce_pull_is_the_raw_leave_one_out_score_estimate(trained):
    """Rescaled, the rule's per-sample gradient is sum_k (r_k - mean of the others) eps_k
    / (sigma K) with r = log D: the rule's own scaling undone exactly."""
    nets, _, z = trained
    cfg = cfg_for("reinforce")
    field, _ = update_field(nets, cfg, z, seed=4)
    k = field.k
    eps = torch.randn(len(z), k, 2, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        mu = nets.G(z)
        r = -F.softplus(-nets.D((mu.unsqueeze(1) + SIGMA * eps).reshape(-1, 2))).view(-1, k)
    adv = r - (r.sum(1, keepdim=True) - r) / (k - 1)
    by_hand = (adv.unsqueeze(2) * eps).sum(1) / (SIGMA * k)
    assert field.sigma == pytest.approx(SIGMA) and k == 4
    assert np.allclose(field.pull, by_hand.numpy(), atol=1e-5)


def test_reinforce_pulls_average_to_the_smoothed_gradient(trained):
    """Many single-draw estimates average to grad_mu E[log D(mu + sigma eps)], computed
    independently by the pathwise estimator with many more draws."""
    nets, _, z = trained
    z = z[:6]
    draws = pull_draws(nets, cfg_for("reinforce"), z, 4000, seed=1)   # (4000, 6, 2)
    mean = draws.mean(0)
    se = draws.std(0) / np.sqrt(len(draws))
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        mu = nets.G(z)
    # 40,000 pathwise draws per sample: a far less noisy estimator of the same gradient
    x = (mu.unsqueeze(1) + SIGMA * torch.randn(6, 40_000, 2, generator=gen)).requires_grad_()
    (g,) = torch.autograd.grad(-F.softplus(-nets.D(x.reshape(-1, 2))).sum(), x)
    ref, ref_se = g.mean(1).numpy(), (g.std(1) / 200).numpy()
    assert se.mean() < 0.25 * np.abs(ref).mean()    # the check has power
    assert np.all(np.abs(mean - ref) < 5 * np.hypot(se, ref_se))
    # it points roughly the bce way; not exactly: D is smoothed over sigma (0.1 here)
    bce = update_field(nets, cfg_for("bce"), z)[0].pull
    cos = (mean * bce).sum(1) / np.linalg.norm(mean, axis=1) / np.linalg.norm(bce, axis=1)
    assert cos.mean() > 0.8


def test_the_nets_given_are_never_changed(trained):
    nets, data, z = trained
    before = fingerprint(nets)
    for rule in ("bce", "reinforce"):
        update_field(nets, cfg_for(rule), z)
        pull_draws(nets, cfg_for(rule), z, 3)
    configs = {r: (cfg_for(r), 0) for r in ("bce", "reinforce")}
    steps = StepByStep(nets, configs, data.x, z, seed=0)
    steps.d_step()
    steps.g_step()
    steps.fields()
    assert fingerprint(nets) == before


def test_rules_without_a_per_sample_pull_are_refused(trained):
    nets, _, z = trained
    with pytest.raises(ValueError, match="bce, reinforce"):
        update_field(nets, cfg_for("bce").replace(rule="latent"), z)


# -- step by step -----------------------------------------------------------------------
def stepper(trained) -> StepByStep:
    nets, data, z = trained
    return StepByStep(nets, {r: (cfg_for(r), 0) for r in ("bce", "reinforce")},
                      data.x, z, seed=3)


def test_both_copies_start_on_the_same_samples_and_the_same_d(trained):
    s = stepper(trained)
    fields = s.fields()
    assert np.array_equal(fields["bce"].x, fields["reinforce"].x)
    assert np.array_equal(s.heatmap("bce", (-2, 2, -2, 2)), s.heatmap("reinforce", (-2, 2, -2, 2)))
    assert not np.allclose(fields["bce"].pull, fields["reinforce"].pull)


def test_g_step_moves_each_sample_by_its_drawn_arrow(trained):
    s = stepper(trained)
    before = {r: copy.deepcopy(f) for r, f in s.fields().items()}
    heat = s.heatmap("bce", (-2, 2, -2, 2))
    s.g_step()
    after = s.fields()
    for rule, f in before.items():
        assert np.allclose(after[rule].x, f.x + f.moved, atol=1e-6)
    assert np.array_equal(s.heatmap("bce", (-2, 2, -2, 2)), heat)   # D untouched
    assert (s.d_steps, s.g_steps) == (0, 1)


def test_d_step_changes_d_only(trained):
    s = stepper(trained)
    x = s.fields()["bce"].x.copy()
    heat = s.heatmap("bce", (-2, 2, -2, 2))
    s.d_step()
    assert not np.allclose(s.heatmap("bce", (-2, 2, -2, 2)), heat)
    assert np.array_equal(s.fields()["bce"].x, x)
    assert (s.d_steps, s.g_steps) == (1, 0)


def test_a_copy_of_an_arena_arm_leaves_the_arena_alone():
    arena = Arena(cfg_for("bce", steps=0), ["bce", "reinforce:sigma_start=0.05"])
    try:
        for _ in range(5):
            arena.step()
        prints = {n: fingerprint(a.nets) for n, a in arena.arms.items()}
        s = StepByStep.from_arena(arena, "bce", n=50)
        s.d_step()
        s.g_step()
        fields = s.fields()
        assert {n: fingerprint(a.nets) for n, a in arena.arms.items()} == prints
        assert arena.step_count == 5 and s.at_step == 5 and s.label == "bce"
        assert fields["bce"].x.shape == (50, 2)
        # reinforce is drawn with the reinforce arm's options, at its point in the anneal
        opts = arena.arms["reinforce:sigma_start=0.05"].cfg.options()
        assert fields["reinforce"].sigma == pytest.approx(sigma_at(opts, True, 5 + 1))
        configs = rule_configs(arena, "bce")
        assert configs["reinforce"][0].options().sigma_start == 0.05
    finally:
        arena.stop()


def test_a_rule_no_arm_runs_takes_its_default_options():
    arena = Arena(cfg_for("bce", steps=0), ["bce", "bce"])
    try:
        cfg, rule_step, opt_state = rule_configs(arena, "bce-2")["reinforce"]
        assert cfg.rule == "reinforce" and rule_step == 0 and opt_state is None
        assert cfg.options().sigma_start == 0.0   # the default (auto), not the test's
    finally:
        arena.stop()


# -- the figure ---------------------------------------------------------------------------
def test_figure_draws_one_arrow_per_sample_at_the_shared_scale():
    from ui.gradient_figure import arrow_scale, field_figure, view_ranges

    rng = np.random.default_rng(0)
    x, vec = rng.normal(size=(10, 2)), rng.normal(size=(10, 2))
    ranges = view_ranges((-1.5, 1.5, -1.5, 1.5), [x])
    scale = arrow_scale([vec, 3 * vec], ranges[1] - ranges[0])
    fig = field_figure(rng.normal(size=(30, 2)), x, vec, np.full((8, 8), 0.5), ranges, scale,
                       title="bce")
    arrows = next(t for t in fig.data if t.name == "arrows")
    xs, ys = np.array(arrows.x, dtype=float), np.array(arrows.y, dtype=float)
    assert len(xs) == 7 * len(x)   # shaft, two head strokes, None between
    tips = np.stack([xs[1::7], ys[1::7]], 1)
    assert np.allclose(tips, x + scale * vec, atol=1e-6)
    assert np.allclose(np.stack([xs[0::7], ys[0::7]], 1), x)
    assert fig.layout.paper_bgcolor == "rgba(0,0,0,0)"    # the theme shows through
    assert np.isclose(ranges[1] - ranges[0], ranges[3] - ranges[2])
