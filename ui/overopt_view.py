"""The rlhf over-optimisation panel of the Train page.

Against sqrt(KL) to where the fine-tune started (the x axis of Gao et al.): the
reward model's score (proxy) and the gold oracle's (charts.overoptimisation_figure),
diversity and realism (charts.overopt_side_figure), and a filmstrip of the fixed-noise
samples from the start of the fine-tune to the latest evaluation, with the frame
nearest the gold peak marked as the suggested checkpoint, and that checkpoint (the
weights the run kept at its gold peak) as a download.

Everything is built when a new evaluation lands and kept in the session, so the live
view's 1 s refresh only re-sends it. The data side (which evaluations, which frames,
the peak) is pure functions, tested directly.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import streamlit as st

from core.engine.samples import SnapshotImageError, snapshot_image
from ui import charts
from ui.text import plain

FRAMES = 8           # filmstrip frames at most
PER_FRAME = 8        # fixed-z images per frame: the first row of the snapshot grid
GRID_PAD = 2         # core.engine.samples.grid_png's make_grid padding
PEAK_LABEL = "suggested checkpoint (gold peak)"
PEAK_COLOR = "#ff7f0e"
# Bordered in the peak's colour (the filmstrip frame nearest the gold peak)
_STYLE = ("<style>.st-key-overopt_peak_frame {border: 2px solid " + PEAK_COLOR +
          "; border-radius: 0.5rem; padding: 0.25rem 0.5rem}</style>")


# -- the data (pure) ---------------------------------------------------------------------
@dataclass(frozen=True)
class Frame:
    step: int
    sqrt_kl: float
    exact: bool        # an evaluation step (else interpolated between evaluations)
    suggested: bool    # the snapshot nearest the gold peak


def evaluation_table(data: dict, start: int) -> dict[int, dict[str, float]]:
    """{step: {metric: value}} of the evaluations at or after `start` (the step the
    rlhf fine-tune began), from a MetricLog.decimated dict, in step order."""
    table: dict[int, dict[str, float]] = {}
    for key, steps in data.items():
        if not key.startswith("step:"):
            continue
        name = key[len("step:"):]
        for s, v in zip(np.asarray(steps).tolist(), np.asarray(data[name]).tolist()):
            if s >= start and np.isfinite(v):
                table.setdefault(int(s), {})[name] = float(v)
    return dict(sorted(table.items()))


def gold_peak(table: dict[int, dict[str, float]]) -> int | None:
    """The evaluation step with the highest gold score (the earliest on a tie: less
    KL for the same score), or None without a gold oracle."""
    gold = {s: row["q_gold"] for s, row in table.items()
            if "q_gold" in row and "q_sqrt_kl" in row}
    return max(gold, key=gold.get) if gold else None


def kl_points(table: dict[int, dict[str, float]], start: int) -> dict[int, float]:
    """sqrt KL at each evaluation, and 0 at the start (G is its own reference there)."""
    return {start: 0.0, **{s: row["q_sqrt_kl"] for s, row in table.items()
                           if "q_sqrt_kl" in row}}


def choose_frames(snapshot_steps, table: dict[int, dict[str, float]], start: int,
                  n: int = FRAMES) -> list[Frame]:
    """Up to n snapshot steps, evenly spaced from the start of the fine-tune to the
    latest evaluation (first and last kept), each with its sqrt KL (interpolated
    between evaluations where it is not one); the one nearest the gold peak is always
    among them (in place of the nearest evenly spaced one) and marked suggested."""
    kl = kl_points(table, start)
    end = max(kl)
    steps = sorted({int(s) for s in snapshot_steps if start <= s <= end})
    if not steps or n < 1:
        return []
    index = np.unique(np.round(np.linspace(0, len(steps) - 1, min(n, len(steps))))
                      .astype(int))
    picks = [steps[i] for i in index]
    peak = gold_peak(table)
    best = None
    if peak is not None:
        best = min(steps, key=lambda s: (abs(s - peak), s))
        if best not in picks:
            # replace the nearest pick, keeping the first and the last where possible
            inner = picks[1:-1] if len(picks) > 2 else []
            if inner:
                picks.remove(min(inner, key=lambda s: abs(s - best)))
            elif len(picks) >= n:
                picks.pop()
            picks = sorted(picks + [best])
    xs, ys = zip(*sorted(kl.items()))
    return [Frame(s, float(np.interp(s, xs, ys)), s in kl, s == best) for s in picks]


def first_row_png(png: bytes, image_hw: tuple[int, int], k: int = PER_FRAME,
                  zoom: int = 3, step: int | None = None) -> bytes:
    """The first k images of a snapshot grid (core.engine.samples.grid_png), as one row,
    enlarged `zoom` times with nearest-neighbour (crisp pixels at any display size).
    The grid is checked and decoded by snapshot_image: SnapshotImageError (naming `step`)
    for a damaged or oversized one."""
    from PIL import Image

    h, w = image_hw
    with snapshot_image(png, step) as img:
        cols = max(1, min(k, (img.width - GRID_PAD) // (w + GRID_PAD)))
        row = img.crop((0, 0, GRID_PAD + cols * (w + GRID_PAD), h + 2 * GRID_PAD))
        row = row.resize((row.width * zoom, row.height * zoom), Image.NEAREST)
        buf = io.BytesIO()
        row.save(buf, format="PNG")
    return buf.getvalue()


def scatter_png(points: np.ndarray, extent, real: np.ndarray | None, size: int = 150,
                margin: float = 0.25) -> bytes:
    """A tiny picture of 2-D samples: real points grey, generated orange, on white
    (the same colours in the light and the dark theme)."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(img)
    xmin, xmax, ymin, ymax = extent
    # room around the data's square: a fine-tune can push samples past it
    mx, my = margin * (xmax - xmin), margin * (ymax - ymin)
    xmin, xmax, ymin, ymax = xmin - mx, xmax + mx, ymin - my, ymax + my

    def pixels(p: np.ndarray) -> np.ndarray:
        p = np.asarray(p, dtype=np.float64)
        px = (p[:, 0] - xmin) / (xmax - xmin) * (size - 1)
        py = (ymax - p[:, 1]) / (ymax - ymin) * (size - 1)    # y up
        inside = (px >= 0) & (px < size) & (py >= 0) & (py < size)
        return np.stack([px, py], 1)[inside]

    for pts, r, colour in ((real, 1, (170, 170, 170)), (points, 1.6, (255, 127, 14))):
        if pts is None:
            continue
        for x, y in pixels(pts):
            draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def frame_caption(frame: Frame) -> str:
    kl = f"{'' if frame.exact else '≈ '}{frame.sqrt_kl:.3g}"
    return f"step {frame.step:,} · √KL {kl}"


