"""The run's progression as pictures: an animated GIF of its fixed-noise snapshots and
a large PNG of one grid.

Image runs: each snapshot's grid, upscaled nearest-neighbour (pixels stay crisp).
2-D runs: each snapshot's generated points (orange) over D's heatmap, with the real
points (dark) when given, drawn with Pillow (fast enough for 60 frames; the colours
match the dashboard's scatter). Every frame carries its step. No MP4: nothing
installed encodes video offline (Pillow writes GIF, WebP and APNG only).
"""
from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from core.engine.samples import Snapshot, SnapshotStore, snapshot_image

MIN_WIDTH = 512         # frames are upscaled to at least this many pixels wide
TOY_SIZE = 512          # side of a 2-D frame's plot square
LABEL_HEIGHT = 32       # the band above each frame that shows the step
HOLD_LAST = 4           # the last frame stays this many frame times: the loop's end shows
REAL_COLOUR = (34, 34, 34)
FAKE_COLOUR = (255, 127, 14)


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


def progression_gif(snapshots: Sequence[Snapshot], *, fps: float = 4.0,
                    real: np.ndarray | None = None, min_width: int = MIN_WIDTH) -> bytes:
    """An animated GIF, one frame per snapshot in order, looping forever; a damaged
    snapshot grid raises SnapshotImageError naming its step."""
    if not snapshots:
        raise ValueError("no snapshots yet: a run takes its first one at step 0")
    if not 0 < fps <= 50:
        raise ValueError(f"fps = {fps} is out of range; allowed: (0, 50]")
    frames = [frame(s, real, min_width) for s in snapshots]
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
