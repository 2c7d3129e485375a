"""Config validation, checkpoint safety and validation, the metric log and snapshots."""
from __future__ import annotations

import dataclasses
import io
import json
import os
import pickle

import numpy as np
import pytest
import torch

from core.engine.config import PRESETS, ConfigError, TrainConfig, preset
from core.engine.metric_log import MetricLog, decimate
from core.engine.samples import Snapshot, SnapshotStore
from core.engine.trainer import Trainer
from core.io.checkpoint import (
    _plain,
    load_checkpoint,
    load_with_format,
    save_checkpoint,
    to_bytes,
    to_pt_bytes,
)
from core.io.schema import CheckpointError

BAD_FIELDS = [
    ("data", "cifar", "data = 'cifar' is not one of"),
    ("data_root", 5, "data_root = 5 must be a path"),
    ("image_size", 4, "image_size = 4 is out of range"),
    ("latent_dim", 0, "latent_dim = 0 is out of range"),
    ("g_hidden", (), "g_hidden = () must be a non-empty list"),
    ("d_hidden", (128, -1), "d_hidden = (128, -1) must be"),
    ("rule", "ppo", "rule = 'ppo' is not one of: bce, reinforce"),
    ("batch_size", 1, "batch_size = 1 is out of range; allowed: [2, 4096]"),
    ("batch_size", 3.5, "batch_size = 3.5 is not an integer"),
    ("d_steps", 0, "d_steps = 0 is out of range"),
    ("seed", -1, "seed = -1 is out of range"),
    ("device", "tpu", "device = 'tpu' is not one of"),
    ("steps", -5, "steps = -5 is out of range"),
    ("sample_every", 0, "sample_every = 0 is out of range"),
    ("max_snapshots", 1, "max_snapshots = 1 is out of range"),
    ("checkpoint_every", -1, "checkpoint_every = -1"),
    ("eval_every", -1, "eval_every = -1"),
    ("g_opt.lr", 0.0, "g_opt.lr = 0.0 is out of range; allowed: (0, 1]"),
    ("d_opt.lr", float("nan"), "d_opt.lr = nan is out of range"),
    ("g_opt.beta1", 1.0, "g_opt.beta1 = 1.0 is out of range"),
    ("d_opt.beta2", -0.1, "d_opt.beta2 = -0.1"),
    ("reinforce.reward", "kl", "reinforce.reward = 'kl' is not one of: log_d, d, logit"),
    ("reinforce.samples_per_z", 1, "no leave-one-out baseline"),
    ("reinforce.samples_per_z", 100, "reinforce.samples_per_z = 100 is out of range"),
    ("reinforce.sigma_start", -1.0, "reinforce.sigma_start = -1.0"),
    ("reinforce.adv_clip", 0.0, "reinforce.adv_clip = 0.0"),
    ("grad_clip", -1.0, "grad_clip = -1.0"),
    ("d_sees", "noise", "d_sees = 'noise' is not one of: sample, mean"),
    ("g_ema", 1.0, "g_ema = 1.0 is out of range"),
    ("reinforce.logit_clip", 0.0, "reinforce.logit_clip = 0.0"),
    ("reinforce.cosine_every", -2, "reinforce.cosine_every = -2"),
    ("reinforce.sigma_anneal_steps", -1, "reinforce.sigma_anneal_steps = -1"),
]


@pytest.mark.parametrize("field,value,message", BAD_FIELDS)
def test_every_invalid_field_gives_a_clear_error(field, value, message):
    with pytest.raises(ConfigError) as info:
        TrainConfig().replace(**{field: value})
    assert message in str(info.value)


