"""The Train page's run controls and its live view (status, charts, samples).

Buttons, messages and the polling fragment are shared with the Compare page
(ui/run_view.py). Run controls act through on_click callbacks, which run before the
script, so the page draws the new state in the same run; Start is a plain button
instead (see controls()).
"""
from __future__ import annotations

import time

import numpy as np
import streamlit as st

from core.engine.config import TrainConfig
from core.engine.metric_info import has_panel
from core.engine.samples import SnapshotImageError, grid_problem
from core.engine.trainer import Trainer, new_run_id
from core.io.animate import MAX_GIF_FRAME_BYTES, gif_snapshots, large_png, progression_gif
from ui import charts, live_chart, overopt_view, run_view, runs, swipe
from ui.run_view import flash_error
from ui.text import code, plain


def start(cfg: TrainConfig) -> None:
    try:
        trainer = Trainer(cfg, run_id=new_run_id(cfg.data))
        runs.registry().start(trainer)
    except runs.CapReached as exc:
        flash_error(str(exc))
        return
    except Exception as exc:  # data that cannot load, no CUDA, ...: say so, keep the form
        flash_error(f"Could not start: {exc}")
        return
    runs.attach(trainer)


def _reset(trainer: Trainer) -> None:
    # The run stays in the registry (stopped) so the Checkpoints page can still save it.
    trainer.stop()
    runs.detach()


def controls(trainer: Trainer | None, cfg: TrainConfig | None) -> None:
    cols = run_view.button_row("btn_row")
    if trainer is None:
        # A plain button, not on_click=_start with args=(cfg,): those args are bound one
        # script run earlier, so a value typed just before the click would be ignored.
        # `cfg` here is the form as this run read it.
        if cols[0].button("Start", type="primary", key="btn_start", disabled=cfg is None,
                          width="stretch"):
            start(cfg)
            st.rerun()   # draw the attached run (or the flashed error) with its buttons
        return
    run_view.run_buttons(cols, trainer, runs.registry(), "btn",
                         "One training step while paused")
    cols[3].button("Reset", key="btn_reset", on_click=_reset, args=(trainer,),
                   width="stretch", help="Stop this run and configure a new one")
    cols[4].download_button("Metrics CSV", data=trainer.log.to_csv, key="btn_csv",
                            file_name=f"{trainer.run_id}_metrics.csv", mime="text/csv",
                            on_click="ignore", width="stretch")
    if trainer.status.state in ("stopped", "finished"):
        after_the_end(trainer)


def _continue(trainer: Trainer) -> None:
    # read the box here, not via args: callback args are bound one script run earlier
    steps = int(st.session_state["btn_more_steps"])
    try:
        trainer.extend(steps)
        runs.registry().start(trainer)
    except (runs.CapReached, RuntimeError, ValueError) as exc:
        flash_error(str(exc))


def _save(trainer: Trainer) -> None:
    from ui.checkpoints import save_now
    try:
        st.session_state["train_saved"] = str(save_now(trainer))
    except Exception as exc:   # a full disk, an unwritable folder: say so
        flash_error(f"Could not save: {exc}")


def after_the_end(trainer: Trainer) -> None:
    """A stopped or finished run is not a dead end: continue it, or save it."""
    # one wrapping row: fixed columns cut "Save checkpoint" to "Sav..." at 800 px
    row = st.container(horizontal=True, vertical_alignment="bottom", key="btn_end_row")
    row.number_input("Continue for (steps)", min_value=1, value=1000, step=500,
                     key="btn_more_steps", width=200)
    row.button("Continue", key="btn_continue", type="primary", on_click=_continue,
               args=(trainer,),
               help="Train on from where the run stopped, with the same settings")
    row.button("Save checkpoint", key="btn_save", on_click=_save, args=(trainer,),
               help="Save to the Checkpoints page's folder")
    saved = st.session_state.pop("train_saved", None)
    if saved:
        st.toast(f"Saved {saved}")


