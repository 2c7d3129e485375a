"""The training engine: every rule on every data source, determinism, controls."""
from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest
import torch
from helpers import rule_changes, write_idx_mnist, write_image_folder

from core.data.datasets import load_dataset
from core.engine.config import TrainConfig
from core.engine.rules import RULES
from core.engine.trainer import Trainer

TINY = dict(g_hidden=(16,), d_hidden=(16,), latent_dim=8, batch_size=8, sample_every=2)


def tiny(**changes) -> TrainConfig:
    return TrainConfig(**TINY).replace(**changes)


@pytest.fixture(scope="module")
def data_roots(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("data")
    return {
        "mnist": str(write_idx_mnist(base / "mnist", "MNIST")),
        "fashion-mnist": str(write_idx_mnist(base / "fashion", "FashionMNIST")),
        "folder": str(write_image_folder(base / "images")),
    }


DATA = ["mnist5k", "mnist", "fashion-mnist", "folder", "ring8", "grid25"]


def params(module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1).clone() for p in module.parameters()])


@pytest.mark.parametrize("rule", list(RULES))
@pytest.mark.parametrize("data", DATA)
def test_every_rule_on_every_data_source_trains(rule, data, data_roots, tmp_path):
    cfg = tiny(data=data, data_root=data_roots.get(data, ""))
    cfg = cfg.replace(rule=rule, **{"reinforce.cosine_every": 2},
                      **rule_changes(rule, load_dataset(cfg), tmp_path))
    trainer = Trainer(cfg)
    g0, d0 = params(trainer.nets.G), params(trainer.nets.D)
    for _ in range(4):
        values = trainer.step()
    for key in ("d_loss", "g_loss", "d_real", "d_fake", "reward_mean", "g_grad_norm",
                "d_grad_norm"):
        assert math.isfinite(values[key]), (key, values)
    if rule == "reinforce":
        assert math.isfinite(values["adv_std"]) and math.isfinite(values["sigma"])
        assert math.isfinite(trainer.log.latest()["grad_cosine"])
    assert not torch.equal(params(trainer.nets.G), g0), "G did not change"
    assert not torch.equal(params(trainer.nets.D), d0), "D did not change"
    assert trainer.status.state == "idle" and trainer.step_count == 4
    assert trainer.snapshots.latest().step == 4


def test_data_sources_are_scaled_and_shaped(data_roots):
    mnist5k = load_dataset(TrainConfig())
    assert mnist5k.x.shape == (5000, 784) and mnist5k.image_shape == (1, 28, 28)
    assert mnist5k.x.min() == -1.0 and mnist5k.x.max() == 1.0
    assert torch.bincount(mnist5k.labels).tolist() == [500] * 10
    folder = load_dataset(TrainConfig(data="folder", data_root=data_roots["folder"]))
    assert len(folder) == 6 and folder.skipped == 1 and folder.x.shape[1] == 784
    ring = load_dataset(TrainConfig(data="ring8"))
    assert ring.modes.shape == (8, 2) and len(torch.unique(ring.modes, dim=0)) == 8
    assert load_dataset(TrainConfig(data="grid25")).modes.shape == (25, 2)


def test_missing_torchvision_files_say_where_to_put_them(tmp_path):
    from core.data.datasets import DataError

    with pytest.raises(DataError, match="train-images-idx3-ubyte"):
        load_dataset(TrainConfig(data="mnist", data_root=str(tmp_path / "nowhere")))


def test_empty_image_folder_is_a_clear_error(tmp_path):
    from core.data.datasets import DataError

    (tmp_path / "x.png").write_bytes(b"broken")
    with pytest.raises(DataError, match="no readable images.*1 file"):
        load_dataset(TrainConfig(data="folder", data_root=str(tmp_path)))


@pytest.mark.parametrize("tanh_out", [True, False])
def test_manual_backward_matches_autograd(tanh_out):
    from core.engine.models import MLP

    torch.manual_seed(0)
    net = MLP([5, 7, 6, 3], tanh_out=tanh_out).double()
    x = torch.randn(4, 5, dtype=torch.double, requires_grad=True)
    upstream = torch.randn(4, 3, dtype=torch.double)
    (net(x) * upstream).sum().backward()
    expected = [p.grad.clone() for p in net.parameters()] + [x.grad.clone()]
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    with torch.no_grad():
        out, acts = net.forward_cached(x.detach())
        grad_in = net.backward_manual(acts, out, upstream, input_grad=True)
    got = [p.grad for p in net.parameters()] + [grad_in]
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b)