def test_config_cross_field_rules():
    with pytest.raises(ConfigError, match="needs data_root"):
        TrainConfig(data="folder")
    with pytest.raises(ConfigError, match="floor must not exceed"):
        TrainConfig().replace(**{"reinforce.sigma_start": 0.1, "reinforce.sigma_end": 0.5})
    # auto values count too: the image start is 0.3, so a floor of 0.5 is refused
    with pytest.raises(ConfigError, match="sigma_end = 0.5 is above reinforce.sigma_start = 0.3"):
        TrainConfig().replace(**{"reinforce.sigma_end": 0.5})


def test_config_round_trips_and_rejects_unknown_keys():
    cfg = preset("recommended", data="ring8", seed=9)
    again = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    with pytest.raises(ConfigError, match="unknown config field.*colour"):
        TrainConfig.from_dict({**cfg.to_dict(), "colour": "red"})
    with pytest.raises(ConfigError, match="g_opt.momentum"):
        TrainConfig.from_dict({"g_opt": {"momentum": 0.9}})
    with pytest.raises(ConfigError, match="unknown config field"):
        cfg.replace(learning_rate=1.0)


def test_source_preset_is_the_source_document():
    cfg = preset("source")
    assert (cfg.latent_dim, cfg.g_hidden, cfg.d_hidden) == (100, (128, 128), (128, 128))
    assert (cfg.g_opt.lr, cfg.g_opt.beta1, cfg.g_opt.beta2) == (2e-4, 0.9, 0.999)
    assert cfg.batch_size == 64 and cfg.rule == "bce" and cfg.d_steps == 1
    assert "recommended" in PRESETS


def test_sigma_anneals_to_its_floor_and_zero_steps_means_constant():
    from core.engine.rules.reinforce import sigma_at

    opts = TrainConfig(data="ring8").replace(**{"reinforce.sigma_start": 0.2,
                                                "reinforce.sigma_end": 0.05,
                                                "reinforce.sigma_anneal_steps": 100}).reinforce
    assert sigma_at(opts, True, 0) == pytest.approx(0.2)
    assert sigma_at(opts, True, 50) == pytest.approx(0.125)
    assert sigma_at(opts, True, 10_000) == pytest.approx(0.05)
    constant = dataclasses.replace(opts, sigma_anneal_steps=0)
    assert sigma_at(constant, True, 10_000) == pytest.approx(0.2)


def test_configs_saved_with_the_old_per_rule_clip_still_load():
    old = TrainConfig(rule="reinforce").to_dict()
    del old["grad_clip"], old["d_sees"], old["g_ema"], old["ema_samples"]
    old["reinforce"]["grad_clip"] = 1.0
    assert TrainConfig.from_dict(old).grad_clip == 1.0
    old["rule"] = "bce"   # bce was never clipped
    assert TrainConfig.from_dict(old).grad_clip == 0.0


# -- checkpoints -------------------------------------------------------------------
@pytest.fixture(scope="module")
def ring_state():
    trainer = Trainer(TrainConfig(data="ring8", sample_every=2))
    for _ in range(5):
        trainer.step()
    return trainer.state_dict()


def test_checkpoint_is_a_safetensors_file(ring_state, tmp_path):
    from safetensors import safe_open

    path = save_checkpoint(ring_state, tmp_path / "step_5.safetensors")
    with safe_open(path, framework="pt") as f:   # any safetensors reader opens it
        assert "generator/layers.0.weight" in f.keys() and "sha256" in f.metadata()
    state = load_checkpoint(path)
    assert state["schema_version"] == 2 and state["step"] == 5 and state["kind"] == "run"
    assert isinstance(state["torch_version"], str)
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_old_pt_checkpoint_loads_with_weights_only(ring_state, tmp_path):
    path = tmp_path / "step_5.pt"
    path.write_bytes(to_pt_bytes(ring_state))
    raw = torch.load(path, weights_only=True)
    assert raw["schema_version"] == 1 and raw["step"] == 5 and raw["kind"] == "run"
    state, old_format = load_with_format(path)
    assert old_format and state["step"] == 5


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/gan_rl_lab_pwned",))


