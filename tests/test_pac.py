"""PacGAN packing (Lin et al. 2018), an option every rule shares: D scores packs of pac
samples. The hand-written gradients equal autograd's with packs, pac = 1 is the
plain D, bad values are named by the CLI, and a packed run saves and resumes."""
from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

from core.cli.main import main
from core.engine.arena import Arena
from core.engine.config import ConfigError, TrainConfig
from core.engine.models import MLP, PackedD, build_models, flatten_parameters
from core.engine.samples import d_heatmap
from core.engine.step import StepContext, add_r1_grad_, discriminator_step
from core.engine.trainer import Trainer
from core.engine.update_field import update_field
from core.io.checkpoint import load_checkpoint, to_bytes

TINY = dict(data="ring8", g_hidden=(16, 12), d_hidden=(16,), latent_dim=6, batch_size=8,
            eval_every=0)


def tiny(**changes) -> TrainConfig:
    return TrainConfig(**TINY).replace(**changes)


@pytest.mark.parametrize("rule", ["bce", "reinforce"])
def test_fast_path_equals_autograd_with_packs(rule):
    cfg = tiny(rule=rule, pac=2, d_steps=2, r1=0.5,
               **({"reinforce.cosine_every": 3} if rule == "reinforce" else {}))
    fast, ref = Trainer(cfg), Trainer(cfg)
    ref.run.fast = False
    assert isinstance(fast.nets.D, PackedD) and fast.nets.D.layers[0].in_features == 4
    for _ in range(3):   # step 3 includes reinforce's gradient-cosine diagnostic
        values_fast, values_ref = fast.step(), ref.step()
    torch.testing.assert_close(fast.nets.g_flat.grad, ref.nets.g_flat.grad,
                               rtol=1e-4, atol=1e-6)
    for key in values_fast.keys() - {"steps_per_s"}:
        assert values_fast[key] == pytest.approx(values_ref[key], rel=1e-4, abs=1e-6), key
    for _ in range(10):
        fast.step(), ref.step()
    torch.testing.assert_close(fast.nets.g_flat.detach(), ref.nets.g_flat.detach(),
                               rtol=1e-4, atol=1e-5)


def test_d_step_is_bce_over_packs_that_never_mix_real_and_fake():
    trainer = Trainer(tiny(pac=4, **{"d_opt.lr": 1e-9}))
    nets = trainer.nets
    real, z = trainer.stream.draw(trainer.cfg)[0]
    D = MLP([8, 16, 1], tanh_out=False)          # the packed D's MLP, fed packs by hand
    D.load_state_dict(nets.D.state_dict())
    with torch.no_grad():
        fake = nets.G(z)
    loss = (F.binary_cross_entropy_with_logits(D(real.reshape(2, 8)), torch.ones(2, 1))
            + F.binary_cross_entropy_with_logits(D(fake.reshape(2, 8)), torch.zeros(2, 1)))
    loss.backward()
    expected = torch.cat([p.grad.reshape(-1) for p in D.parameters()])
    with torch.no_grad():
        out = discriminator_step(nets, real, fake)
    torch.testing.assert_close(nets.d_flat.grad, expected, rtol=1e-5, atol=1e-6)
    assert float(out["d_loss"]) == pytest.approx(float(loss.detach()), rel=1e-5)


def test_r1_with_packs_is_the_per_pack_penalty():
    torch.manual_seed(0)
    D = PackedD([2, 8, 1], pac=2).double()
    flat = flatten_parameters(D)
    real = torch.randn(16, 2, dtype=torch.double)
    gamma = 2.0
    flat.grad.zero_()
    add_r1_grad_(type("N", (), {"D": D, "d_flat": flat}), real, gamma)
    with torch.enable_grad():   # gamma/2 E_packs ||grad of the pack's logit in the pack||^2
        packs = real.reshape(8, 4).requires_grad_(True)
        (g,) = torch.autograd.grad(MLP.forward_cached(D, packs)[0].sum(), packs, create_graph=True)
        penalty = 0.5 * gamma * g.pow(2).sum(1).mean()
        expected = torch.cat([p.reshape(-1) for p in torch.autograd.grad(
            penalty, list(D.parameters()), materialize_grads=True)])
    torch.testing.assert_close(flat.grad, expected)


def test_pac_1_is_the_plain_d():
    G, D = build_models(tiny(), 2, False)
    _, D2 = build_models(tiny(pac=1), 2, False)
    assert type(D) is MLP and D.pac == 1
    assert torch.equal(flatten_parameters(D), flatten_parameters(D2))
    x = torch.randn(7, 2)
    assert torch.equal(D.score_points(x), D(x))


