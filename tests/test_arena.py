"""The arena is a controlled experiment: identical starts, identical batches, one rule apart."""
import hashlib
import time

import numpy as np
import pytest
import torch

import core.engine.run as run_mod
from core.engine.arena import Arena, ArmSpec, extract_arm, weights_hash
from core.engine.config import TrainConfig
from core.engine.trainer import Trainer
from core.io.checkpoint import load_checkpoint, save_checkpoint, to_pt_bytes
from core.jobs.arena_task import final_values
from core.jobs.multi_seed import summarize, wide_table

TINY = dict(data="ring8", g_hidden=(16, 16), d_hidden=(16, 16), latent_dim=4,
            batch_size=16, sample_every=5, max_snapshots=10)


def cfg(**changes) -> TrainConfig:
    return TrainConfig(**{**TINY, **changes})


def frame(arm):
    """An arm's metrics without its timing column (wall time is never identical)."""
    return arm.log.to_frame().drop(columns=["steps_per_s"])


def params(arm):
    return torch.cat([arm.nets.g_flat.detach().clone(), arm.nets.d_flat.detach().clone()])


def test_initial_weights_are_bit_identical():
    a = Arena(cfg(), ["bce", "reinforce", "reinforce:reward=d"])
    flats = [params(arm) for arm in a.arms.values()]
    for other in flats[1:]:
        assert torch.equal(flats[0], other)
    assert len(set(a.hashes()["init"].values())) == 1
    # the networks are copies, never shared tensors
    g = [arm.nets.g_flat for arm in a.arms.values()]
    assert g[0].data_ptr() != g[1].data_ptr()


def test_every_arm_receives_the_same_batches_each_step(monkeypatch):
    seen: list[tuple[str, str]] = []   # (rule, hash of real and z) per train_step call
    real_step = run_mod.train_step

    def spy(nets, batches, ctx, fast=True):
        h = hashlib.sha256()
        for real, z in batches:
            h.update(real.numpy().tobytes())
            h.update(z.numpy().tobytes())
        seen.append((ctx.cfg.rule, h.hexdigest()))
        return real_step(nets, batches, ctx, fast)

    monkeypatch.setattr(run_mod, "train_step", spy)
    a = Arena(cfg(d_steps=2), ["bce", "reinforce"])
    for _ in range(6):
        a.step()
    assert len(seen) == 12
    steps = [seen[i:i + 2] for i in range(0, 12, 2)]
    for (rule_a, ha), (rule_b, hb) in steps:
        assert (rule_a, rule_b) == ("bce", "reinforce")
        assert ha == hb
    assert len({s[0][1] for s in steps}) == 6      # and the stream moves on each step
    assert a.hashes()["batches"]


def test_two_bce_arms_produce_identical_metrics():
    a = Arena(cfg(), ["bce", "bce"])
    for _ in range(30):
        a.step()
    one, two = a.arms.values()
    assert list(a.arms) == ["bce", "bce-2"]
    pd_one, pd_two = frame(one), frame(two)
    assert pd_one.equals(pd_two)
    assert torch.equal(params(one), params(two))


def test_an_arm_is_exactly_the_run_a_trainer_makes_alone():
    c = cfg(rule="reinforce")
    a = Arena(c, ["bce", "reinforce"])
    t = Trainer(c)
    for _ in range(20):
        a.step()
        t.step()
    np.testing.assert_array_equal(frame(a.arms["reinforce"]).to_numpy(),
                                  t.log.to_frame().drop(columns=["steps_per_s"]).to_numpy())


def test_bce_and_reinforce_diverge_after_the_first_step():
    a = Arena(cfg(), ["bce", "reinforce"])
    a.step()
    bce, rf = a.arms["bce"], a.arms["reinforce"]
    assert not torch.equal(bce.nets.g_flat, rf.nets.g_flat)
    # D is trained on what G emitted: the policy's noisy samples differ from bce's mu
    assert not torch.equal(bce.nets.d_flat, rf.nets.d_flat)


