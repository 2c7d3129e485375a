"""Progression export (core/io/animate.py): one GIF frame per snapshot, for image and 2-D
runs, through the library and the `animate` CLI."""
from __future__ import annotations

import io

import pytest
from PIL import Image

from core.cli.main import main
from core.engine.config import preset
from core.engine.trainer import Trainer
from core.io.animate import large_png, latest_checkpoint, progression_gif


def tiny_trainer(data: str, steps: int = 4, **changes) -> Trainer:
    trainer = Trainer(preset("recommended", data=data, sample_every=2, eval_every=0,
                             **changes))
    trainer.take_snapshot()   # step 0, as start() does
    for _ in range(steps):
        trainer.step()
    return trainer


def frames_of(gif: bytes) -> tuple[int, tuple]:
    with Image.open(io.BytesIO(gif)) as img:
        assert img.format == "GIF"
        return img.n_frames, img.size


@pytest.fixture(scope="module")
def mnist_run() -> Trainer:
    return tiny_trainer("mnist5k", batch_size=16)


@pytest.fixture(scope="module")
def ring_run() -> Trainer:
    return tiny_trainer("ring8")


def test_image_run_one_frame_per_snapshot_upscaled(mnist_run):
    snaps = mnist_run.snapshots.all()
    assert [s.step for s in snaps] == [0, 2, 4]
    n, (width, _) = frames_of(progression_gif(snaps, fps=8))
    assert n == len(snaps) and width >= 512
    with Image.open(io.BytesIO(large_png(snaps[-1].png))) as big, \
            Image.open(io.BytesIO(snaps[-1].png)) as small:
        assert big.width >= 1024 and big.width % small.width == 0   # whole-factor nearest


def test_2d_run_one_frame_per_snapshot(ring_run):
    snaps = ring_run.snapshots.all()
    real = ring_run.data.x[:200].numpy()
    n, (width, height) = frames_of(progression_gif(snaps, real=real))
    assert n == len(snaps) == 3 and width >= 512 and height > width   # the step band


def test_train_page_gif_is_built_from_the_run_as_it_is(mnist_run, ring_run):
    from ui.train_view import _progression  # the download button's builder

    for run in (mnist_run, ring_run):
        assert frames_of(_progression(run))[0] == len(run.snapshots.steps())


def test_no_snapshots_or_a_bad_rate_is_refused(ring_run):
    with pytest.raises(ValueError, match="no snapshots"):
        progression_gif([])
    with pytest.raises(ValueError, match="fps"):
        progression_gif(ring_run.snapshots.all(), fps=0)


def test_cli_animates_a_run_folder_or_checkpoint(ring_run, tmp_path, capsys):
    run = tmp_path / "run"
    saved = ring_run.save_checkpoint(folder=run)
    assert latest_checkpoint(run) == saved
    out = tmp_path / "gifs" / "progress.gif"
    assert main(["animate", str(run), "--out", str(out), "--fps", "2"]) == 0
    assert "3 frames" in capsys.readouterr().out
    assert frames_of(out.read_bytes())[0] == 3
    assert main(["animate", str(saved), "--out", str(out)]) == 0


def test_cli_says_how_many_frames_the_gif_holds_when_it_thins(ring_run, tmp_path, capsys,
                                                               monkeypatch):
    import core.io.animate as animate

    saved = ring_run.save_checkpoint(folder=tmp_path / "run")
    # frames so large that only every 2nd of the 3 snapshots (and the last) fit
    monkeypatch.setattr(animate, "frame_bytes", lambda *a: animate.MAX_GIF_FRAME_BYTES // 2)
    out = tmp_path / "thin.gif"
    assert main(["animate", str(saved), "--out", str(out)]) == 0
    assert "2 frames of the 3 kept snapshots" in capsys.readouterr().out
    assert frames_of(out.read_bytes())[0] == 2


def test_cli_error_is_one_line_and_checks_the_output_first(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["animate", str(empty), "--out", str(tmp_path / "p.gif")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds no step_<N> checkpoint files" in err[0]
    # the output is checked before any checkpoint is read
    assert main(["animate", str(tmp_path / "missing.pt"), "--out", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