def test_pickled_callable_is_refused(ring_state, tmp_path):
    bad = dict(ring_state, schema_version=1, payload=Evil())
    path = tmp_path / "evil.pt"
    torch.save(bad, path)
    with pytest.raises(CheckpointError, match="refused without running them"):
        load_checkpoint(path)
    assert not os.path.exists("/tmp/gan_rl_lab_pwned")
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(pickle.dumps({"x": Evil()}))


def test_foreign_and_broken_files_get_clear_errors(ring_state, tmp_path):
    with pytest.raises(CheckpointError, match="not a checkpoint file"):
        load_checkpoint(b"hello, I am a text file")
    buf = io.BytesIO()
    torch.save({"weights": torch.zeros(3)}, buf)
    with pytest.raises(CheckpointError, match="not a GAN RL Lab checkpoint"):
        load_checkpoint(buf.getvalue())
    with pytest.raises(CheckpointError, match="schema version 99"):
        load_checkpoint(_with_version(ring_state, 99))
    with pytest.raises(CheckpointError, match="no such file"):
        load_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        load_checkpoint(to_pt_bytes(ring_state)[:500])
    with pytest.raises(CheckpointError, match="cut short"):
        load_checkpoint(to_bytes(ring_state)[:500])


def _with_version(state, version) -> bytes:
    buf = io.BytesIO()
    torch.save(_plain({**state, "schema_version": version, "kind": "run"}), buf)
    return buf.getvalue()


def test_shapes_that_do_not_match_the_config_are_named(ring_state):
    cfg = dict(ring_state["config"], g_hidden=[64, 128])
    with pytest.raises(CheckpointError, match=r"generator layers.0.weight has shape \(128, 100\)"):
        load_checkpoint(to_bytes({**ring_state, "config": cfg}))
    missing = {k: v for k, v in ring_state.items() if k != "discriminator"}
    with pytest.raises(CheckpointError, match="missing discriminator"):
        load_checkpoint(to_bytes(missing))
    with pytest.raises(CheckpointError, match="config is invalid.*batch_size"):
        load_checkpoint(to_bytes({**ring_state, "config": dict(cfg, batch_size=0)}))


def test_a_failed_write_keeps_the_previous_file(ring_state, tmp_path, monkeypatch):
    path = save_checkpoint(ring_state, tmp_path / "step.safetensors")
    good = path.read_bytes()

    def broken_replace(*_):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        save_checkpoint({**ring_state, "step": 6}, path)
    assert path.read_bytes() == good
    assert os.listdir(tmp_path) == ["step.safetensors"]


# -- metric log and snapshots -----------------------------------------------------------
def test_metric_log_columns_cursor_and_backfill():
    log = MetricLog(capacity=2)
    for step in range(1, 6):
        log.append(step, {"d_loss": float(step)})
    log.append(6, {"d_loss": 6.0, "q_modes": 8.0})
    cursor, rows = log.since(4)
    assert cursor == 6 and rows["step"].tolist() == [5, 6]
    assert np.isnan(rows["q_modes"][0]) and rows["q_modes"][1] == 8.0
    log.set_at_step(3, {"q_modes": 2.0})
    assert log.to_frame().q_modes.tolist()[2] == 2.0
    assert log.latest() == {"step": 6, "d_loss": 6.0, "q_modes": 8.0}
    assert log.to_csv().decode().splitlines()[0] == "step,d_loss,q_modes"
    restored = MetricLog.from_state(log.state())
    assert restored.to_frame().equals(log.to_frame())


def test_decimation_keeps_spikes_and_bounds_points():
    steps = np.arange(100_000)
    values = np.zeros(100_000)
    values[54_321] = 50.0      # one spike
    values[77_777] = -30.0
    out = decimate(steps, {"d_loss": values}, max_points=2000)
    assert len(out["d_loss"]) <= 2001
    assert out["d_loss"].max() == 50.0 and out["d_loss"].min() == -30.0
    assert out["d_loss"].dtype == np.float32
    assert 54_321 in out["step:d_loss"].tolist()


