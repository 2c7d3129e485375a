"""The headless CLI, run as a real subprocess: python -m core ..."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "core", *args], cwd=ROOT, text=True,
                          capture_output=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}: {proc.stderr}")
    return proc


def test_train_sample_info_on_ring8(tmp_path):
    out = tmp_path / "r"
    proc = cli("train", "--data", "ring8", "--rule", "bce", "--steps", "120",
               "--sample-every", "40", "--out", str(out))
    assert "steps/s" in proc.stderr and "d_loss" in proc.stderr
    for name in ("metrics.csv", "samples.png", "step_120.pt", "config.json"):
        assert (out / name).exists(), name
    assert len((out / "metrics.csv").read_text().splitlines()) == 121
    state = torch.load(out / "step_120.pt", weights_only=True)
    assert state["step"] == 120 and state["config"]["data"] == "ring8"

    picture = tmp_path / "r.png"
    cli("sample", str(out / "step_120.pt"), "--n", "200", "--out", str(picture))
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    info = json.loads(cli("info", str(out / "step_120.pt")).stdout)
    assert (info["step"], info["rule"], info["data"]) == (120, "bce", "ring8")


def test_resume_continues_and_can_switch_rule(tmp_path):
    out = tmp_path / "a"
    cli("train", "--data", "ring8", "--steps", "30", "--out", str(out))
    cli("train", "--data", "ring8", "--steps", "50", "--resume", str(out / "step_30.pt"),
        "--rule", "reinforce", "--out", str(out))
    info = json.loads(cli("info", str(out / "step_50.pt")).stdout)
    assert info["step"] == 50 and info["rule"] == "reinforce"


def test_image_run_writes_a_grid(tmp_path):
    out = tmp_path / "m"
    cli("train", "--steps", "5", "--batch-size", "16", "--out", str(out))
    from PIL import Image

    with Image.open(out / "samples.png") as img:
        assert img.size == (242, 242)   # 8 x 8 grid of 28 px + 2 px padding


@pytest.mark.parametrize("args,message", [
    (["train", "--data", "cifar", "--steps", "5", "--out", "x"], "invalid choice: 'cifar'"),
    (["train", "--data", "ring8", "--steps", "5", "--batch-size", "1", "--out", "x"],
     "batch_size = 1 is out of range"),
    (["train", "--data", "ring8", "--steps", "0", "--out", "x"], "--steps must be a positive"),
    (["train", "--data", "ring8", "--lr", "-1", "--steps", "5", "--out", "x"], "g_opt.lr = -1.0"),
    (["train", "--steps", "abc", "--out", "x"], "invalid int value: 'abc'"),
    (["train", "--config", "/nonexistent.json", "--steps", "5", "--out", "x"], "--config"),
    (["info", "/etc/hostname"], "is not a PyTorch checkpoint file"),
    (["sample", "/no/such.pt", "--out", "x.png"], "no such file"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_bad_arguments_exit_2_with_one_line(args, message):
    proc = cli(*args, check=False)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert message in lines[0]


def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    out = tmp_path / "i"
    proc = subprocess.Popen([sys.executable, "-m", "core", "train", "--data", "ring8",
                             "--steps", "10000000", "--out", str(out)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not out.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)   # the run folder appears once Ctrl-C is handled
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    saved = [p for p in os.listdir(out) if p.startswith("step_")]
    assert len(saved) == 1 and "interrupted; saved" in stdout
    assert torch.load(out / saved[0], weights_only=True)["step"] > 0
