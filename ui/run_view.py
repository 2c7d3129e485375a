"""What the Train and Compare pages share: run buttons, messages, the live fragment.

A page's job is a Trainer or an Arena; both have the same controls and status. One
polling fragment per page (see live_fragment) re-runs every POLL_S seconds while the
job is live and calls st.rerun() once when its state changes on its own (it ended,
failed or diverged), so the buttons outside the fragment always match the state.

Every refresh is work in the server's Python, which the training thread shares: the
viewers of one run share REFRESHES_PER_S refreshes a second (with more tabs open, each
refreshes less often), so eight tabs cost the training what two do.
"""
from __future__ import annotations

import math
import threading
import time

import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx

from core.engine.metric_info import METRICS
from ui import charts, runs
from ui.text import plain

POLL_S = 1.0
REFRESHES_PER_S = 2.0          # shared by all the viewers of one run
_VIEWERS: dict[str, dict[str, float]] = {}   # job id -> session id -> last refresh
_VIEWERS_LOCK = threading.Lock()
FLASH = "flash_message"        # session key: an error to show after a callback


def flash_error(message: str) -> None:
    """Keep an error for the page to show on its next script run (show_flash): for
    callbacks, and for actions followed by st.rerun(), whose own output is lost."""
    st.session_state[FLASH] = message


def show_flash() -> None:
    message = st.session_state.pop(FLASH, None)
    if message:
        st.error(message, icon=":material/block:")


def _resume(job, registry) -> None:
    try:
        registry.resume(job)
    except runs.CapReached as exc:
        flash_error(str(exc))


def _step(job) -> None:
    try:
        job.step_once()
    except RuntimeError as exc:
        flash_error(str(exc))


def button_row(key: str, slots: int = 5) -> list:
    """A page's control buttons as one wrapping row: at 800 px five columns cut their
    labels ("Metric..."); a horizontal container moves the last ones to a second line.
    Every slot is the same container, so callers keep indexing cols[i]."""
    return [st.container(horizontal=True, key=key, gap="small")] * slots


def side_by_side(key: str, right_px: int):
    """(left, right) containers: side by side when the page is wide enough, else the
    right one wraps below the left (at 800 px a 3:2 split hid the compare table's arm
    columns). Flexbox wraps when the left's content is wider than the space left
    over (the compare legends are); charts alone would shrink instead."""
    row = st.container(horizontal=True, key=key, gap="medium")
    return row.container(width="stretch"), row.container(width=right_px)


def run_buttons(cols, job, registry, key: str, step_help: str) -> None:
    """Pause / Resume, Step and Stop in three columns; `key` prefixes widget keys."""
    state = job.status.state
    not_paused = state not in ("paused", "diverged")
    if state == "running":
        cols[0].button("Pause", key=f"{key}_pause", on_click=job.pause, width="stretch")
    else:
        cols[0].button("Resume", key=f"{key}_resume", disabled=not_paused,
                       on_click=_resume, args=(job, registry), width="stretch")
    cols[1].button("Step", key=f"{key}_step", disabled=not_paused, on_click=_step,
                   args=(job,), width="stretch", help=step_help)
    stop_button(cols[2], f"{key}_stop", job.stop, disabled=not job.status.live)


STOP_NOTE = ("Stop ends the run: its thread exits and the weights stay, to save or "
             "continue. Pause instead to resume it later.")


def stop_button(col, key: str, on_stop, *, disabled: bool, note: str = STOP_NOTE) -> None:
    """Stop behind a confirmation: unlike Pause it ends the run. The popover is
    `<key>_menu`; the confirming button inside keeps `key` (tests click it)."""
    with col.popover("Stop", icon=":material/stop_circle:", key=f"{key}_menu",
                     disabled=disabled, width="stretch",
                     help="End the run for good (Pause keeps it ready to resume)"):
        st.caption(note)
        st.button("Really stop", key=key, type="primary", on_click=on_stop,
                  disabled=disabled, width="stretch")


