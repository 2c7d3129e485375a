"""The Feedback page's pieces: where samples come from, the comparison, the buttons,
and training a reward model in the background.

A comparison (two samples, or four for "best of 4") is drawn once and kept in the
session until it is judged, so a rerun never swaps what the person is looking at.
Every click is committed to the preference store at once (core/feedback/preferences.py).
"""
from __future__ import annotations

import copy
import io
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import plotly.graph_objects as go
import streamlit as st
import torch
from PIL import Image
from torch import nn

from core.data.datasets import DataSet
from core.engine.rules import takes_reward_model
from core.feedback import loop as feedback
from core.feedback.agreement import judge_stats, kappas, swapped
from core.feedback.preferences import (
    MAX_CRITERION,
    PreferenceStore,
    PreferenceStoreError,
    default_path,
    skipped_line,
)
from core.feedback.reward_model import RewardModel, new_file, verdict
from core.quality.offline import generator_from_state
from ui import checkpoints as ck
from ui import compare_view, runs
from ui.text import plain

TARGET = 200          # suggested judgements before training a reward model
SHOWN_PX = 280        # images are shown upscaled to this width
CURRENT = "fb_current"
# What a person may be asked; they can type any other. Stored with every pair: one
# reward model learns one criterion.
CRITERIA = {"image": ("Which sample is better?", "Which looks more like a 7?",
                      "Which has thicker strokes?", "Which looks more like a real digit?"),
            "2d": ("Which sample is better?", "Which point is higher up?",
                   "Which point looks more like the data?")}
PAIR_BUTTONS = (("left", "Left is better", "Left"), ("right", "Right is better", "Right"),
                ("tie", "Equal", "Down"), ("skip", "Skip", "S"))


@dataclass
class Source:
    label: str
    G: nn.Module          # a CPU copy: judging never touches a training run's weights
    data: DataSet
    step: int
    fingerprint: str
    state: Callable[[], dict]   # the run state a fine-tune starts from
    base: nn.Module | None = None   # a fine-tuned arm's start (a later round's pairs)
    arena: object | None = None     # the comparison a fine-tuned arm is in


def _live(label: str, run, state, arena=None) -> Source:
    with run.lock:
        G = copy.deepcopy(run.shown_G).cpu().eval()
        step = run.step_count
        base = copy.deepcopy(run.G_ref).cpu().eval() if arena and run.uses_reference else None
    return Source(label, G, run.data, step, feedback.generator_fingerprint(G), state,
                  base, arena if base is not None else None)


def _start_of(label: str, arena, name: str) -> Source:
    """Where a fine-tuned arm started (its KL anchor): the base of a blind test."""
    arm = arena.arms[name]
    with arm.lock:
        G = copy.deepcopy(arm.G_ref).cpu().eval()
        step = arm.rule_start
    return Source(label, G, arm.data, step, feedback.generator_fingerprint(G),
                  lambda: arena.arm_state(name))


def base_label(arena_id: str, arm: str) -> str:
    return f"arena {arena_id} · arm {arm} · its start"


REQUEST = "fb_request"   # the sidebar values another page asks this page to open with


def open_with(**values) -> None:
    """Ask the Feedback page to open with these sidebar values (widget keys). Set as
    widget state from another page, they could be dropped with that page's widgets
    on the switch (and the sidebar showed round 0 for a moment); the Feedback page
    applies them itself before it draws its widgets (apply_request)."""
    st.session_state[REQUEST] = values


def apply_request() -> None:
    """Put the requested values into the widgets' state. The request stays until
    request_done(), after the widgets are drawn: a run interrupted before that (a
    rerun arriving during the page switch) applies it again."""
    values = st.session_state.get(REQUEST)
    if values:
        st.session_state.update(values)


def request_done() -> None:
    st.session_state.pop(REQUEST, None)


def arm_label(arena_id: str, arm: str) -> str:
    return f"arena {arena_id} · arm {arm}"


def _file(label: str, path: Path) -> Source:
    state, error = ck.load_file(str(path), path.stat().st_mtime_ns)
    if error:
        raise ValueError(error)
    if state.get("kind") == "arena":
        raise ValueError("an arena checkpoint: judge one of its arms while it runs, or "
                         "extract an arm first")
    G, data = generator_from_state(state)
    return Source(label, G, data, int(state["step"]), feedback.generator_fingerprint(G),
                  lambda: state)


