"""Checkpoint files for the Checkpoints page: list, save, download, act on one.

Files live in checkpoints/<run-id>/step_<N>.safetensors (or .pt, the old format;
GANLAB_CHECKPOINT_DIR overrides the root, e.g. for tests). Every load goes through
core.io.checkpoint.load_with_format, which never unpickles code and validates; the table
reads only summaries, cached per file version.
"""
from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pandas as pd
import streamlit as st
import torch

from core.engine.arena import extract_arm
from core.engine.rules import RULES
from core.engine.samples import SnapshotImageError, SnapshotStore, snapshot_image
from core.engine.trainer import Trainer, new_run_id
from core.io.checkpoint import (
    CHECKPOINT_SUFFIXES,
    SUFFIX,
    checkpoint_summary,
    load_with_format,
    old_format_note,
    save_checkpoint,
    to_bytes,
)
from core.io.format import looks_like_pickle, read_meta
from core.io.saved_points import dataset_of
from core.io.schema import CheckpointError
from ui import charts, runs, widgets
from ui.text import code, plain


def checkpoint_dir() -> Path:
    return Path(os.environ.get("GANLAB_CHECKPOINT_DIR", "checkpoints"))


def checkpoint_files() -> list[Path]:
    files = [p for suffix in CHECKPOINT_SUFFIXES
             for p in checkpoint_dir().glob(f"*/step_*{suffix}")]
    return sorted(files, key=lambda p: p.stat().st_mtime, reverse=True)


@st.cache_data(show_spinner=False, max_entries=500)
def _summary(path: str, mtime_ns: int, size: int) -> dict:
    """Run, step, rule and data of one file; mtime and size key the cache."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
        if looks_like_pickle(head):   # the old format
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        else:   # the header's metadata alone: no tensor is read
            state = read_meta(Path(path).read_bytes()).get("state", {})
        info = checkpoint_summary(state)
        return {k: info.get(k) for k in ("run_id", "step", "rule", "data")}
    except Exception as exc:   # listed anyway, so the user sees the broken file
        return {"run_id": None, "step": None, "rule": f"unreadable: {type(exc).__name__}",
                "data": None}


def table(files: list[Path]) -> pd.DataFrame:
    rows = []
    for path in files:
        stat = path.stat()
        info = _summary(str(path), stat.st_mtime_ns, stat.st_size)
        rows.append({
            "run": info["run_id"] or path.parent.name,
            "step": info["step"], "rule": info["rule"], "data": info["data"],
            "size (MB)": round(stat.st_size / 1e6, 2),
            "time": dt.datetime.fromtimestamp(stat.st_mtime).strftime("%Y-%m-%d %H:%M:%S"),
            "file": str(path.relative_to(checkpoint_dir())),
        })
    return pd.DataFrame(rows, columns=["run", "step", "rule", "data", "size (MB)", "time",
                                       "file"])


def save_now(run) -> Path:
    """Save a Trainer, or an Arena (one file with every arm, as the Compare page does)."""
    return run.save_checkpoint(folder=checkpoint_dir() / run.run_id)


def run_card(run, what: str, warming_up: bool = False) -> None:
    """One run of this server (a Trainer or an Arena) with Save now and Download;
    `what` describes it after its id and state. An arena cannot be saved while it
    warms up (its arms do not exist yet)."""
    s = run.status
    with st.container(border=True, key=f"run_{run.run_id}"):
        st.markdown(f"{code(run.run_id)} · **{s.state}** · step {s.step:,} · {what}")
        # a row that wraps: fixed columns cut the labels ("Sav...") at 800 px
        row = st.container(horizontal=True, key=f"run_buttons_{run.run_id}")
        if row.button("Save now", key=f"save_{run.run_id}",
                      disabled=warming_up, help="Save after the bce warm-up" if warming_up
                      else None):
            st.toast(f"Saved {plain(save_now(run))}")
            st.rerun()   # the table below lists the new file
        row.download_button(
            "Download", data=live_state_bytes(run), key=f"dl_{run.run_id}",
            file_name=download_name(run.run_id, s.step),
            disabled=s.state == "running" or warming_up, on_click="ignore",
            help="Pause the run first (or use Save now), so the file is the step it names")
        for name in getattr(run, "arms", {}) if not warming_up else ():
            if row.button(f"Save {name} as a run", key=f"save_arm_{run.run_id}_{name}",
                          help="This arm alone, as a single-run checkpoint: resume it, "
                               "fine-tune it or judge it like any run"):
                st.toast(f"Saved {plain(save_arm(run, name))}")
                st.rerun()


def save_arm(arena, name: str) -> Path:
    """One arm of a comparison as a run checkpoint, in its own folder."""
    state = arena.arm_state(name)
    folder = checkpoint_dir() / f"{arena.run_id}-{name}"
    return save_checkpoint(state, folder / f"step_{state['step']}{SUFFIX}")


def download_name(run_id: str, step: int, suffix: str = SUFFIX) -> str:
    return f"{run_id}_step_{step}{suffix}"


def live_state_bytes(run):
    """A callable for st.download_button: serialised on click, in another thread;
    state_dict() takes the run's lock, so the weights are read consistently."""
    return lambda: to_bytes(run.state_dict())