def test_set_rule_mid_run_leaves_a_marker_in_that_arm_only():
    a = Arena(cfg(), ["bce", "reinforce"])
    for _ in range(3):
        a.step()
    a.set_rule("bce", "reinforce")
    assert a.arms["bce"].cfg.rule == "reinforce"
    assert a.arms["bce"].log.events == [(3, "rule: bce -> reinforce")]
    assert a.arms["reinforce"].log.events == []
    with pytest.raises(ValueError, match="not one of"):
        a.set_rule("bce", "ppo")
    a.step()


def test_thread_controls_pause_step_resume_stop():
    a = Arena(cfg(), ["bce", "reinforce"])
    a.start()
    deadline = time.time() + 20
    while a.step_count < 5 and time.time() < deadline:
        time.sleep(0.01)
    a.pause()
    time.sleep(0.2)
    assert a.status.state == "paused"
    n = a.step_count
    a.step_once()
    assert a.step_count == n + 1
    a.resume()
    time.sleep(0.1)
    a.stop()
    assert a.status.state == "stopped" and not a.thread_alive
    assert a.error is None
    lengths = {len(arm.log) for arm in a.arms.values()}
    assert len(lengths) == 1                     # lockstep: every arm has every step


def test_budget_finishes_with_snapshots():
    a = Arena(cfg(steps=12), ["bce", "reinforce"])
    a.start()
    deadline = time.time() + 20
    while a.thread_alive and time.time() < deadline:
        time.sleep(0.02)
    assert a.status.state == "finished" and a.step_count == 12
    for arm in a.arms.values():
        assert arm.snapshots.steps() == [0, 5, 10, 12]


def test_checkpoint_round_trip_and_extracted_arm_resumes(tmp_path):
    c = cfg()
    a = Arena(c, ["bce", "reinforce"])
    for _ in range(8):
        a.step()
    path = a.save_checkpoint(tmp_path / "arena.safetensors")
    state = load_checkpoint(path)
    assert state["kind"] == "arena" and set(state["arms"]) == {"bce", "reinforce"}
    # the same state in the old .pt format (what files saved before schema 2 hold)
    old = load_checkpoint(to_pt_bytes(a.state_dict(), kind="arena"))

    # the arena continues bit-for-bit after a reload, from either format
    b = Arena.from_state(state)
    c = Arena.from_state(old)
    assert b.hashes() == a.hashes() == c.hashes()
    for _ in range(4):
        a.step()
        b.step()
        c.step()
    for name in a.arms:
        assert torch.equal(params(a.arms[name]), params(b.arms[name]))
        assert torch.equal(params(a.arms[name]), params(c.arms[name]))
        assert frame(a.arms[name]).equals(frame(b.arms[name]))
        assert frame(a.arms[name]).equals(frame(c.arms[name]))

    # one arm, extracted, resumes as a single run exactly where the arena would go
    arm_path = save_checkpoint(extract_arm(state, "reinforce"), tmp_path / "rf.safetensors")
    single = load_checkpoint(arm_path)
    assert single["kind"] == "run" and single["rule"] == "reinforce"
    t = Trainer.from_checkpoint(single)
    for _ in range(4):
        t.step()
    assert torch.equal(t.nets.g_flat, b.arms["reinforce"].nets.g_flat)
    with pytest.raises(KeyError, match="no arm"):
        extract_arm(state, "ppo")


def test_arms_fork_from_a_shared_checkpoint():
    warm = Trainer(cfg())
    for _ in range(10):
        warm.step()
    state = warm.state_dict()
    a = Arena(cfg(), ["bce", "reinforce"], init_state=state)
    assert a.step_count == 10 and a.fork_step == 10
    assert set(a.hashes()["init"].values()) == {weights_hash(warm.run)}
    for arm in a.arms.values():
        assert len(arm.log) == 10                # the warm-up history comes along
    a.step()
    # "bce continued" is exactly the pretrained run going on
    warm.step()
    assert torch.equal(a.arms["bce"].nets.g_flat, warm.nets.g_flat)