def test_fused_adam_step_is_what_the_optimiser_step_does():
    """The engine calls Adam's fused kernel directly (core/engine/step.py): same weights,
    same state and a skipped step skipped, as torch's own opt.step() with found_inf."""
    from core.engine.config import OptimConfig
    from core.engine.models import make_adam
    from core.engine.step import fused_adam_step

    torch.manual_seed(0)
    start = torch.randn(50)
    params = [torch.nn.Parameter(start.clone()) for _ in range(2)]
    opts = [make_adam(p, OptimConfig(lr=1e-2, beta1=0.5)) for p in params]
    for i in range(6):
        grad = torch.randn(50)
        skip = torch.tensor(1.0 if i == 3 else 0.0)
        for p in params:
            p.grad = grad.clone()
        opts[0].found_inf = skip
        opts[0].step()
        fused_adam_step(opts[1], skip)
    torch.testing.assert_close(params[1], params[0], rtol=0, atol=0)
    ours, theirs = opts[1].state_dict()["state"][0], opts[0].state_dict()["state"][0]
    assert float(ours["step"]) == float(theirs["step"]) == 5.0   # the skipped one not counted
    for key in ("exp_avg", "exp_avg_sq"):
        torch.testing.assert_close(ours[key], theirs[key], rtol=0, atol=0)


def test_discriminator_learns_to_separate_on_ring8():
    # G nearly frozen, so the test isolates D's update: it must tell the ring from G's
    # initial blob within a few hundred steps (a live G would chase it, by design).
    trainer = Trainer(TrainConfig(data="ring8", seed=1).replace(**{"g_opt.lr": 1e-7}))
    for _ in range(300):
        trainer.step()
    frame = trainer.log.to_frame()
    assert frame.d_loss.iloc[:10].mean() > 1.2          # log 4 = 1.386 at chance
    assert frame.d_loss.iloc[-20:].mean() < 0.5
    with torch.no_grad():
        real = trainer.stream.x[:512]
        fake = trainer.nets.G(torch.randn(512, trainer.cfg.latent_dim))
        p_real = torch.sigmoid(trainer.nets.D(real))
        p_fake = torch.sigmoid(trainer.nets.D(fake))
    accuracy = ((p_real > 0.5).float().mean() + (p_fake < 0.5).float().mean()) / 2
    assert accuracy > 0.9


def _metrics(trainer: Trainer) -> np.ndarray:
    frame = trainer.log.to_frame().drop(columns=["steps_per_s"])
    return frame.to_numpy()


@pytest.mark.parametrize("rule", list(RULES))
def test_same_seed_gives_identical_metrics(rule, tmp_path):
    base = TrainConfig(data="mnist5k", seed=5, batch_size=16)
    base = base.replace(rule=rule, **rule_changes(rule, load_dataset(base), tmp_path))
    runs = []
    for _ in range(2):
        trainer = Trainer(base)
        for _ in range(20):
            trainer.step()
        runs.append(_metrics(trainer))
    np.testing.assert_array_equal(runs[0], runs[1])
    other = Trainer(base.replace(seed=6))
    for _ in range(20):
        other.step()
    assert not np.array_equal(runs[0], _metrics(other), equal_nan=True)


@pytest.mark.parametrize("rule", list(RULES))
def test_save_load_continue_equals_uninterrupted(rule, tmp_path):
    from core.io.checkpoint import load_checkpoint
    from core.io.schema import config_of

    cfg = TrainConfig(data="ring8", seed=3, sample_every=5)
    cfg = cfg.replace(rule=rule, **{"reinforce.cosine_every": 4},
                      **rule_changes(rule, load_dataset(cfg), tmp_path))
    straight = Trainer(cfg)
    for _ in range(30):
        straight.step()
    first = Trainer(cfg)
    for _ in range(12):
        first.step()
    path = first.save_checkpoint(tmp_path / "step_12.pt")
    state = load_checkpoint(path)
    resumed = Trainer(config_of(state))
    resumed.load_state_dict(state)
    for _ in range(18):
        resumed.step()
    np.testing.assert_array_equal(_metrics(resumed), _metrics(straight))
    for a, b in zip(resumed.nets.G.parameters(), straight.nets.G.parameters()):
        assert torch.equal(a, b)
    assert resumed.snapshots.steps() == straight.snapshots.steps()


def test_controls_start_pause_step_resume_stop_leave_no_thread():
    trainer = Trainer(TrainConfig(data="ring8"))
    trainer.start()
    deadline = time.time() + 10
    while trainer.step_count < 20 and time.time() < deadline:
        time.sleep(0.01)
    assert trainer.status.state == "running" and trainer.step_count >= 20
    with pytest.raises(RuntimeError, match="pause"):
        trainer.step_once()
    trainer.pause()
    time.sleep(0.2)
    held = trainer.step_count
    time.sleep(0.2)
    assert trainer.status.state == "paused" and trainer.step_count == held
    trainer.step_once()
    assert trainer.step_count == held + 1
    trainer.resume()
    time.sleep(0.2)
    assert trainer.step_count > held + 1 and trainer.status.state == "running"
    t0 = time.time()
    trainer.stop()
    assert time.time() - t0 < 2.0
    assert not trainer.thread_alive and trainer.status.state == "stopped"
    assert not [t for t in threading.enumerate() if t.name.startswith("trainer-")]


