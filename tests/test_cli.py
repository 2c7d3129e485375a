"""The headless CLI, called in-process through main([...]); one real subprocess case
(Ctrl-C) checks the `python -m core` entry point and its signal handling."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import write_image_folder

from core.cli.main import main
from core.io.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def cli(capsys, *args: str, code: int = 0) -> tuple[str, str]:
    rc = main(list(args))
    out, err = capsys.readouterr()
    assert rc == code, f"exit {rc}: {err}"
    return out, err


def test_train_sample_info_on_ring8(tmp_path, capsys):
    out = tmp_path / "r"
    _, err = cli(capsys, "train", "--data", "ring8", "--rule", "bce", "--steps", "120",
                 "--sample-every", "40", "--out", str(out))
    assert "steps/s" in err and "d_loss" in err
    for name in ("metrics.csv", "samples.png", "step_120.safetensors", "config.json"):
        assert (out / name).exists(), name
    assert len((out / "metrics.csv").read_text().splitlines()) == 121
    state = load_checkpoint(out / "step_120.safetensors")
    assert state["step"] == 120 and state["config"]["data"] == "ring8"

    picture = tmp_path / "r.png"
    cli(capsys, "sample", str(out / "step_120.safetensors"), "--n", "200", "--ema",
        "--out", str(picture))
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    info = json.loads(cli(capsys, "info", str(out / "step_120.safetensors"))[0])
    assert (info["step"], info["rule"], info["data"]) == (120, "bce", "ring8")


def test_a_reader_that_stops_early_is_not_an_error(tmp_path, monkeypatch, capsys):
    """`python -m core info F | head -1`: the pipe closes under info's output; the
    command ends quietly with the shell's SIGPIPE status, not 'error: Broken pipe'."""
    import os
    import sys

    from core.cli.main import main

    cli(capsys, "train", "--data", "ring8", "--steps", "2", "--eval-every", "0",
        "--out", str(tmp_path / "r"))
    read_end, write_end = os.pipe()
    os.close(read_end)   # the reader is gone before anything is written
    with open(write_end, "w") as closed_pipe:
        monkeypatch.setattr(sys, "stdout", closed_pipe)
        code = main(["info", str(tmp_path / "r" / "step_2.safetensors")])
        monkeypatch.undo()
    assert code == 141
    assert "error" not in capsys.readouterr().err


def test_resume_continues_and_can_switch_rule_and_lr(tmp_path, capsys):
    out = tmp_path / "a"
    cli(capsys, "train", "--data", "ring8", "--steps", "30", "--out", str(out))
    cli(capsys, "train", "--data", "ring8", "--steps", "50",
        "--resume", str(out / "step_30.safetensors"),
        "--rule", "reinforce", "--lr", "5e-4", "--out", str(out))
    state = load_checkpoint(out / "step_50.safetensors")
    assert state["step"] == 50 and state["rule"] == "reinforce"
    # the new learning rate took effect in the optimisers, not only in the config
    assert state["config"]["g_opt"]["lr"] == 5e-4
    assert state["g_optimizer"]["param_groups"][0]["lr"] == 5e-4
    assert state["d_optimizer"]["param_groups"][0]["lr"] == 5e-4
    assert state["rule_start"] == 30          # reinforce's schedule starts at the switch


def test_resume_refuses_a_different_data_set_or_seed(tmp_path, capsys):
    out = tmp_path / "b"
    cli(capsys, "train", "--data", "ring8", "--steps", "5", "--out", str(out))
    _, err = cli(capsys, "train", "--data", "grid25", "--seed", "3", "--steps", "9",
                 "--resume", str(out / "step_5.safetensors"), "--out", str(out), code=2)
    assert "--data 'grid25' (the checkpoint has 'ring8')" in err and "--seed 3" in err


def test_resume_refuses_a_budget_the_checkpoint_already_reached(tmp_path, capsys):
    out = tmp_path / "b2"
    cli(capsys, "train", "--data", "ring8", "--steps", "8", "--out", str(out))
    _, err = cli(capsys, "train", "--steps", "5", "--resume", str(out / "step_8.safetensors"),
                 "--rule", "reinforce", "--out", str(out), code=2)
    assert "already at step 8: use --steps 13 to train 5 more steps" in err
    assert not (out / "step_9.safetensors").exists()