# -- the live view -------------------------------------------------------------------
def _steps_per_s(trainer: Trainer) -> float:
    """Throughput since this session's previous poll: steps done / wall time. The
    engine's per-step EMA swings when one step stalls (e.g. a snapshot)."""
    s = trainer.status
    key = f"rate_{trainer.run_id}"
    now = time.monotonic()
    last = st.session_state.get(key)
    st.session_state[key] = (now, s.step)
    if s.state != "running" or last is None or now - last[0] < 0.2 or s.step < last[1]:
        return s.steps_per_s
    return (s.step - last[1]) / (now - last[0])


def status(trainer: Trainer) -> None:
    s = trainer.status
    with st.container(key="status_line"):
        rate = _steps_per_s(trainer)
        st.markdown(f"**{s.state}** · step **{s.step:,}** · {rate:,.0f} steps/s · "
                    f"elapsed {run_view.fmt_time(s.elapsed_s)} · rule **{trainer.cfg.rule}** · "
                    f"run {code(trainer.run_id)}")
        if trainer.cfg.steps:
            st.progress(min(1.0, s.step / trainer.cfg.steps),
                        text=f"{s.step:,} / {trainer.cfg.steps:,} steps")
    run_view.state_message(trainer, f"\n\nThe weights of step {s.step:,} are kept: save "
                           "them on the **Checkpoints** page and resume or fine-tune from the "
                           "file, or press **Reset** to start a new run.")
    st.caption(run_view.fairness_caption(trainer.cfg))
    if trainer.data.skipped:
        names = ", ".join(trainer.data.skipped_names[:10])
        st.caption(plain(f"{trainer.data.skipped} file(s) of the image folder were skipped: "
                         f"{names}{' ...' if trainer.data.skipped > 10 else ''}"))
    run_view.quality_notice(trainer.run)


def metric_charts(trainer: Trainer, smoothing: float) -> None:
    run_view.quality_cards(trainer.log)
    source = live_chart.Source(trainer.run_id, "", trainer.log)
    if not live_chart.metric_charts("chart_", [source], trainer.log.columns,
                                    smoothing=smoothing, events=list(trainer.log.events),
                                    group="train"):
        st.caption("Charts appear after the first steps.")
        return
    if has_panel(trainer.log.columns, "overopt"):
        overopt(trainer)
    run_view.quality_notes(trainer.log.columns, trainer.log)


def overopt(trainer: Trainer) -> None:
    """The rlhf over-optimisation panel (ui/overopt_view.py): proxy and gold, diversity
    and realism against sqrt KL, and a filmstrip; rebuilt only when a new evaluation
    lands."""
    overopt_view.panel(trainer)


def _real_points(trainer: Trainer, n: int = 1000) -> np.ndarray:
    return trainer.data.x[:n].float().cpu().numpy()


def samples(trainer: Trainer) -> None:
    steps = trainer.snapshots.steps()
    if not steps:
        st.caption("No samples yet.")
        return
    # While following, no slider is drawn: a select_slider whose options change every
    # tick re-sends its old index and jumps. Unchecking freezes the history's steps.
    follow_key, frozen_key = f"follow_{trainer.run_id}", f"steps_{trainer.run_id}"
    frozen = None
    if st.checkbox("Follow latest", value=True, key=follow_key,
                   help="Uncheck to browse the history") or len(steps) < 2:
        st.session_state.pop(frozen_key, None)
        snap = trainer.snapshots.latest()
    else:
        frozen = st.session_state.setdefault(frozen_key, steps)
        chosen = st.select_slider("Snapshot step", options=frozen, value=frozen[-1],
                                  key=f"snap_{trainer.run_id}")
        snap = trainer.snapshots.at_step(chosen)
    if snap.png is not None:
        # A resumed run's grids come from its file: checked (and decoded once) by
        # snapshot_image; a damaged one is one line, and the page goes on.
        if problem := grid_problem(snap):
            st.error(plain(problem), icon=":material/broken_image:")
        else:
            st.image(snap.png, caption=f"Fixed-noise samples at step {snap.step:,}",
                     width="stretch")
            st.download_button("Grid PNG", icon=":material/download:",
                               data=lambda: large_png(snap.png, step=snap.step),
                               key="btn_grid_png",
                               file_name=f"{trainer.run_id}_step_{snap.step}.png",
                               mime="image/png", on_click="ignore",
                               help="This grid, upscaled to 1,024 px or more")
            if frozen:
                step_swipe(trainer, snap, frozen)
    else:
        live_chart.toy_picture("chart_toy", trainer.run_id, snap, _real_points(trainer),
                               f"Real vs generated at step {snap.step:,} over D(x)")
        st.caption(charts.TOY_CAPTION)
    if problem := _gif_problems.get(trainer.run_id):
        st.error(plain(f"Progression GIF not made: {problem}"), icon=":material/broken_image:")
    st.download_button("Progression GIF", icon=":material/download:",
                       data=lambda: _progression(trainer),
                       key="btn_progress_gif", file_name=f"{trainer.run_id}_progress.gif",
                       mime="image/gif", on_click="ignore",
                       help=_gif_help(trainer.snapshots.all()))