# -- building (once per evaluation) ------------------------------------------------------
@dataclass
class Built:
    figure: object                     # proxy and gold vs sqrt KL
    side: object | None                # diversity and realism vs sqrt KL
    table: dict
    peak: int | None
    frames: list[Frame]
    pictures: list[bytes | str]        # a PNG, or why the snapshot cannot be shown
    has_gold: bool
    start: int                         # the step the fine-tune began


def _values_at(log, name: str, steps) -> dict[int, float]:
    """A per-step column's value at each of `steps` (its row of that step)."""
    out = {}
    if name not in log.columns:
        return out
    for s in steps:
        i = log.row_of_step(s)
        if not i:
            continue
        got, cols = log.rows([name], i - 1, i)
        if len(got) and int(got[0]) == s and np.isfinite(cols[name][0]):
            out[s] = float(cols[name][0])
    return out


def _side_names(kind: str) -> list[str]:
    return [m for group in (charts.DIVERSITY, charts.REALISM) for m in group[kind]]


def build(trainer) -> Built:
    log, start = trainer.log, trainer.run.rule_start
    kind = "image" if trainer.data.is_image else "toy"
    quality = [m for m in _side_names(kind) if m.startswith(charts.QUALITY_PREFIX)]
    floors = [f for m in quality for f in charts.floors_of(m)]
    data = log.decimated(list(charts.OVEROPT) + quality + floors, charts.MAX_POINTS)
    table = evaluation_table(data, start)
    for name in _side_names(kind):
        if not name.startswith(charts.QUALITY_PREFIX):   # per-step (D(G(z))): at evaluations
            for s, v in _values_at(log, name, list(table)).items():
                table[s][name] = v
    peak = gold_peak(table)
    frames = choose_frames(trainer.snapshots.steps(), table, start)
    real = None if trainer.data.is_image else trainer.data.x[:300].float().cpu().numpy()
    pictures = []
    for frame in frames:
        snap = trainer.snapshots.at_step(frame.step)
        if snap.png is not None:
            try:   # a resumed run's grids come from its file
                pictures.append(first_row_png(snap.png, tuple(trainer.data.image_shape[1:]),
                                              step=snap.step))
            except SnapshotImageError as exc:
                pictures.append(str(exc))
        else:
            pictures.append(scatter_png(snap.points, snap.extent, real))
    return Built(charts.overoptimisation_figure({"": data}),
                 charts.overopt_side_figure(table, kind, peak), table, peak, frames,
                 pictures, any("q_gold" in row for row in table.values()), start)


def cached(trainer) -> Built:
    """The panel, rebuilt only when a new evaluation lands."""
    key = f"overopt_{trainer.run_id}"
    row = trainer.log.last_row([m for m in charts.OVEROPT if m in trainer.log.columns])
    got = st.session_state.get(key)
    if got is None or got[0] != row:
        got = (row, build(trainer))
        st.session_state[key] = got
    return got[1]


