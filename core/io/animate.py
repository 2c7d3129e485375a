"""The run's progression as pictures: an animated GIF of its fixed-noise snapshots and
a large PNG of one grid.

Image runs: each snapshot's grid, upscaled nearest-neighbour (pixels stay crisp).
2-D runs: each snapshot's generated points (orange) over D's heatmap, with the real
points (dark) when given, drawn with Pillow (fast enough for 60 frames; the colours
match the dashboard's scatter). Every frame carries its step. No MP4: nothing
installed encodes video offline (Pillow writes GIF, WebP and APNG only).

A GIF's frames all sit in memory until it is encoded, and a checkpoint may hold 1,000
snapshots of grids up to 4,096 px a side (50 MB a frame): one GIF keeps at most
MAX_GIF_FRAME_BYTES of frames, taking every k-th snapshot (and always the last) when
all of them would not fit; gif_snapshots() says which, before anything is decoded.
"""
from __future__ import annotations

import io
import re
import struct
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from core.engine.samples import MAX_GRID_SIDE, Snapshot, SnapshotStore, snapshot_image

MIN_WIDTH = 512         # frames are upscaled to at least this many pixels wide
TOY_SIZE = 512          # side of a 2-D frame's plot square
LABEL_HEIGHT = 32       # the band above each frame that shows the step
HOLD_LAST = 4           # the last frame stays this many frame times: the loop's end shows
REAL_COLOUR = (34, 34, 34)
FAKE_COLOUR = (255, 127, 14)
# Decoded frames one GIF may hold (their pixels, as kept until the GIF is encoded; the
# encoder adds at most a palette byte a pixel for colour frames), counted by
# frame_bytes' upper bound: the lab's digit grids (242 px, upscaled 3x to 726 px) count
# 1.65 MB a frame, so 325 fit (as grey frames they use a third of that); a 2-D run's
# 512 px plots 0.84 MB, so 640; grids of 4,096 px a side, 50 MB, so 10.
MAX_GIF_FRAME_BYTES = 512 * 2**20


def _font(size: int = 20):
    try:
        return ImageFont.load_default(size=size)   # scalable since Pillow 10.1
    except TypeError:
        return ImageFont.load_default()