def test_step_budget_finishes_the_run():
    trainer = Trainer(TrainConfig(data="ring8", steps=30, sample_every=7))
    trainer.start()
    trainer._thread.join(10)
    assert trainer.status.state == "finished" and trainer.step_count == 30
    assert trainer.snapshots.latest().step == 30


def test_thread_crash_shows_in_status_and_error():
    trainer = Trainer(TrainConfig(data="ring8"))

    def explode(t):
        if t.step_count == 5:
            raise ValueError("boom in a hook")

    trainer.on_step.append(explode)
    trainer.start()
    trainer._thread.join(5)
    assert trainer.status.state == "failed"
    assert "ValueError: boom in a hook" in trainer.error
    assert "step 5" in trainer.status.message


def test_non_finite_loss_pauses_as_diverged_and_keeps_weights():
    trainer = Trainer(TrainConfig(data="ring8"))
    for _ in range(3):
        trainer.step()
    d_before = params(trainer.nets.D)
    trainer.stream.x = torch.full_like(trainer.stream.x, float("nan"))  # poisoned data -> NaN D loss
    trainer.start()
    deadline = time.time() + 5
    while trainer.status.state != "diverged" and time.time() < deadline:
        time.sleep(0.01)
    status = trainer.status
    trainer.stop()
    assert status.state == "diverged" and "diverged at step 4" in status.message
    assert torch.equal(params(trainer.nets.D), d_before)
    assert torch.isfinite(params(trainer.nets.G)).all()


def test_rule_switch_on_a_live_run_leaves_a_marker():
    trainer = Trainer(TrainConfig(data="ring8"))
    for _ in range(3):
        trainer.step()
    trainer.set_rule("reinforce")
    trainer.step()
    assert trainer.cfg.rule == "reinforce"
    assert trainer.log.events == [(3, "rule: bce -> reinforce")]
    assert math.isfinite(trainer.log.latest()["adv_std"])


def test_core_never_imports_streamlit():
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys, importlib, pkgutil, core\n"
            "for m in pkgutil.walk_packages(core.__path__, 'core.'): importlib.import_module(m.name)\n"
            "assert 'streamlit' not in sys.modules, 'core imported streamlit'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])
    for path in (Path(__file__).parents[1] / "core").rglob("*.py"):
        assert "import streamlit" not in path.read_text(), path


def test_torch_threads_come_from_the_environment(monkeypatch):
    from core.engine.config import ConfigError
    from core.engine.trainer import torch_threads

    monkeypatch.delenv("GANLAB_TORCH_THREADS", raising=False)
    assert torch_threads() == 1
    monkeypatch.setenv("GANLAB_TORCH_THREADS", "2")
    assert torch_threads() == 2
    monkeypatch.setenv("GANLAB_TORCH_THREADS", "zero")
    with pytest.raises(ConfigError, match="GANLAB_TORCH_THREADS='zero' must be an integer"):
        torch_threads()


def test_image_folder_skips_and_names_what_it_cannot_use(tmp_path):
    import os

    from core.data.datasets import load_folder

    folder = write_image_folder(tmp_path / "imgs", n=3, bad=1)
    outside = write_image_folder(tmp_path / "outside", n=1, bad=0)
    (folder / "escape.png").symlink_to(outside / "img_0.png")
    os.mkfifo(folder / "pipe.png")                       # would hang a plain read
    data = load_folder(str(folder))
    assert len(data) == 3 and data.skipped == 3
    text = " ".join(data.skipped_names)
    assert "escape.png (a link out of the folder)" in text
    assert "pipe.png (not a regular file)" in text and "broken_0.jpg" in text


def test_csv_cells_that_a_spreadsheet_would_run_as_formulas_stay_text():
    from core.engine.metric_log import MetricLog

    log = MetricLog()
    log.append(1, {'=HYPERLINK("http://x","y")': -1.5, "d_loss": 0.5})
    import csv
    import io

    header, row = list(csv.reader(io.StringIO(log.to_csv().decode())))[:2]
    formula = header.index("'=HYPERLINK(\"http://x\",\"y\")")   # text, not a formula
    assert float(row[formula]) == -1.5   # and a negative number stays a number


def test_names_made_from_values_stay_inside_their_folder_and_apart():
    from core.base.files import folder_name

    assert folder_name("bce") == "bce" and folder_name("lr=0.001,seed=2") == "lr=0.001,seed=2"
    evil = folder_name("rlhf:reward_model=../../X.pt")
    assert "/" not in evil and not evil.startswith(".") and evil != folder_name("rlhf:x")
    long_a, long_b = "k=" + "a" * 200 + "1", "k=" + "a" * 200 + "2"
    assert len(folder_name(long_a)) <= 120 and folder_name(long_a) != folder_name(long_b)