def load(source) -> tuple[dict | None, str | None]:
    """(state, None) or (None, clear error message)."""
    state, error, _ = load_noted(source)
    return state, error


def load_noted(source, name: str = "") -> tuple[dict | None, str | None, str | None]:
    """(state, None, note) or (None, clear error message, None); the note says that an
    old .pt file was converted (None for the current format)."""
    try:
        state, old_format = load_with_format(source)
    except CheckpointError as exc:
        return None, str(exc), None
    return state, None, old_format_note(name or str(source)) if old_format else None


def load_file(path: str, mtime_ns: int) -> tuple[dict | None, str | None]:
    """A saved file, loaded once per version (the page reruns often)."""
    state, error, _ = load_file_noted(path, mtime_ns)
    return state, error


@st.cache_resource(show_spinner=False, max_entries=4)
def load_file_noted(path: str, mtime_ns: int) -> tuple[dict | None, str | None, str | None]:
    """load_file plus the note that an old .pt file was converted (None otherwise)."""
    return load_noted(path)


def load_upload(upload) -> tuple[dict | None, str | None]:
    """An uploaded file, validated once per upload and kept in the session."""
    cached = st.session_state.get("upload_state")
    if cached is None or cached[0] != upload.file_id:
        cached = (upload.file_id, *load_noted(upload.getvalue(), upload.name))
        st.session_state["upload_state"] = cached
    return cached[1], cached[2]


def upload_note(upload) -> str | None:
    """The old-format note of the upload load_upload last read (None if current)."""
    cached = st.session_state.get("upload_state")
    return cached[3] if cached is not None and cached[0] == upload.file_id else None


# -- actions on one checkpoint ---------------------------------------------------------
def _launch(state: dict, rule: str | None, prefix: str, options: dict | None = None) -> None:
    try:
        trainer = Trainer.from_checkpoint(state, rule=rule, run_id=new_run_id(prefix),
                                          **(options or {}))
        runs.registry().start(trainer)
    except runs.CapReached as exc:
        st.error(str(exc), icon=":material/block:")
        return
    except Exception as exc:
        st.error(f"Could not start from this checkpoint: {plain(exc)}", icon=":material/error:")
        return
    runs.attach(trainer)
    st.switch_page("views/train.py", query_params={runs.QUERY_KEY: trainer.run_id})


def choose_arm(state: dict, key: str) -> dict:
    """A comparison (arena) checkpoint holds one run per arm: the user picks one, and
    the actions below work on it as a single run."""
    arms = state["arms"]
    st.caption(f"Comparison checkpoint {code(state.get('run_id'))} with {len(arms)} arms: "
               "resume, fine-tune or sample one of them as a single run.")
    name = st.selectbox("Arm", list(arms), key=f"{key}_arm",
                        format_func=lambda n: f"{n} (rule {arms[n].get('rule')})")
    return extract_arm(state, name)


def actions(state: dict, key: str, download=None) -> None:
    """Resume, fine-tune with another rule, or show the samples of a checkpoint (of
    one arm, for a comparison checkpoint); download(row), if given, adds the file's
    download button to the same row."""
    if state.get("kind") == "arena":
        state = choose_arm(state, key)
    info = checkpoint_summary(state)
    st.caption(f"run {code(info['run_id'])} · step {info['step']:,} · rule "
               f"{plain(info['rule'])} · data {plain(info['data'])}")
    # one row that wraps: four fixed columns cut the labels at 800 px ("Resume tr...")
    row = st.container(horizontal=True, vertical_alignment="bottom", key=f"{key}_actions")
    if row.button("Resume training", key=f"{key}_resume", type="primary"):
        _launch(state, None, "resume")
    others = [r for r in RULES if r != info["rule"]] or list(RULES)
    rule = row.selectbox("Fine-tune with rule", others, key=f"{key}_rule", width=200)
    finetune = row.button("Fine-tune", key=f"{key}_finetune",
                          help="Continue from these weights with another update rule (RL "
                               "fine-tuning: pretrain with bce, continue with reinforce or "
                               "rlhf)")
    samples = row.toggle("Show samples", key=f"{key}_samples", width="content")
    if download is not None:
        download(row)
    options = widgets.rule_options(f"{key}_opt_", [rule], "{} options for the fine-tune")
    if finetune:
        _launch(state, rule, f"finetune-{rule}", options)
    if samples:
        show_samples(state, key)


def show_samples(state: dict, key: str) -> None:
    snap = SnapshotStore.from_state(state.get("snapshots", []), 1000).latest()
    if snap is None:
        st.caption("This checkpoint holds no samples.")
    elif snap.png is not None:
        try:   # the file is untrusted: an oversized or damaged grid is one line, not a traceback
            snapshot_image(snap.png, snap.step)
        except SnapshotImageError as exc:
            st.error(plain(exc), icon=":material/broken_image:")
            return
        st.image(snap.png, caption=f"Fixed-noise samples at step {snap.step:,}", width=360)
    else:
        real = dataset_of(state).x[:1000].numpy()   # a points run's own saved points
        st.plotly_chart(charts.toy_figure(real, snap.points, snap.heatmap, snap.extent,
                                          title=f"step {snap.step:,}", height=380),
                        key=f"{key}_toy", width="content")
        st.caption(charts.TOY_CAPTION)