def sources() -> dict:
    """label -> a function giving a fresh Source: runs, arena arms, saved checkpoints."""
    out = {}
    for t in runs.registry().runs():
        out[f"run {t.run_id}"] = lambda t=t, k=f"run {t.run_id}": _live(k, t.run, t.state_dict)
    for a in compare_view.registry().runs():
        for name, arm in a.arms.items():
            label = arm_label(a.run_id, name)
            out[label] = lambda a=a, n=name, k=label: _live(k, a.arms[n],
                                                            lambda: a.arm_state(n), a)
            if arm.uses_reference:   # a fine-tune: its start is a generator to test against
                label = base_label(a.run_id, name)
                out[label] = lambda a=a, n=name, k=label: _start_of(k, a, n)
    root = ck.checkpoint_dir()
    for path in ck.checkpoint_files():
        label = f"file {path.relative_to(root)}"
        out[label] = lambda p=path, k=label: _file(k, p)
    return out


@st.cache_resource(show_spinner=False)
def _stores() -> dict:
    return {}


def store(path: str) -> PreferenceStore:
    """One open store per database path in this server process."""
    cache = _stores()
    if path not in cache:
        cache[path] = PreferenceStore(path)
    return cache[path]


def db_path_input() -> str:
    return st.text_input("Preference database", value=str(default_path()), key="fb_db",
                         help="One SQLite file; every click is saved at once")


# -- the comparison ------------------------------------------------------------------------
def new_comparison(source: Source, k: int, model: RewardModel | None,
                   round_: int = 0) -> dict:
    """k samples to judge. In a later round of a fine-tuned arm, half the pairs set one
    of its samples against one of its start's (as `python -m core rlhf-rounds` does)."""
    gen = torch.Generator().manual_seed(int(np.random.SeedSequence().entropy % 2**31))
    fingerprint = source.fingerprint
    if source.base is not None and round_ > 0 and k == 2 and torch.rand((), generator=gen) < 0.5:
        x, z = feedback.draw_against(source.G, source.base, gen)
        fingerprint += "/" + feedback.generator_fingerprint(source.base)
    else:
        x, z = feedback.draw(source.G, k, gen, model)
    return {"x": x, "z": z, "k": k, "label": source.label, "step": source.step,
            "fingerprint": fingerprint, "data": source.data, "round": round_}


REPEAT_SHARE = 0.1    # comparisons that are an earlier pair again, sides swapped
REPEAT_AFTER = 10     # ... once the judge has this many pairs under the criterion


def next_comparison(db: PreferenceStore, source: Source, k: int, model: RewardModel | None,
                    round_: int, judge: str, criterion: str) -> dict:
    """A fresh comparison, or now and then one the judge saw before with the sides
    swapped (their self-agreement is measured on these; the person is not told)."""
    data = source.data
    if k == 2 and np.random.random() < REPEAT_SHARE and \
            db.tally(judge, data.name, criterion)["pairs"] >= REPEAT_AFTER:
        old = db.random_pair(judge, data.name, criterion)
        if old is not None:
            samples, z = swapped(old)
            return {"x": feedback.from_display(samples, data), "z": torch.from_numpy(z),
                    "k": 2, "label": source.label, "step": old.step,
                    "fingerprint": old.generator, "data": data, "round": round_}
    return new_comparison(source, k, model, round_)


def quality_panel(db: PreferenceStore, data: str, criterion: str) -> None:
    """Per judge: judgements, repeats, self-agreement; kappa between judges."""
    if not st.toggle("Show annotation quality", key="fb_quality",
                     help="Self-agreement on pairs shown again with the sides swapped, and "
                          "Cohen's kappa between judges on the pairs both judged"):
        return
    rows = db.judgements(data=data, criterion=criterion)
    table = [{"judge": s.judge, "judgements": s.judgements, "pairs": s.pairs,
              "repeats": s.repeats,
              "self-agreement": f"{100 * s.self_agreement:.0f}%" if s.repeats else "–"}
             for s in judge_stats(rows)]
    st.dataframe(table, hide_index=True, key="fb_quality_table")
    for a, b, kappa, shared in kappas(rows):
        st.caption(plain(f"Cohen's kappa {a} vs {b}: {kappa:.2f} on {shared} shared pairs"))
    st.caption("A reward model can leave out judges below a self-agreement: python -m core "
               "reward train --min-self-agreement 0.7")


