"""Feedback: people compare samples; a reward model learns their preferences."""
from pathlib import Path

import streamlit as st

from core.feedback.reward_model import RewardModelError, cached_reward_model, default_file
from ui import blind_test as bt
from ui import feedback_view as fv
from ui import leaderboard_view as lb
from ui import run_view
from ui.text import code, plain

st.title("Feedback")
fv.apply_request()   # values a Compare button asked for, before the widgets are drawn

with st.sidebar:
    st.subheader("Samples from")
    sources = fv.sources()
    if not sources:
        st.info("No generator yet: start a run on the Train page, or save a checkpoint.")
        st.stop()
    mode = st.radio("Mode", ["Pairs", "Best of 4", "Blind test", "Leaderboard"],
                    key="fb_mode", horizontal=True,
                    help="Best of 4: one click gives 3 pairs (the best over each other one). "
                         "Blind test: a fine-tuned generator against its base, unlabelled. "
                         "Leaderboard: blind votes between several generators, ranked")
    blind = mode in ("Blind test", "Leaderboard")
    if mode == "Leaderboard":
        ranked = lb.pick(list(sources))
    elif blind:
        base, new = bt.pick_generators(list(sources))
    else:
        label = st.selectbox("Generator", list(sources), key="fb_source")
        round_ = st.number_input(
            "Feedback round", min_value=0, max_value=1000, value=0, step=1, key="fb_round",
            help="0 before any fine-tune. After one, judge the fine-tuned arm's samples as "
                 "round 1, 2, ...: the next reward model learns from every round, so it "
                 "sees what the fine-tune exploited (python -m core rlhf-rounds does this "
                 "with an oracle)")
    fv.request_done()   # the widgets above now hold the requested values
    judge = st.text_input("Your name", value="person", key="fb_judge",
                          help="Stored with each judgement, so several people can judge")
    db_path = fv.db_path_input()
    model_path = st.text_input(   # one key: the path stays when the mode changes
        "Reward model to check (optional)" if blind else
        "Reward model for active selection (optional)", key="fb_model",
        help="Does it agree with you on the new samples? (The pairs stay random.)" if blind
        else "Show the pairs this model's members disagree on most")

try:
    db = fv.store(db_path)
except Exception as exc:
    st.error(f"Cannot use this preference database: {plain(exc)}", icon=":material/error:")
    st.stop()
damaged = fv.damaged_rows(db)
if damaged:   # the good rows still count and train; say which ones are left out
    st.warning(plain(f"{db.path.name}: {damaged}"), icon=":material/warning:")
model = None
if model_path:
    try:
        model = cached_reward_model(model_path)
    except RewardModelError as exc:
        st.warning(plain(exc))

if mode == "Leaderboard":
    lb.page(db, sources, ranked, judge)
    st.stop()
if blind:
    bt.page(db, sources, base, new, judge, model)
    st.stop()   # the reward model below learns from pairs, not from a blind test

k = 2 if mode == "Pairs" else 4
current = st.session_state.get(fv.CURRENT)
round_ = int(round_)
if (current is None or current["label"] != label or current["k"] != k
        or current["round"] != round_):
    try:
        source = sources[label]()
    except Exception as exc:
        st.error(f"Cannot sample from {plain(label)}: {plain(exc)}", icon=":material/error:")
        st.stop()
    current = st.session_state[fv.CURRENT] = fv.next_comparison(
        db, source, k, model, round_, judge,
        st.session_state.get(fv.criterion_key(source.data.name)) or "")

criterion = fv.criterion_input(db, current["data"])
judged = fv.progress(db, judge, current["data"].name, criterion)
fv.messages()
asked = criterion or "Which sample is better?"
st.markdown(f"**{plain(asked)}**" + ("" if k == 2 else " (pick the best of the four)"))
fv.show(current)
fv.buttons(db, current, judge, round_, criterion)
st.caption(f"{plain(current['data'].name)} samples from {plain(current['label'])} at step "
           f"{current['step']:,} (generator {code(current['fingerprint'])}). Keys: "
           + ("Left / Right arrows, Down = equal, S = skip" if k == 2 else "1-4, S = skip")
           + ", U = undo.")

fv.quality_panel(db, current["data"].name, criterion)

st.subheader("Reward model")
job = fv.jobs().get(db_path)
out = st.text_input("Save as", value=str(default_file(fv.default_path().parent /
                                                    "reward_models", current["data"].name)),
                    key=f"fb_out_{current['data'].name}", help="A new file: a model a run may be using is never "
                                       "replaced")
row = st.container(horizontal=True, key="fb_model_row")   # wraps; columns cut the labels
if row.button("Train reward model", key="fb_train", disabled=job is not None and
             job.state == "running", type="primary"):
    fv.jobs()[db_path] = job = fv.RewardJob(db, current["data"], None, Path(out), criterion)
row.download_button("Judgements CSV", data=db.to_csv, file_name="preferences.csv",
                   mime="text/csv", key="fb_csv", on_click="ignore")
fv.dataset_buttons(row, db, current["data"].name, criterion, judged)
if job is not None and job.state == "done":
    source = sources[label]()
    steps = fv.fine_tune_steps(current["data"].is_image)
    row = st.container(horizontal=True, key="fb_next_row")
    try:
        if source.arena is not None and row.button(
                f"Continue this fine-tune (round {round_})", key="fb_continue",
                type="primary", help=f"{plain(source.arena.run_id)} goes on where it is "
                f"({steps:,} more steps if it has stopped); its rlhf and latent arms use "
                "this reward model, trained on every round so far"):
            fv.continue_fine_tune(source, Path(job.path))
        if row.button("Fine-tune with these preferences", key="fb_finetune",
                      type="secondary" if source.arena is not None else "primary",
                      help=f"A new comparison from this generator: "
                           f"{', '.join(fv.FINE_TUNE_ARMS)}, {steps:,} steps each, on the "
                           "Compare page"):
            fv.fine_tune(source, Path(job.path))
    except Exception as exc:   # the slot limit, a stale source: say so, keep the page
        st.error(f"Could not start the fine-tune: {plain(exc)}", icon=":material/error:")
if job is not None:
    was_running = job.state == "running"

    @st.fragment(run_every=run_view.POLL_S if was_running else None)
    def progress() -> None:
        if was_running and job.state != "running":
            st.rerun()   # the page's buttons (Fine-tune) follow the finished job
        if job.history:
            st.plotly_chart(fv.history_figure(job.history), key="fb_history")
        if job.state == "running":
            st.caption(f"training: {len(job.history)} epochs so far")
        elif job.state == "done" and job.good:
            st.success(plain(job.message), icon=":material/check:")
        elif job.state == "done":
            st.warning(plain(job.message), icon=":material/warning:")
        else:
            st.error(plain(job.message), icon=":material/error:")
    progress()