def fmt_time(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def state_message(job, failed_hint: str = "") -> None:
    """The job's failure, divergence or plain message under its status line."""
    s = job.status
    if s.state == "failed":
        st.error(f"{plain(s.message or job.error)}{failed_hint}", icon=":material/error:")
        if job.error_trace:
            with st.expander("Traceback"):
                st.code(job.error_trace)
    elif s.state == "diverged":
        st.warning(plain(s.message), icon=":material/warning:")
    elif s.message:
        st.caption(plain(s.message))


def fairness_caption(cfg) -> str:
    """The settings that decide what 'same treatment' means, in words."""
    clip = f"norm clipped to {cfg.grad_clip:g}" if cfg.grad_clip else "off"
    sees = ("G's mean output" if cfg.d_sees == "mean"
            else "what G emitted (for reinforce: its noisy policy samples)")
    ema = (f"the EMA ({cfg.g_ema:g}) of G's weights" if cfg.ema_samples and cfg.g_ema
           else "G's raw weights")
    r1 = f"R1 penalty {cfg.r1:g} on real data" if cfg.r1 else "no R1 penalty"
    if cfg.pac > 1:
        r1 += f" · D scores packs of {cfg.pac} samples (PacGAN)"
    rates = ("constant learning rates" if cfg.lr_schedule == "constant"
             else f"learning rates decayed ({cfg.lr_schedule}) over the budget")
    return (f"Same for every rule: G gradient clip {clip} · D trains on {sees} · {r1} · "
            f"{rates} · samples and quality metrics from {ema}")


def quality_notice(run) -> None:
    """Say so while the quality classifier is being built (first use of a data set)."""
    ev = run.quality.evaluator
    if ev is not None and not ev.ready and not ev.unavailable and not ev.error:
        st.caption(f":material/hourglass_top: Training the {run.data.name} quality classifier "
                   "(first use of this data set only; it is cached). Quality points appear "
                   "as soon as it is ready.")


def quality_cards(log) -> None:
    """The latest quality evaluation as cards (label, unit, which way is better), each
    with its change since the evaluation before, green when it moved the right way."""
    cards = []
    for name in charts.quality_columns(log.columns):
        entry = METRICS.get(name)
        extra = entry.extra if entry else {}
        if extra.get("curve") is False or extra.get("drawn_with"):
            continue
        values = log.last_logged(name, 2)
        if not values:
            continue
        floor = next((log.last_logged(m, 1) for m in METRICS.names(drawn_with=name)), [])
        value = f"{values[-1]:.3g}" + (f" (floor {floor[-1]:.3g})" if floor else "")
        change = values[-1] - values[0] if len(values) == 2 else 0.0
        delta = f"{change:+.3g}" if change else None
        cards.append((charts.metric_title(name), value, delta,
                      "inverse" if entry and entry.better == "lower" else "normal"))
    if not cards:
        return
    row = st.container(horizontal=True, key="quality_cards", gap="small")
    for label, value, delta, colour in cards:
        row.metric(label, value, delta, delta_color=colour, border=True, width="content",
                   help="The latest quality evaluation, and its change since the one before")


def quality_notes(columns, log=None) -> None:
    """What each quality metric shown measures, under the Quality charts, and the
    numbers that describe the judge rather than G (e.g. the classifier's accuracy)."""
    if log is not None:   # the last value only: not a scan of every column
        for name in charts.quality_columns(columns):
            entry = METRICS.get(name)
            value = (log.last_logged(name, 1)
                     if entry and entry.extra.get("curve") is False else [])
            if value:
                st.caption(plain(f"{entry.title}: {value[-1]:.4g}"
                                 f"{(' ' + entry.unit) if entry.unit else ''} ({entry.help})"))
    text = charts.quality_help(columns)
    if text:
        with st.expander("What the quality metrics mean"):
            st.markdown(text)


def poll_interval(job_id: str) -> float:
    """Seconds between this session's refreshes of a live job: POLL_S while few watch
    it, longer when many do (this session counts as a viewer from now on)."""
    ctx = get_script_run_ctx()
    session = ctx.session_id if ctx else ""
    now = time.monotonic()
    with _VIEWERS_LOCK:
        seen = _VIEWERS.setdefault(job_id, {})
        seen[session] = now
        for other, last in list(seen.items()):   # closed tabs stop refreshing
            if now - last > 3 * POLL_S * max(1.0, len(seen) / REFRESHES_PER_S):
                del seen[other]
        viewers = len(seen)
    return POLL_S * max(1, math.ceil(viewers / REFRESHES_PER_S))


def live_fragment(job, body) -> None:
    """Run body() in the page's one polling fragment while the job is live."""
    drawn = job.status.state      # the state the buttons outside were drawn for
    was_live = job.status.live
    every = poll_interval(job.run_id) if was_live else None

    @st.fragment(run_every=every)
    def view() -> None:
        body()
        if not was_live:
            return
        if job.status.state != drawn or poll_interval(job.run_id) != every:
            # ended (stop polling), diverged (Resume and Step) or failed: the buttons
            # outside this fragment must follow; or viewers came or went: a new pace
            st.rerun()

    view()
