"""Why the rules differ, drawn (the Compare page, 2-D data): on a private copy of one arm,
each sample's update under bce and under reinforce side by side, on the same samples and
the same D, and a step-by-step mode (one D step, one G step per click) on that copy.

The copy (core/engine/step_by_step.py) is taken under the arena's lock and kept in
session state; nothing here changes the running comparison. Drawn outside the page's
polling fragment: it changes only when the person clicks.
"""
from __future__ import annotations

import numpy as np
import streamlit as st

from core.engine.arena import Arena
from core.engine.step_by_step import MEAN_DRAWS, StepByStep
from core.engine.update_field import UpdateField, cosines
from ui.gradient_figure import arrow_scale, field_figure, view_ranges
from ui.text import plain

K = "gv_"   # session-state and widget key prefix
MODES = {"pull": "Pull on each sample (one draw)",
         "mean": f"Pull averaged over {MEAN_DRAWS} noise draws",
         "moved": "Move after one G step"}
REAL_SHOWN = 1000


def applies(arena: Arena) -> bool:
    return not arena.data.is_image and arena.data.dim == 2 and not arena.warming_up


def _copy(arena: Arena, arm: str, fresh: bool = False) -> StepByStep:
    """The session's copy of `arm`, taken now if there is none of it (or `fresh`)."""
    held = st.session_state.get(K + "copy")
    if fresh or held is None or held[:2] != (arena.run_id, arm):
        held = (arena.run_id, arm, StepByStep.from_arena(arena, arm))
        st.session_state[K + "copy"] = held
    return held[2]


def show(arena: Arena) -> None:
    if applies(arena):
        with st.container(key=K + "section"):
            _section(arena)


def _section(arena: Arena) -> None:
    st.markdown("**Why the rules differ, drawn**")
    if not st.toggle("Show each sample's update under bce and under reinforce", key=K + "on",
                     help="On a private copy of one arm: the same samples and the same D, "
                          "one arrow per sample for each rule; then step D and G by hand"):
        return
    arms = list(arena.arms)
    arm = st.segmented_control("Copy of arm", arms, default=arms[0], key=K + "arm") or arms[0]
    stepper = _copy(arena, arm)
    mode = st.radio("Arrows", list(MODES), format_func=MODES.get, horizontal=True,
                    key=K + "mode")
    row = st.container(horizontal=True, key=K + "buttons")
    if row.button("D step", key=K + "d_step", help="One BCE step of each copy's D on a "
                  "real batch vs what its G emits: the background changes"):
        stepper.d_step()
    if row.button("G step", key=K + "g_step", help="One update of each copy's G by its "
                  "rule: every sample moves by exactly the 'Move after one G step' arrow"):
        stepper.g_step()
    if row.button("Reset to the arm's current state", key=K + "reset",
                  help="A new copy of the arm as it is now in the comparison"):
        stepper = _copy(arena, arm, fresh=True)
    _draw(arena, stepper, mode)


def _vectors(stepper: StepByStep, fields: dict, mode: str) -> dict[str, np.ndarray]:
    if mode == "mean":
        return stepper.mean_pulls()
    return {rule: getattr(f, "moved" if mode == "moved" else "pull")
            for rule, f in fields.items()}


def _title(rule: str, f: UpdateField, mode: str) -> str:
    noise = f" (σ = {f.sigma:.3g}, K = {f.k})" if f.sigma is not None else ""
    if mode == "moved":
        return f"{rule}: one G step{noise}"
    if f.sigma is None:
        return f"{rule}: exact gradient of log D"
    if mode == "mean":
        return f"{rule}: mean of {MEAN_DRAWS} noisy estimates{noise}"
    return f"{rule}: one noisy estimate{noise}"


def _panel_note(f: UpdateField, vec: np.ndarray, mode: str) -> str:
    if mode == "moved":
        cos = cosines(vec, f.pull).mean()
        return (f"Mean move {np.linalg.norm(vec, axis=1).mean():.2g} per step; against "
                f"this rule's pull on the same sample: mean cosine {cos:.2f} (Adam and the "
                "shared network decide a move, not the sample's own pull alone)")
    if f.sigma is None:
        return "Exact: no noise, the same arrows every draw"
    cos = cosines(vec, f.log_d_grad)
    return (f"Against bce's arrow on the same sample: mean cosine {cos.mean():.2f}, "
            f"{(cos > 0).mean():.0%} point within 90° of it")


EXPLAIN = {
    "pull": "Each arrow starts at a sample x = G(z) (orange: the first {n} of the fixed "
            "noise) and shows which way that rule's update pulls it: **bce**, the exact "
            "gradient of log D(x); **reinforce**, its one-draw policy-gradient estimate (K "
            "samples around x scored by D, leave-one-out baseline) in the same units (the "
            "rule's per-batch normalisation undone: one number for the whole batch). ",
    "mean": "Each rule's pull on every sample averaged over {draws} independent noise "
            "draws: reinforce's noise averages out, leaving the gradient of its reward "
            "smoothed over the policy's Gaussian (σ), close to bce's where D is smooth at "
            "that scale. ",
    "moved": "Each arrow is where ONE real G update moves that sample (the rule's loss, "
             "the gradient clip, Adam with the state of the arm that runs that rule). G is "
             "one network, so a step moves neighbouring samples together: the moves are "
             "smoother than the pulls. **G step** applies exactly these moves. ",
}


def _draw(arena: Arena, stepper: StepByStep, mode: str) -> None:
    fields = stepper.fields()
    vectors = _vectors(stepper, fields, mode)
    ranges = view_ranges(arena.data.extent(), [f.x for f in fields.values()])
    scale = arrow_scale(list(vectors.values()), ranges[1] - ranges[0])
    real = arena.data.x[:REAL_SHOWN].float().cpu().numpy()
    for col, (rule, f) in zip(st.columns(len(fields)), fields.items()):
        fig = field_figure(real, f.x, vectors[rule], stepper.heatmap(rule, ranges), ranges,
                           scale, title=_title(rule, f, mode))
        with col.container(key=f"{K}panel_{rule}"):
            st.plotly_chart(fig, key=f"{K}fig_{rule}", width="stretch",
                            config={"displaylogo": False})
            st.caption(_panel_note(f, vectors[rule], mode))
    unit = "a move" if mode == "moved" else "a gradient"
    st.caption(EXPLAIN[mode].format(n=len(stepper.z), draws=MEAN_DRAWS)
               + f"Drawn ×{scale:.3g} in both panels: an arrow one axis unit long is {unit} "
               f"of {1 / scale:.3g}. Background: that copy's D(x), blue = says fake, red = "
               "says real, dashed: D = 0.5; grey: real points.")
    steps = (f"{stepper.d_steps} D step{'s' * (stepper.d_steps != 1)}, {stepper.g_steps} "
             f"G step{'s' * (stepper.g_steps != 1)} since")
    with st.container(key=K + "state"):
        st.caption(f"A private copy of arm **{plain(stepper.label)}** taken at step "
                   f"{stepper.at_step:,} (the comparison is at step {arena.step_count:,}) · "
                   f"{steps} · both panels start from it; each step, each copy follows its own "
                   f"rule, like two arms. The comparison itself is never changed.")

