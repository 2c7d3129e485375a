"""core/jobs/backends.py backends, compare over them, and sweeps (core/jobs/sweep.py).

Tiny runs on ring8 (40 steps, quality metrics at steps 20 and 40). A seed must give
bit-identical metrics on every backend; a task that fails is retried once and then
reported while the others complete.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
import pytest

from core.cli.main import main
from core.engine.arena import ArmSpec
from core.engine.config import preset
from core.jobs.backends import FailFor, RunnerError, make_backend
from core.jobs.multi_seed import run_compare
from core.jobs.sweep import parse_grid, points_of

ARMS = [ArmSpec("bce"), ArmSpec("reinforce")]
CFG = preset("recommended", data="ring8", steps=40, eval_every=20)
SEEDS = [0, 1]


def metrics(out: Path, seeds=SEEDS) -> dict:
    """Every arm's metric CSV of every seed, without the timing column."""
    frames = {}
    for seed in seeds:
        for arm in ("bce", "reinforce"):
            frame = pd.read_csv(out / f"seed_{seed}" / arm / "metrics.csv")
            buf = io.StringIO()
            frame.drop(columns="steps_per_s").to_csv(buf, index=False)
            frames[(seed, arm)] = buf.getvalue()
    return frames


@pytest.fixture(scope="module")
def serial_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("serial")
    run_compare(CFG, ARMS, SEEDS, out, backend="serial")
    return out


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_serial_run_writes_every_seed_folder_and_the_summary(serial_run):
    for seed in SEEDS:
        folder = serial_run / f"seed_{seed}"
        assert (folder / "samples.png").read_bytes().startswith(b"\x89PNG")
        assert json.loads((folder / "hashes.json").read_text())["batches"]
        assert (folder / "arena.safetensors").stat().st_size > 1000
    summary = pd.read_csv(serial_run / "summary.csv")
    assert set(summary.n) == {2} and "q_modes" in set(summary.metric)
    frame = pd.read_csv(serial_run / "seed_0" / "bce" / "metrics.csv")
    assert frame.q_modes.notna().sum() == 2          # steps 20 and 40


def test_local_pool_is_bit_identical_to_serial_and_retries_a_raising_task(serial_run,
                                                                          tmp_path, capsys):
    # seed 1's first attempt raises in its worker; the retry completes it
    table = run_compare(CFG, ARMS, SEEDS, tmp_path, backend="local", workers=2,
                        hook=FailFor([1], attempts=[1]))
    assert table.attrs["failures"] == []
    assert metrics(tmp_path) == metrics(serial_run)
    assert (tmp_path / "summary.md").read_text().split("\n")[0] == \
        (serial_run / "summary.md").read_text().split("\n")[0]
    err = capsys.readouterr().err
    assert "seed_1 failed (attempt 1 of 2): RuntimeError: injected failure" in err


def test_ray_is_bit_identical_to_serial_and_retries_a_raising_task(serial_run, ray_cluster,
                                                                   tmp_path):
    # seed 1 raises on its first attempt (in a Ray worker); the retry completes it
    table = run_compare(CFG, ARMS, SEEDS, tmp_path, backend="ray",
                        hook=FailFor([1], attempts=[1], how="raise"))
    assert table.attrs["failures"] == []
    assert metrics(tmp_path) == metrics(serial_run)


def test_a_failing_task_is_retried_once_then_reported(tmp_path, capsys):
    # seed 1 fails twice (reported); seed 2 fails once (retried, completes)
    table = run_compare(CFG, ARMS, [0, 1, 2], tmp_path, backend="serial",
                        hook=_Fails())
    failures = table.attrs["failures"]
    assert [(f.task.seed, f.attempts) for f in failures] == [(1, 2)]
    assert "injected failure" in failures[0].error
    assert not (tmp_path / "seed_1").exists()
    assert (tmp_path / "seed_2" / "arena.safetensors").exists()
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert set(summary.n) == {2}
    md = (tmp_path / "summary.md").read_text()
    assert "2 seed(s) of 3" in md and "Missing seeds" in md and "1 (RuntimeError" in md
    err = capsys.readouterr().err
    assert "seed_2 failed (attempt 1 of 2)" in err and "retrying" in err
    assert "seed_1 FAILED after 2 attempts" in err and "[3/3]" in err and "1 failed" in err


class _Fails:
    """Seed 1 fails on both attempts, seed 2 on its first only."""

    def __call__(self, task, attempt):
        if task.seed == 1 or (task.seed == 2 and attempt == 1):
            raise RuntimeError(f"injected failure (seed {task.seed}, attempt {attempt})")


def test_backend_choices_are_checked():
    with pytest.raises(RunnerError, match="not one of"):
        make_backend("threads")
    with pytest.raises(RunnerError, match="ray backend"):
        make_backend("local", address="auto")


