"""The Feedback page's blind test: does a person prefer the fine-tuned generator?

Each comparison is one sample of the base and one of the new generator, on independent
z, in random left/right order, with nothing on the page saying which is which. Clicks
go to the preference store's blind_tests table (never reward-model training data). If
a reward model is loaded, each click also records which side it preferred: its
agreement with the person on these fresh samples, against its held-out agreement at
training time, is the over-optimisation alarm (Gao et al.).
"""
from __future__ import annotations

import numpy as np
import streamlit as st
import torch

from core.feedback import loop as feedback
from core.feedback.preferences import BlindJudgement, PreferenceStore
from core.feedback.reward_model import RewardModel
from ui import feedback_view as fv
from ui.text import plain

CURRENT = "fb_blind_current"
TARGET = 50      # at ~50 pairs a 70% win rate is clearly more than a coin flip
NAMES = ["Left", "Right"]


def pick_generators(labels: list[str]) -> tuple[str, str]:
    """Sidebar: the base and the fine-tuned generator. Defaults: the oldest and the
    newest source (checkpoints come newest first)."""
    # a choice made elsewhere ("Blind-test this arm" on Compare) is in session state
    # already; a default index beside it would be a Streamlit warning on the page
    base = st.selectbox("Base generator", labels, key="fb_base",
                        **_default("fb_base", labels, len(labels) - 1),
                        help="The generator before fine-tuning, e.g. the pretrained checkpoint")
    new = st.selectbox("Fine-tuned generator", labels, key="fb_new",
                       **_default("fb_new", labels, 0),
                       help="The generator to test against the base, e.g. an rlhf arm")
    return base, new


def _default(key: str, labels: list[str], index: int) -> dict:
    chosen = st.session_state.get(key)
    if chosen is not None and chosen not in labels:   # a generator that is gone
        del st.session_state[key]
    return {} if key in st.session_state else {"index": index}


def choose(base: str, new: str) -> None:
    """Preset a blind test of `new` against `base` (labels of feedback_view.sources)."""
    fv.open_with(fb_mode="Blind test", fb_base=base, fb_new=new)


def new_comparison(sources: dict, base: str, new: str) -> dict:
    b, n = sources[base](), sources[new]()
    if b.data.name != n.data.name:
        raise ValueError(f"{base} samples {b.data.name} but {new} samples {n.data.name}; "
                         "choose two generators of the same data set")
    gen = torch.Generator().manual_seed(int(np.random.SeedSequence().entropy % 2**31))
    x, new_side = feedback.blind_pair(b.G, n.G, gen)
    return {"shown": feedback.to_display(x, n.data), "new_side": new_side, "data": n.data,
            "base": base, "base_generator": b.fingerprint, "base_step": b.step,
            "new": new, "new_generator": n.fingerprint, "new_step": n.step}


def usable_model(model: RewardModel | None, data_name: str) -> RewardModel | None:
    """The loaded reward model if it scores this data set; otherwise say why not."""
    if model is not None and model.data != data_name:
        st.warning(f"The reward model scores {plain(model.data)}, these generators sample "
                   f"{plain(data_name)}: it is not compared with you.")
        return None
    return model


def record(db: PreferenceStore, current: dict, choice: str, judge: str,
           model: RewardModel | None) -> None:
    """on_click: commit the click (with the reward model's pick), then draw the next pair."""
    model_fp = feedback.model_fingerprint(model) if model is not None else ""
    picked = (feedback.model_choice(model, current["shown"], current["data"])
              if model is not None else None)
    j = BlindJudgement(samples=current["shown"], new_side=current["new_side"], choice=choice,
                       judge=judge, data=current["data"].name, base=current["base"],
                       base_generator=current["base_generator"],
                       base_step=current["base_step"], new=current["new"],
                       new_generator=current["new_generator"], new_step=current["new_step"],
                       reward_model=model_fp, model_choice=picked)
    fv.save_click(db.add_blind, j, CURRENT)


def undo(db: PreferenceStore, judge: str) -> None:
    fv.report_undo(db.undo_last_blind(judge), "blind judgement")


def buttons(db: PreferenceStore, current: dict, judge: str, model) -> None:
    row = st.container(horizontal=True, key="fb_blind_buttons")
    for choice, label, key in fv.PAIR_BUTTONS:   # the same keys as Pairs
        row.button(label, key=f"fb_blind_{choice}", on_click=record,
                   args=(db, current, choice, judge, model), shortcut=key,
                   type="primary" if choice in ("left", "right") else "secondary")
    st.button("Undo last", key="fb_blind_undo", on_click=undo, args=(db, judge), shortcut="U")


def results(db: PreferenceStore, tally: feedback.BlindTally,
            model: RewardModel | None) -> None:
    """Win rate with its interval, the verdict, and the reward model's agreement."""
    st.subheader("Blind test so far")
    rate, low, high = tally.win_rate()
    row = st.container(horizontal=True, key="fb_blind_metrics")
    row.metric("Judged", tally.n, help=f"Skipped: {tally.skips}")
    row.metric("Fine-tuned wins", "–" if tally.n == 0 else f"{100 * rate:.0f}%",
               help="Ties count half")
    row.metric("95% interval", "–" if tally.n == 0 else f"{100 * low:.0f}–{100 * high:.0f}%",
               help="Wilson score interval")
    show = {"new": st.success, "base": st.error}.get(tally.winner(), st.info)
    show(plain(tally.verdict()), icon=":material/balance:")
    st.download_button("Blind tests CSV", data=db.blind_csv, file_name="blind_tests.csv",
                       mime="text/csv", key="fb_blind_csv", on_click="ignore",
                       help="Every blind judgement in this file (all judges and generators), "
                            "with which side was the fine-tuned one and the outcome")
    if model is None:
        st.caption("Load a reward model in the sidebar to check it agrees with you on "
                   "these samples.")
        return
    held_out = model.metrics.get("held_out_acc")
    st.markdown(plain(feedback.agreement_line(tally, held_out)))
    if tally.alarm(held_out):
        st.warning(plain(feedback.ALARM), icon=":material/warning:")


def page(db: PreferenceStore, sources: dict, base: str, new: str, judge: str,
         model: RewardModel | None) -> None:
    current = st.session_state.get(CURRENT)
    if current is None or (current["base"], current["new"]) != (base, new):
        try:
            current = st.session_state[CURRENT] = new_comparison(sources, base, new)
        except Exception as exc:
            st.error(f"Cannot sample: {plain(exc)}", icon=":material/error:")
            st.stop()
    model = usable_model(model, current["data"].name)
    done = db.blind_judgements(judge=judge, base=base, new=new)
    tally = feedback.blind_tally(done, feedback.model_fingerprint(model) if model else "")
    st.progress(min(1.0, tally.n / TARGET),
                text=f"{plain(judge)}: {tally.n} blind judgements of a suggested {TARGET}"
                     + (f" ({tally.skips} skipped)" if tally.skips else ""))
    fv.messages()
    st.markdown("**Which sample is better?**")
    fv.show_samples(current["shown"], current["data"], NAMES, key="fb_blind_points")
    buttons(db, current, judge, model)
    same = " Both are the same generator: a sanity check, expect about 50%." if base == new else ""
    st.caption(f"One sample of {plain(base)} (step {current['base_step']:,}) and one of "
               f"{plain(new)} (step {current['new_step']:,}), on independent z, in random "
               f"order. Keys: Left / Right arrows, Down = equal, S = skip, U = undo.{same}")
    results(db, tally, model)