def test_warmup_then_fork():
    a = Arena(cfg(steps=5), ["bce", "reinforce"], warmup_steps=6)
    assert a.warming_up and "warming up" in a.status.message
    with pytest.raises(RuntimeError, match="warming up"):
        a.state_dict()
    a.start()
    deadline = time.time() + 20
    while a.thread_alive and time.time() < deadline:
        time.sleep(0.02)
    assert a.status.state == "finished", a.status
    assert not a.warming_up and a.fork_step == 6 and a.step_count == 11
    for arm in a.arms.values():
        assert len(arm.log) == 11
        assert any("fork" in text for _, text in arm.log.events)
    assert len(set(a.hashes()["init"].values())) == 1
    assert a.state_dict()["fork_step"] == 6


def test_arm_options_and_bad_arms():
    a = Arena(cfg(), ["reinforce", "reinforce:sigma_start=0.05:reward=d"])
    rf2 = a.arms["reinforce:sigma_start=0.05:reward=d"]
    assert rf2.cfg.reinforce.sigma_start == 0.05 and rf2.cfg.reinforce.reward == "d"
    assert ArmSpec.parse("bce").name == ""
    with pytest.raises(ValueError, match="at least two"):
        Arena(cfg(), ["bce"])
    with pytest.raises(ValueError, match="not one of"):
        Arena(cfg(), ["bce", "ppo"])
    with pytest.raises(ValueError, match="key=value"):
        ArmSpec.parse("reinforce:sigma")


def test_summary_mean_and_standard_error():
    a = Arena(cfg(), ["bce", "reinforce"])
    for _ in range(5):
        a.step()
    finals = {n: [final_values(arm.log)] * 3 for n, arm in a.arms.items()}
    finals["bce"] = [{"d_loss": 1.0}, {"d_loss": 2.0}, {"d_loss": 3.0}]
    s = summarize(finals)
    row = s[(s.arm == "bce") & (s.metric == "d_loss")].iloc[0]
    assert row["mean"] == 2.0 and row["se"] == pytest.approx(1 / np.sqrt(3)) and row["n"] == 3
    assert "±" in wide_table(s).loc["bce", "d_loss"]


def test_a_new_reward_model_goes_to_every_preference_arm_or_to_none(tmp_path):
    """The next feedback round: rlhf and latent take the new model and go on from where
    they are; a model of another data set is refused and changes no arm."""
    from helpers import rule_changes

    from core.data.datasets import load_by_name

    ring = load_by_name("ring8")
    first = rule_changes("rlhf", ring, tmp_path / "a")["rlhf.reward_model"]
    second = rule_changes("rlhf", ring, tmp_path / "b")["rlhf.reward_model"]
    other = rule_changes("rlhf", load_by_name("grid25"), tmp_path)["rlhf.reward_model"]
    config = TrainConfig(data="ring8", latent_dim=2, batch_size=8, eval_every=0, steps=3
                         ).replace(**{"rlhf.reward_model": first, "latent.reward_model": first})
    arena = Arena(config, ["bce", "rlhf", "latent"])
    for _ in range(3):
        arena.step()
    with pytest.raises(Exception, match="grid25"):
        arena.use_reward_model(other)
    assert {a.cfg.options().reward_model for a in list(arena.arms.values())[1:]} == {first}
    assert arena.use_reward_model(second) == ["rlhf", "latent"]
    assert arena.arms["latent"].cfg.latent.reward_model == second
    assert arena.arms["rlhf"].log.events[-1] == (3, "reward model: rm-ring8.pt")
    arena.extend(5)
    assert arena.end_step == 8