def test_missing_ray_names_its_requirements_file(monkeypatch, tmp_path, capsys):
    import sys
    monkeypatch.setitem(sys.modules, "ray", None)     # import ray -> ImportError
    rc = main(["compare", "--data", "ring8", "--steps", "5", "--backend", "ray",
               "--out", str(tmp_path / "c")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0
    assert "pip install -r requirements-ray.txt" in err


# -- sweeps --------------------------------------------------------------------------------
def test_grid_parsing():
    grid = parse_grid(["lr=1e-4,3e-4", "batch_size=32,64;g_ema=0"], CFG)
    assert grid == [("lr", [1e-4, 3e-4]), ("batch_size", [32, 64]), ("g_ema", [0])]
    assert len(points_of(grid)) == 4
    for bad, message in [("lr", "KEY=V1"), ("seed=1,2", "--seeds"), ("nope=1", "nope"),
                         ("batch_size=0", "batch_size"), ("lr=1,1", "repeated")]:
        with pytest.raises(ValueError, match=message):
            parse_grid([bad], CFG)


def test_sweep_cli_writes_ranked_tables_and_heatmaps(tmp_path, capsys):
    out = tmp_path / "s"
    rc = main(["sweep", "--data", "ring8", "--rules", "bce,reinforce", "--grid",
               "lr=1e-4,1e-3", "--seeds", "2", "--steps", "40", "--eval-every", "20",
               "--backend", "serial", "--out", str(out)])
    stdout, err = capsys.readouterr()
    assert rc == 0, err
    table = pd.read_csv(out / "sweep.csv")
    assert set(table.point) == {"lr=0.0001", "lr=0.001"}
    assert set(table[table.metric == "q_modes"].n) == {2}
    assert {"q_modes", "g_loss"} <= set(table.metric)
    assert len(table) == len(table.drop_duplicates(["point", "arm", "metric"]))
    md = (out / "sweep.md").read_text()
    assert "ranked by q_modes (higher is better)" in md and md in stdout + "\n"
    rows = [line for line in md.splitlines() if line.startswith("| ") and "rank" not in line]
    assert len(rows) == 4                              # 2 grid points x 2 arms
    best = table[table.metric == "q_modes"]["mean"].max()
    assert rows[0].split("|")[4].strip().startswith(f"{best:.4g}")
    for metric in ("q_modes", "q_high_quality", "q_reverse_kl"):
        assert (out / f"heatmap_{metric}.png").read_bytes().startswith(b"\x89PNG")
    assert (out / "lr=0.001" / "seed_1" / "reinforce" / "metrics.csv").exists()
    # the same seed and lr as a plain compare gives the same metrics
    cmp = tmp_path / "c"
    assert main(["compare", "--data", "ring8", "--steps", "40", "--eval-every", "20",
                 "--lr", "1e-3", "--seed", "1", "--backend", "serial", "--out", str(cmp)]) == 0
    assert ((cmp / "seed_1" / "bce" / "metrics.csv").read_text().split("\n")[1].split(",")[:9]
            == (out / "lr=0.001" / "seed_1" / "bce" / "metrics.csv").read_text()
            .split("\n")[1].split(",")[:9])


def test_sweep_falls_back_to_g_loss_without_quality_metrics(tmp_path, capsys):
    out = tmp_path / "s"
    rc = main(["sweep", "--data", "ring8", "--grid", "lr=1e-4;batch_size=32,64", "--seeds", "1",
               "--steps", "10", "--eval-every", "0", "--backend", "serial", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    md = (out / "sweep.md").read_text()
    assert "ranked by g_loss (lower is better)" in md
    assert not list(out.glob("heatmap_*.png"))
    assert (out / "lr=0.0001,batch_size=64" / "seed_0" / "arena.safetensors").exists()


@pytest.mark.parametrize("args,message", [
    (["--grid", "lr"], "--grid"),
    (["--grid", "seed=1,2"], "--seeds"),
    (["--grid", "lr=1e-3", "--address", "auto"], "--backend ray"),
    (["--grid", "lr=1e-3", "--workers", "0"], "--workers"),
    (["--grid", "lr=-1"], "lr=-1"),
])
def test_sweep_usage_errors_exit_2(args, message, tmp_path, capsys):
    rc = main(["sweep", "--data", "ring8", "--steps", "5", "--out", str(tmp_path / "s"), *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error:") and message in err and "\n" not in err


def test_an_unreachable_ray_address_fails_fast_in_one_line(monkeypatch, tmp_path, capsys):
    import socket
    import time

    from core.jobs.backends import check_reachable
    with socket.socket() as s:            # a local port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"127.0.0.1:{port}"
    with pytest.raises(RunnerError, match=f"Ray address {address}: no Ray cluster .*"
                                          "ray start --head"):
        check_reachable(address)
    with pytest.raises(RunnerError, match="HOST:PORT"):
        check_reachable("nohost")
    ray = pytest.importorskip("ray")
    monkeypatch.setattr(ray, "is_initialized", lambda: False)   # the module's Ray may run
    start = time.monotonic()
    rc = main(["compare", "--data", "ring8", "--steps", "5", "--backend", "ray",
               "--address", address, "--out", str(tmp_path / "c")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and time.monotonic() - start < 30
    assert address in err[-1] and "ray start --head" in err[-1]