def _png(pixels: np.ndarray) -> bytes:
    image = Image.fromarray(pixels if pixels.ndim == 2 else pixels.transpose(1, 2, 0))
    image = image.resize((SHOWN_PX, SHOWN_PX), Image.NEAREST)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def points_figure(data: DataSet, points: np.ndarray, names: list[str]) -> go.Figure:
    real = data.x[:1000].numpy()
    fig = go.Figure(go.Scatter(x=real[:, 0], y=real[:, 1], mode="markers", name="real",
                               marker={"size": 4, "color": "#bbb"}))
    for name, (px, py) in zip(names, points):
        fig.add_trace(go.Scatter(x=[px], y=[py], mode="markers+text", text=[name], name=name,
                                 textposition="top center", marker={"size": 14}))
    fig.update_layout(height=420, margin={"l": 10, "r": 10, "t": 10, "b": 10},
                      showlegend=False, plot_bgcolor="rgba(0,0,0,0)",
                      paper_bgcolor="rgba(0,0,0,0)")   # the theme shows through
    fig.update_yaxes(scaleanchor="x", scaleratio=1)
    return fig


NAMES = {2: ["Left", "Right"], 4: ["A", "B", "C", "D"]}


def show(current: dict) -> None:
    show_samples(feedback.to_display(current["x"], current["data"]), current["data"],
                 NAMES[current["k"]], key="fb_points")


def show_samples(shown: np.ndarray, data: DataSet, names: list[str], key: str) -> None:
    """Images side by side, or points over the real data, each with its name."""
    if data.is_image:
        for col, name, pixels in zip(st.columns(len(names)), names, shown):
            col.image(_png(pixels), caption=name, width="stretch")
    else:
        st.plotly_chart(points_figure(data, shown, names), key=key)


def messages() -> None:
    """An error or an undo notice left by a button's callback on the last run."""
    for key in ("fb_error", "fb_undone"):
        message = st.session_state.pop(key, None)
        if message:
            (st.error if key == "fb_error" else st.toast)(plain(message))


def record(db: PreferenceStore, current: dict, choice: str, judge: str,
           round_: int = 0, criterion: str = "") -> None:
    """on_click of a choice button: commit it, then draw the next comparison."""
    j = feedback.judgement(current["x"], current["z"], choice, judge, current["data"],
                           current["fingerprint"], current["step"], round_=round_,
                           criterion=criterion)
    save_click(db.add, j, CURRENT)


def save_click(add, row, current_key: str) -> None:
    """Store a click's row; then the next comparison is drawn (the one in
    session_state[current_key] is dropped), or the store's refusal is shown."""
    try:
        add(row)
    except PreferenceStoreError as exc:
        st.session_state["fb_error"] = str(exc)
        return
    st.session_state.pop(current_key, None)


def report_undo(gone, what: str = "judgement") -> None:
    st.session_state["fb_undone"] = (f"Removed {what} {gone.id} ({gone.choice})"
                                     if gone else "Nothing to undo")


def undo(db: PreferenceStore, judge: str) -> None:
    """Take back the last click and show its comparison again, to judge it anew."""
    gone = db.undo_last(judge)
    report_undo(gone)
    current = st.session_state.get(CURRENT)
    if gone is not None and current is not None and gone.data == current["data"].name:
        data = current["data"]
        st.session_state[CURRENT] = {
            **current, "x": feedback.from_display(gone.samples, data),
            "z": torch.from_numpy(gone.z), "k": int(gone.samples.shape[0]),
            "step": gone.step, "fingerprint": gone.generator, "round": gone.round}


def progress(db: PreferenceStore, judge: str, data: str, criterion: str) -> int:
    """The counter: this judge's training pairs on this data set and criterion (a
    best-of-4 click is 3 pairs; skips apart), and everyone's (returned)."""
    mine, everyone = db.tally(judge, data, criterion), db.tally(data=data, criterion=criterion)
    skipped = f", {mine['skips']} skipped" if mine["skips"] else ""
    st.progress(min(1.0, mine["pairs"] / TARGET),
                text=f"{plain(judge)}: {mine['pairs']} pairs of {data} judged of a suggested "
                     f"{TARGET}{skipped} ({everyone['pairs']} by everyone in "
                     f"{plain(db.path.name)})")
    return everyone["pairs"]