def test_snapshot_store_thins_evenly_and_keeps_newest():
    store = SnapshotStore(max_snapshots=5)
    for step in range(0, 1000, 100):
        store.add(Snapshot(step, png=b"x"))
    steps = store.steps()
    assert len(steps) <= 5 and steps[0] == 0 and steps[-1] == 900
    gaps = np.diff(steps[:-1])
    assert len(set(gaps.tolist())) == 1   # evenly spaced apart from the newest
    assert store.at_step(450).step <= 450


def test_loading_a_checkpoint_never_touches_the_data_root_it_names(tmp_path):
    """Validation takes the data shape from the registry: a file naming an MNIST root
    does not make torchvision create (or walk) that folder."""
    from core.io.checkpoint import load_checkpoint, to_bytes

    trainer = Trainer(TrainConfig(data="ring8", sample_every=2))
    trainer.step()
    state = trainer.state_dict()
    root = tmp_path / "not-here"
    state["config"] = {**state["config"], "data": "mnist", "data_root": str(root),
                       "latent_dim": 2}
    with pytest.raises(Exception) as info:   # shapes differ (2-D G vs MNIST), but ...
        load_checkpoint(to_bytes(state))
    assert "generator" in str(info.value)
    assert not root.exists()                  # ... nothing was created or read there


def test_a_save_removes_temp_files_that_killed_saves_left_behind(tmp_path):
    stale = tmp_path / ".step_3.safetensors.abc123.tmp"
    stale_old = tmp_path / ".step_2.pt.abc123.tmp"   # left by a version that wrote .pt
    fresh = tmp_path / ".step_4.safetensors.def456.tmp"
    for f in (stale, stale_old, fresh):
        f.write_bytes(b"half a checkpoint")
    os.utime(stale, (1, 1))                    # written long ago by a killed process
    os.utime(stale_old, (1, 1))
    trainer = Trainer(TrainConfig(data="ring8", sample_every=2))
    trainer.step()
    trainer.save_checkpoint(folder=tmp_path)
    assert not stale.exists() and not stale_old.exists() and fresh.exists()
    assert (tmp_path / "step_1.safetensors").exists()


def test_run_name_and_note_round_trip_through_a_checkpoint(tmp_path):
    trainer = Trainer(preset("recommended", data="ring8"))
    trainer.step()
    assert "notes" not in trainer.state_dict(), "no notes field until the user writes one"
    trainer.set_notes("  wide   sigma ", "[link](http://x.example)\nsecond line")
    path = trainer.save_checkpoint(tmp_path / "a.safetensors")
    state = load_checkpoint(path)
    assert state["notes"] == {"name": "wide sigma",
                              "text": "[link](http://x.example)\nsecond line"}
    resumed = Trainer.from_checkpoint(state)
    assert resumed.notes == state["notes"], "resume keeps the name and the note"
    assert resumed.state_dict()["notes"] == state["notes"], "and saves them again"


@pytest.mark.parametrize("notes,message", [
    ("a note", "notes is the text 'a note', not a dict of name and text"),
    ({"name": "x"}, "notes is a dict of 1 entries"),
    ({"name": "x", "text": "y", "extra": "z"}, "not a dict of name and text"),
    ({"name": 5, "text": ""}, "notes name is the number 5, not text"),
    ({"name": "x" * 201, "text": ""}, "notes name is 201 characters long; at most 200"),
    ({"name": "", "text": "y" * 10_001}, "notes text is 10,001 characters long"),
])
def test_a_bad_notes_field_is_refused_in_one_line(notes, message):
    trainer = Trainer(preset("recommended", data="ring8"))
    state = trainer.state_dict()
    state["notes"] = notes
    with pytest.raises(CheckpointError, match=message) as info:
        load_checkpoint(to_bytes(state))
    assert "\n" not in str(info.value)