def test_single_points_are_scored_as_packs_of_copies():
    D = PackedD([2, 8, 1], pac=3)
    x = torch.randn(5, 2)   # not a multiple of 3
    expected = MLP.forward_cached(D, torch.cat([x, x, x], 1))[0]
    torch.testing.assert_close(D.score_points(x), expected)
    with pytest.raises(ValueError, match="packs 3 rows"):
        D(x)
    heat = d_heatmap(D, (-1.0, 1.0, -1.0, 1.0), res=5)   # 25 grid points
    assert heat.shape == (5, 5)


def test_update_fields_draw_any_number_of_samples_with_packs():
    trainer = Trainer(tiny(pac=3, batch_size=9))
    z = torch.randn(7, 6)
    for rule in ("bce", "reinforce"):
        field, _ = update_field(trainer.nets, trainer.cfg.replace(rule=rule), z)
        assert field.pull.shape == field.log_d_grad.shape == (7, 2)


@pytest.mark.parametrize("args, message", [
    (["--pac", "3"], "pac = 3 does not divide batch_size = 256: .* multiple of 3 "
                     r"\(e.g. 255 or 258\)"),
    (["--pac", "2", "--batch-size", "255"], "pac = 2 does not divide batch_size = 255"),
    (["--pac", "9"], r"pac = 9 is out of range; allowed: \[1, 8\]"),
    (["--pac", "0"], r"pac = 0 is out of range"),
])
def test_bad_pac_is_named_by_the_cli(tmp_path, capsys, args, message):
    rc = main(["train", "--data", "ring8", "--preset", "recommended", "--steps", "2",
               *args, "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert re.search(message, err), err


def test_config_rejects_an_indivisible_batch():
    with pytest.raises(ConfigError, match="pac = 4 does not divide batch_size = 6"):
        tiny(batch_size=6, pac=4)


def test_a_packed_run_saves_and_resumes_bit_for_bit(tmp_path, capsys):
    trainer = Trainer(tiny(pac=2, r1=0.1, rule="reinforce"))
    for _ in range(3):
        trainer.step()
    resumed = Trainer.from_checkpoint(load_checkpoint(to_bytes(trainer.state_dict())))
    assert resumed.cfg.pac == 2 and isinstance(resumed.nets.D, PackedD)
    for _ in range(4):
        trainer.step(), resumed.step()
    assert torch.equal(resumed.nets.g_flat, trainer.nets.g_flat)
    assert torch.equal(resumed.nets.d_flat, trainer.nets.d_flat)
    with pytest.raises(ConfigError, match="pac = 1 cannot change"):
        Trainer.from_checkpoint(load_checkpoint(to_bytes(trainer.state_dict())), pac=1)

    out = tmp_path / "r"   # and through the CLI, with the 2-D preset's batch and R1
    assert main(["train", "--data", "ring8", "--preset", "recommended", "--pac", "2",
                 "--steps", "20", "--out", str(out)]) == 0
    assert main(["train", "--resume", str(out / "step_20.safetensors"), "--steps", "30",
                 "--out", str(out)]) == 0
    state = load_checkpoint(out / "step_30.safetensors")
    assert state["config"]["pac"] == 2 and state["step"] == 30
    capsys.readouterr()


def test_an_arena_with_packs_runs_and_shares_pac():
    arena = Arena(tiny(pac=2, steps=3), ["bce", "reinforce"])
    for _ in range(3):
        arena.step()
    assert all(arm.nets.D.pac == 2 for arm in arena.arms.values())
    assert arena.arms["bce"].take_snapshot(arena.stream.fixed_z).heatmap is not None


def test_rewards_pack_samples_of_different_z():
    """reinforce's K samples of one z sit side by side; rewards pack rows n/pac apart,
    so with pac = K the samples of a z still get rewards of their own."""
    trainer = Trainer(tiny(rule="reinforce", pac=4, **{"reinforce.samples_per_z": 4}))
    values = trainer.step()
    assert values["adv_std"] > 0
    ctx = StepContext(trainer.cfg, trainer.nets, 1, 0, torch.Generator())
    x = torch.randn(32, 2)   # (B = 8, K = 4), b-major
    packs = x.reshape(4, 8, 2).transpose(0, 1).reshape(8, 8)   # pack j: rows j, j+8, ...
    expected = MLP.forward_cached(trainer.nets.D, packs)[0]
    logits = ctx.d_logits(x)
    torch.testing.assert_close(logits[[3, 11, 19, 27]], expected[3].expand(4, 1))