def dataset_buttons(row, db: PreferenceStore, data: str, criterion: str, pairs: int) -> None:
    """Export this criterion's pairs as a shareable dataset (Parquet in the TRL and
    Pick-a-Pic conventions), or import one into this database."""
    from core.feedback.export import to_parquet

    if pairs:   # this criterion's, by everyone
        row.download_button("Dataset (Parquet)", key="fb_parquet", on_click="ignore",
                            data=lambda: to_parquet(db, data, criterion)[0],
                            file_name=f"{data}-preferences.parquet",
                            mime="application/vnd.apache.parquet",
                            help="This criterion's pairs with chosen / rejected images, "
                                 "loadable by datasets.load_dataset('parquet', ...); the "
                                 "CLI's feedback export also writes a dataset card")
    with st.expander("Import a preference dataset"):
        upload = st.file_uploader("Parquet file written by GAN RL Lab", type=["parquet"],
                                  key="fb_import")
        if upload is not None and st.button("Import", key="fb_import_go"):
            import_upload(db, upload.getvalue(), upload.name)


def import_upload(db: PreferenceStore, raw: bytes, name: str) -> None:
    import tempfile

    from core.feedback.export import DatasetFileError, import_into

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "upload.parquet"
        path.write_bytes(raw)
        try:
            n = import_into(db, path)
        except (DatasetFileError, PreferenceStoreError) as exc:
            st.error(plain(f"{name}: {str(exc).replace(str(path), 'the file')}"),
                     icon=":material/error:")
            return
    st.success(plain(f"Imported {n} judgements from {name}."), icon=":material/check:")


def damaged_rows(db: PreferenceStore) -> str:
    """One line naming the store's damaged rows, checked once per session and file
    (reading every row on each click would slow judging)."""
    key = ("fb_damaged", str(db.path))
    if key not in st.session_state:
        st.session_state[key] = skipped_line(db.damaged())
    return st.session_state[key]


def criterion_key(data: str) -> str:
    """One criterion box per data set: a question about digits is not one about points,
    and switching the generator must not carry it over."""
    return f"fb_criterion_{data}"


def criterion_input(db: PreferenceStore, data: DataSet) -> str:
    """The question judged, typed or picked (this data set's earlier ones first)."""
    judged = [c for c in db.criteria(data.name) if c]
    presets = CRITERIA["image" if data.is_image else "2d"]
    options = list(dict.fromkeys([*judged, *presets]))
    chosen = st.selectbox("Criterion", options, key=criterion_key(data.name),
                          accept_new_options=True,
                          help="What you are judging, stored with every pair: a reward model "
                               "learns one criterion, so keep it the same for a session")
    return (chosen or "").strip()[:MAX_CRITERION]


def buttons(db: PreferenceStore, current: dict, judge: str, round_: int = 0,
            criterion: str = "") -> None:
    # one wrapping row of content-width buttons: at 800 px fixed columns cut "Left ..."
    row = st.container(horizontal=True, key="fb_buttons")
    if current["k"] == 2:
        for choice, label, key in PAIR_BUTTONS:
            row.button(label, key=f"fb_{choice}", on_click=record,
                       args=(db, current, choice, judge, round_, criterion), shortcut=key,
                       type="primary" if choice in ("left", "right") else "secondary")
    else:
        for i, name in enumerate(NAMES[4]):
            row.button(f"{name} is best", key=f"fb_best{i}", on_click=record,
                       args=(db, current, f"best:{i}", judge, round_, criterion),
                       shortcut=str(i + 1),
                       type="primary")
        row.button("Skip", key="fb_skip", on_click=record,
                   args=(db, current, "skip", judge, round_, criterion), shortcut="S")
    st.button("Undo last", key="fb_undo", on_click=undo, args=(db, judge), shortcut="U")


# -- fine-tuning on the preferences ----------------------------------------------------------
FINE_TUNE_ARMS = ("bce", "reinforce", "rlhf", "latent")
# (2-D data, images): what bench/rlhf.py's rlhf arm needed to reach its targets (ring8
# moves whole modes around the ring, slowly; digits change class within 2,000 steps)
FINE_TUNE_STEPS = (10_000, 2_000)
FINE_TUNE_EVALS = 10   # quality evaluations per fine-tune when the run had none


def fine_tune_steps(is_image: bool) -> int:
    return FINE_TUNE_STEPS[1 if is_image else 0]