# -- drawing -------------------------------------------------------------------------------
def peak_text(built: Built) -> str:
    """Where the gold peak is, and what proxy and gold did since (in numbers)."""
    row, last = built.table[built.peak], built.table[max(built.table)]
    if built.peak == built.start:
        where = (f"Gold peak at the start of the fine-tune (step {built.peak:,}, gold score "
                 f"{row['q_gold']:.3g}): every evaluation since scored lower, so the "
                 "checkpoint it started from is the suggested one.")
    else:
        where = (f"Gold peak at step {built.peak:,} (sqrt KL {row['q_sqrt_kl']:.3g}, gold "
                 f"score {row['q_gold']:.3g}): the suggested checkpoint.")
    if built.peak == max(built.table):
        return where + " It is the latest evaluation: no peak yet, the gold score still rises."
    since = (f" Since then: proxy {row['q_rm']:.3g} → {last['q_rm']:.3g}, gold "
             f"{row['q_gold']:.3g} → {last['q_gold']:.3g}." if "q_rm" in row and "q_rm" in last
             and "q_gold" in last else "")
    if since and last["q_rm"] > row["q_rm"] and last["q_gold"] < row["q_gold"]:
        since += " The proxy rises while the gold score falls: over-optimisation."
    return where + since


def no_gold_text() -> str:
    return ("No gold oracle in this run (the preferences are a person's): the reward "
            "model's score can go on rising while the true preference falls, and without a "
            "gold oracle the peak of the true preference **cannot be known** from these "
            "charts. Judge samples from along the filmstrip in the **Feedback** page's "
            "blind test, or set the rlhf option *Gold oracle* when an oracle stands for "
            "the person.")


def filmstrip(built: Built, is_image: bool) -> None:
    st.markdown("**Fixed-noise samples along the fine-tune**",
                help="The same z in every frame (for digits: the first "
                     f"{PER_FRAME} of the grid, one column per z), from the start of the "
                     "fine-tune to the latest evaluation. √KL ≈: between two evaluations, "
                     "interpolated.")
    if not built.frames:
        st.caption("No snapshots since the fine-tune began yet.")
        return
    if is_image:
        for frame, picture in zip(built.frames, built.pictures):
            box = st.container(key="overopt_peak_frame") if frame.suggested else st.container()
            with box:
                label, image = st.columns([1, 3], vertical_alignment="center")
                label.caption(frame_caption(frame))
                if frame.suggested:
                    label.markdown(f":orange[**{PEAK_LABEL}**]")
                if isinstance(picture, str):
                    image.error(plain(picture), icon=":material/broken_image:")
                else:
                    image.image(picture, width="stretch")
    else:
        per_row = 4
        for first in range(0, len(built.frames), per_row):
            cols = st.columns(per_row)
            for col, frame, picture in zip(cols, built.frames[first:first + per_row],
                                           built.pictures[first:first + per_row]):
                box = (col.container(key="overopt_peak_frame") if frame.suggested
                       else col.container())
                box.image(picture, width="stretch")
                box.caption(frame_caption(frame))
                if frame.suggested:
                    box.caption(f":orange[**{PEAK_LABEL}**]")
        st.caption("Grey: real points · orange: samples from the fixed noise")


def peak_checkpoint(trainer, built: Built) -> None:
    """The run's weights at the gold peak (kept by core's Run.keep_if_best) as a
    checkpoint download; a run resumed past its peak no longer holds them."""
    if built.peak is None or built.peak == built.start:
        return
    if trainer.best_step == built.peak:
        from core.io.checkpoint import SUFFIX, to_bytes
        st.download_button(
            f"Download the gold-peak checkpoint (step {built.peak:,})",
            icon=":material/download:", key="overopt_peak_download", on_click="ignore",
            data=lambda: to_bytes(trainer.best_state()),
            file_name=f"{trainer.run_id}_gold_peak_step_{built.peak}{SUFFIX}",
            help="The weights, metrics and samples of the suggested checkpoint: resume or "
                 "sample it on the Checkpoints page or with python -m core train --resume")
        return
    every = trainer.cfg.checkpoint_every
    st.caption("This run no longer holds the weights of its gold peak (it was resumed "
               "after it): " + (f"it saves a checkpoint every {every:,} steps; resume the one "
                                "nearest the suggested step." if every else
                                "fine-tune again; the gold-peak checkpoint is offered here "
                                "and saved by python -m core train."))


def panel(trainer) -> None:
    """The whole panel (call where the run logs q_sqrt_kl, i.e. an rlhf fine-tune)."""
    built = cached(trainer)
    st.html(_STYLE)
    st.plotly_chart(built.figure, key="chart_overopt", width="stretch",
                    config={"displaylogo": False})
    if built.side is not None:
        st.plotly_chart(built.side, key="chart_overopt_side", width="stretch",
                        config={"displaylogo": False})
    if built.peak is not None:
        st.caption(plain(peak_text(built)))
    elif not built.has_gold:
        st.info(no_gold_text(), icon=":material/help:")
        st.page_link("views/feedback.py", label="Feedback page: blind test",
                     icon=":material/thumbs_up_down:")
    filmstrip(built, trainer.data.is_image)
    peak_checkpoint(trainer, built)