def test_rule_options_and_shared_settings_from_flags(tmp_path, capsys):
    out = tmp_path / "c"
    cli(capsys, "train", "--data", "ring8", "--rule", "reinforce", "--steps", "6",
        "--set", "reinforce.sigma_start=0.05", "--set", "reinforce.reward=d",
        "--grad-clip", "2", "--d-sees", "mean", "--out", str(out))
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["reinforce"]["sigma_start"] == 0.05 and cfg["reinforce"]["reward"] == "d"
    assert cfg["grad_clip"] == 2.0 and cfg["d_sees"] == "mean"


def test_checkpoint_every_saves_during_the_loop(tmp_path, capsys):
    out = tmp_path / "d"
    cli(capsys, "train", "--data", "ring8", "--steps", "9", "--checkpoint-every", "4",
        "--out", str(out))
    assert sorted(p.name for p in out.glob("step_*.safetensors")) == [
        "step_4.safetensors", "step_8.safetensors", "step_9.safetensors"]
    kept = tmp_path / "e"
    cli(capsys, "train", "--data", "ring8", "--steps", "9", "--checkpoint-every", "2",
        "--keep-checkpoints", "2", "--out", str(kept))
    # the two newest periodic files, and the final one
    assert sorted(p.name for p in kept.glob("step_*.safetensors")) == [
        "step_6.safetensors", "step_8.safetensors", "step_9.safetensors"]


def test_folder_data_from_flags(tmp_path, capsys):
    images = write_image_folder(tmp_path / "imgs", n=6, bad=1)
    out = tmp_path / "f"
    cli(capsys, "train", "--data", "folder", "--data-root", str(images), "--steps", "3",
        "--batch-size", "4", "--eval-every", "0", "--out", str(out))
    assert (out / "step_3.safetensors").exists()


def test_image_run_writes_a_grid(tmp_path, capsys):
    out = tmp_path / "m"
    cli(capsys, "train", "--steps", "5", "--batch-size", "16", "--eval-every", "0",
        "--out", str(out))
    from PIL import Image

    with Image.open(out / "samples.png") as img:
        assert img.size == (242, 242)   # 8 x 8 grid of 28 px + 2 px padding


@pytest.mark.parametrize("args,message", [
    (["train", "--data", "cifar", "--steps", "5", "--out", "x"], "invalid choice: 'cifar'"),
    (["train", "--data", "ring8", "--steps", "5", "--batch-size", "1", "--out", "x"],
     "batch_size = 1 is out of range"),
    (["train", "--data", "ring8", "--steps", "0", "--out", "x"], "--steps must be a positive"),
    (["train", "--data", "ring8", "--lr", "-1", "--steps", "5", "--out", "x"], "g_opt.lr = -1.0"),
    (["train", "--data", "ring8", "--steps", "5", "--set", "reinforce.sigma=1", "--out", "x"],
     "unknown config field(s): reinforce.sigma"),
    (["train", "--data", "ring8", "--steps", "5", "--set", "nonsense", "--out", "x"],
     "must look like KEY=VALUE"),
    (["train", "--steps", "abc", "--out", "x"], "invalid int value: 'abc'"),
    (["train", "--config", "/nonexistent.json", "--steps", "5", "--out", "x"], "--config"),
    (["info", "/etc/hostname"], "is not a checkpoint file"),
    (["sample", "/no/such.pt", "--out", "x.png"], "no such file"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_bad_arguments_exit_2_with_one_line(args, message, capsys):
    _, err = cli(capsys, *args, code=2)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert message in lines[0]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path, sig):
    out = tmp_path / "i"
    proc = subprocess.Popen([sys.executable, "-m", "core", "train", "--data", "ring8",
                             "--steps", "10000000", "--eval-every", "0", "--out", str(out)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 60
    while not out.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)   # the run folder appears once the handlers are installed
    time.sleep(1.0)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    saved = [p for p in os.listdir(out) if p.startswith("step_")]
    assert len(saved) == 1 and "interrupted; saved" in stdout
    assert load_checkpoint(out / saved[0])["step"] > 0