def step_swipe(trainer: Trainer, snap, steps: list[int]) -> None:
    """While browsing the history: the slider's step (A) against another step of the
    same run (B, the newest by default) on the same fixed z, in one swipe frame."""
    # a short label: the Train page's sample column is narrow at 800 px
    if not st.checkbox("A/B swipe", key=f"swipe_on_{trainer.run_id}",
                       help="This step against another step of the run, on the same z, in "
                            "one frame with a divider to drag: left of it the slider's "
                            "step, right of it the step chosen here"):
        return
    other = st.selectbox("B (right of the divider)", steps, index=len(steps) - 1,
                         format_func=lambda s: f"step {s:,}",
                         key=f"swipe_step_{trainer.run_id}")
    b = trainer.snapshots.at_step(other)
    if b is None or b.png is None or grid_problem(b):
        st.caption("That step's grid cannot be shown.")
        return
    swipe.swipe("train_swipe", swipe.Side(f"A: step {snap.step:,}", snap.png),
                swipe.Side(f"B: step {b.step:,}", b.png))


def _gif_help(snaps: list) -> str:
    """What the GIF holds: every kept snapshot, or every k-th and the last when all of
    them would be over the GIF's frame budget (gif_snapshots reads PNG headers only)."""
    try:
        shown = gif_snapshots(snaps)
    except ValueError as exc:
        return plain(exc)
    if len(shown) == len(snaps):
        return "Every kept snapshot, one frame each, labelled with its step"
    return (f"{len(shown):,} of the {len(snaps):,} kept snapshots (evenly spaced, the latest "
            f"included), one frame each, labelled with its step: a GIF holds at most "
            f"{MAX_GIF_FRAME_BYTES // 2**20:,} MiB of frames")


# Why the last GIF of a run failed. The download builds the GIF outside the script (a
# deferred download: anything it draws is dropped, and the browser only says that the
# download failed), so it leaves the one-line reason here for the next redraw to show.
_gif_problems: dict[str, str] = {}


def _progression(trainer: Trainer) -> bytes:
    # Built only on click. snapshots.all() copies the list under the store's lock, so
    # a running run can keep adding snapshots meanwhile.
    snaps = trainer.snapshots.all()
    real = None if snaps and snaps[-1].png is not None else _real_points(trainer)
    try:
        gif = progression_gif(snaps, real=real)
    except SnapshotImageError as exc:   # a damaged grid in a resumed run's file
        _gif_problems[trainer.run_id] = str(exc)
        raise
    _gif_problems.pop(trainer.run_id, None)
    return gif


def live_view(trainer: Trainer) -> None:
    """Status, charts and samples inside the page's one polling fragment."""
    smoothing = st.slider("EMA smoothing", 0.0, 0.99, 0.9, 0.01, key="smoothing",
                          help="Raw values faint, smoothed bold. On a chart: drag to zoom "
                          "(all charts follow unless 'link x' is off), double-click to see "
                          "the whole run, click a legend entry to hide it.")

    def body() -> None:
        status(trainer)
        left, right = st.columns([2, 1])
        with left:
            metric_charts(trainer, smoothing)
        with right:
            samples(trainer)

    run_view.live_fragment(trainer, body)