def fine_tune(source: Source, model_path: Path) -> None:
    """Start a comparison from the judged generator: bce continued, reinforce (D as the
    reward), rlhf (G fine-tuned on these preferences) and latent (G frozen, its noise
    steered by them), then open it on the Compare page."""
    from core.engine.arena import Arena
    from core.engine.fine_tune import fine_tune_config
    from core.engine.trainer import new_run_id
    from core.io.schema import config_of

    state = source.state()
    cfg = config_of(state)
    cfg, note = fine_tune_config(cfg, FINE_TUNE_ARMS)
    steps = fine_tune_steps(not cfg.is_2d)
    # quality evaluations through the fine-tune (the proxy, realism, diversity and the
    # warning need them), also when the judged run was trained without them; every arm
    # that fine-tunes on a reward model (rlhf, latent) gets these preferences
    cfg = cfg.replace(steps=steps, eval_every=cfg.eval_every or max(1, steps // FINE_TUNE_EVALS),
                      **{f"{arm}.reward_model": str(model_path) for arm in FINE_TUNE_ARMS
                         if takes_reward_model(arm)})
    arena = Arena(cfg, list(FINE_TUNE_ARMS), init_state=state,
                  run_id=new_run_id(f"arena-rlhf-{cfg.data}"))
    if note:
        arena.mark(note)
    compare_view.registry().start(arena)
    compare_view.attach(arena)
    st.session_state["cmp_compared_only"] = True   # the fine-tune, not the pretraining
    st.switch_page("views/compare.py", query_params={compare_view.QUERY_KEY: arena.run_id})


def continue_fine_tune(source: Source, model_path: Path) -> None:
    """The next round: the comparison the judged arm is in goes on where it stopped,
    every arm that fine-tunes on preferences now on the newest reward model."""
    arena = source.arena
    arena.use_reward_model(model_path)
    if not arena.thread_alive:
        arena.extend(fine_tune_steps(source.data.is_image))
        compare_view.registry().start(arena)
    st.session_state["cmp_compared_only"] = True
    st.switch_page("views/compare.py", query_params={compare_view.QUERY_KEY: arena.run_id})


# -- reward model training in the background ------------------------------------------------
class RewardJob:
    """Fits a reward model in a daemon thread; the page polls `history` and `state`."""

    def __init__(self, db: PreferenceStore, data: DataSet, judge: str | None, out: Path,
                 criterion: str | None = None):
        self.history: list[dict] = []
        self.state, self.message, self.model, self.good = "running", "", None, False
        self.path = out   # where the model is saved (the Save-as box may change since)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run,
                                        args=(db, data, judge, out, criterion),
                                        daemon=True, name="reward-model")
        self._thread.start()

    def _run(self, db, data, judge, out, criterion) -> None:
        try:
            torch.set_num_threads(1)
            skipped: list[str] = []
            self.model = feedback.train_from_store(db, data, judge, skipped, criterion,
                                                   progress=self.history.append,
                                                   should_stop=self._stop.is_set)
            self.model.save(new_file(out))
            self.good, summary = verdict(self.model.metrics)
            self.state = "done"
            damaged = skipped_line(skipped)
            asked = f" (criterion: {criterion!r})" if criterion else ""
            self.message = (f"Saved {out}{asked}: {summary}."
                            + (f" {damaged}." if damaged else ""))
        except Exception as exc:   # shown on the page; the store is untouched
            asked = f" (criterion: {criterion!r})" if criterion else ""
            self.state, self.message = "failed", f"{type(exc).__name__}: {exc}{asked}"

    def stop(self) -> None:
        self._stop.set()


@st.cache_resource(show_spinner=False)
def jobs() -> dict:
    return {}


def history_figure(history: list[dict]) -> go.Figure:
    fig = go.Figure()
    for member in sorted({h["member"] for h in history}):
        rows = [h for h in history if h["member"] == member]
        fig.add_trace(go.Scatter(x=[h["epoch"] for h in rows],
                                 y=[h["held_out_acc"] for h in rows], mode="lines",
                                 name=f"member {member + 1}: held-out accuracy"))
        fig.add_trace(go.Scatter(x=[h["epoch"] for h in rows],
                                 y=[h["held_out_loss"] for h in rows], mode="lines",
                                 line={"dash": "dot"}, name=f"member {member + 1}: held-out loss"))
    fig.update_layout(height=300, margin={"l": 10, "r": 10, "t": 30, "b": 10},
                      title="Reward model: held-out accuracy and Bradley-Terry loss",
                      plot_bgcolor="rgba(0,0,0,0)", paper_bgcolor="rgba(0,0,0,0)",
                      legend={"orientation": "h"})
    fig.update_xaxes(title_text="epoch")
    return fig