def upscale(image: Image.Image, min_width: int = MIN_WIDTH) -> Image.Image:
    """Nearest-neighbour by a whole factor, so every source pixel becomes a square."""
    factor = max(1, -(-min_width // image.width))
    return image.resize((image.width * factor, image.height * factor), Image.NEAREST)


def large_png(png: bytes, min_width: int = 1024, step: int | None = None) -> bytes:
    """A grid PNG upscaled for slides and reports (the stored one is 242 px wide);
    SnapshotImageError (naming `step`) for a damaged or oversized one."""
    big = upscale(_gray_if_gray(snapshot_image(png, step).convert("RGB")), min_width)
    buf = io.BytesIO()
    big.save(buf, format="PNG")
    return buf.getvalue()


def _labelled(picture: Image.Image, step: int) -> Image.Image:
    frame = Image.new(picture.mode, (picture.width, picture.height + LABEL_HEIGHT), "white")
    frame.paste(picture, (0, LABEL_HEIGHT))
    ImageDraw.Draw(frame).text((8, LABEL_HEIGHT // 2), f"step {step:,}", fill="black",
                               font=_font(), anchor="lm")
    return frame


def _heat_rgb(heatmap: np.ndarray, size: int) -> Image.Image:
    """D(x) in [0, 1] as the dashboard shows it: reversed RdBu at 60% over white."""
    from matplotlib import colormaps  # colormaps only: no figure, no backend needed

    rgba = colormaps["RdBu_r"](np.clip(np.asarray(heatmap, dtype=np.float32), 0.0, 1.0))
    rgb = 0.6 * rgba[..., :3] + 0.4        # opacity 0.6 over white
    # rows are y upwards; an image's rows go downwards
    img = Image.fromarray((rgb[::-1] * 255).round().astype(np.uint8), "RGB")
    return img.resize((size, size), Image.BILINEAR)


def _points_frame(snap: Snapshot, real: np.ndarray | None, size: int) -> Image.Image:
    extent = snap.extent if snap.extent is not None else _extent_of(snap.points, real)
    xmin, xmax, ymin, ymax = (float(v) for v in extent)
    img = (_heat_rgb(snap.heatmap, size) if snap.heatmap is not None
           else Image.new("RGB", (size, size), "white"))
    draw = ImageDraw.Draw(img, "RGBA")

    def dots(points: np.ndarray, colour: tuple, alpha: int) -> None:
        px = (points[:, 0] - xmin) / (xmax - xmin) * (size - 1)
        py = (ymax - points[:, 1]) / (ymax - ymin) * (size - 1)
        inside = np.isfinite(px) & np.isfinite(py)
        for x, y in zip(px[inside], py[inside]):
            draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=(*colour, alpha))

    dots(np.asarray(snap.points, dtype=np.float32), FAKE_COLOUR, 180)
    if real is not None:   # on top: the samples must not hide the targets
        dots(np.asarray(real, dtype=np.float32), REAL_COLOUR, 150)
    return img


def _extent_of(points: np.ndarray, real: np.ndarray | None) -> tuple:
    both = points if real is None else np.concatenate([points, real])
    lo, hi = float(np.nanmin(both)) - 0.5, float(np.nanmax(both)) + 0.5
    return (lo, hi, lo, hi)


def _gray_if_gray(img: Image.Image) -> Image.Image:
    """Digit grids are grey in RGB (make_grid repeats the channel): as "L" the GIF
    needs no colour quantising, several times faster and exact."""
    r, g, b = img.split()
    same = r.tobytes() == g.tobytes() == b.tobytes()
    return r if same else img


def frame(snap: Snapshot, real: np.ndarray | None = None,
          min_width: int = MIN_WIDTH) -> Image.Image:
    """One labelled frame: the upscaled grid, or the points over D's heatmap."""
    if snap.png is not None:   # checked and decoded by snapshot_image: files are untrusted
        img = snapshot_image(snap.png, snap.step)
        picture = upscale(_gray_if_gray(img.convert("RGB")), min_width)
    elif snap.points is not None:
        picture = _points_frame(snap, real, max(min_width, TOY_SIZE))
    else:
        raise ValueError(f"snapshot of step {snap.step} holds no picture")
    return _labelled(picture, snap.step)


def frame_bytes(snap: Snapshot, min_width: int = MIN_WIDTH) -> int:
    """An upper bound on the bytes of snap's labelled frame, from its PNG header alone
    (nothing is decoded): colour grids count 3 bytes a pixel, even the grey ones that
    frame() keeps as 1. A header that cannot be read counts as the largest grid (the
    frame itself then fails in snapshot_image, naming the step)."""
    if snap.png is None:
        side = max(min_width, TOY_SIZE)
        return side * (side + LABEL_HEIGHT) * 3
    head = snap.png[:26]
    width, height, colour = MAX_GRID_SIDE, MAX_GRID_SIDE, 2
    if len(head) == 26 and head[12:16] == b"IHDR":
        width, height = struct.unpack(">II", head[16:24])
        colour = head[25]
        if not (1 <= width <= MAX_GRID_SIDE and 1 <= height <= MAX_GRID_SIDE):
            width, height = MAX_GRID_SIDE, MAX_GRID_SIDE
    factor = max(1, -(-min_width // width))       # as upscale() does
    channels = 1 if colour in (0, 4) else 3       # grey (with alpha) -> "L"; else RGB
    return width * factor * (height * factor + LABEL_HEIGHT) * channels


def gif_snapshots(snapshots: Sequence[Snapshot], min_width: int = MIN_WIDTH,
                  budget: int = MAX_GIF_FRAME_BYTES) -> list[Snapshot]:
    """The snapshots one GIF shows: all of them when their frames fit in `budget` bytes
    (frame_bytes), else every k-th from the first, for the smallest k that fits, and
    always the last (the run's latest state). Raises ValueError where even the last
    snapshot's frame alone is over the budget."""
    snaps = list(snapshots)
    if not snaps:
        return []
    sizes = [frame_bytes(s, min_width) for s in snaps]
    last = len(snaps) - 1
    for k in range(1, len(snaps) + 1):
        picks = list(range(0, last, k)) + [last]
        if sum(sizes[i] for i in picks) <= budget:
            return [snaps[i] for i in picks]
    if sizes[last] <= budget:
        return [snaps[last]]
    raise ValueError(f"one frame of this run is {sizes[last] / 2**20:,.0f} MiB, over the "
                     f"{budget / 2**20:,.0f} MiB a GIF may hold; use a smaller min_width")


def progression_gif(snapshots: Sequence[Snapshot], *, fps: float = 4.0,
                    real: np.ndarray | None = None, min_width: int = MIN_WIDTH,
                    budget: int = MAX_GIF_FRAME_BYTES) -> bytes:
    """An animated GIF, one frame per snapshot in order (every k-th and the last where
    all would hold more than `budget` bytes of frames: see gif_snapshots), looping
    forever; a damaged snapshot grid raises SnapshotImageError naming its step."""
    if not snapshots:
        raise ValueError("no snapshots yet: a run takes its first one at step 0")
    if not 0 < fps <= 50:
        raise ValueError(f"fps = {fps} is out of range; allowed: (0, 50]")
    frames = [frame(s, real, min_width) for s in gif_snapshots(snapshots, min_width, budget)]
    ms = max(20, round(1000 / fps))    # GIF delays are in 10 ms units; 20 ms is the floor
    durations = [ms] * (len(frames) - 1) + [ms * HOLD_LAST]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:],
                   duration=durations, loop=0, optimize=False)
    return buf.getvalue()


# -- finding the snapshots of a saved run -----------------------------------------------
_STEP_FILE = re.compile(r"^step_(\d+)\.")


def latest_checkpoint(run_dir: str | Path) -> Path:
    """The newest step_<N>.* file of a run folder (any checkpoint format)."""
    found = [(int(m.group(1)), p) for p in Path(run_dir).glob("step_*")
             if p.is_file() and (m := _STEP_FILE.match(p.name))]
    if not found:
        raise FileNotFoundError(f"{run_dir} holds no step_<N> checkpoint files")
    return max(found)[1]


def snapshots_of(state: dict) -> list[Snapshot]:
    """The snapshots a loaded run checkpoint holds, oldest first."""

    items = state.get("snapshots") or []
    return SnapshotStore.from_state(items, max(2, len(items))).all()
