"""What a fine-tune did, shown where it lands (the Compare page): the base and the
fine-tuned generator on the same z, large and side by side, each fine-tuned sample's
nearest real training image with its distance (a hack detector a person can check), and
a warning when the reward rises while the judges, realism or diversity fall."""
from __future__ import annotations

import math

import numpy as np
import streamlit as st
import torch

from core.engine.arena import Arena
from core.engine.samples import SnapshotImageError, grid_images, grid_png
from core.quality.judges import nearest_neighbours
from core.quality.steering import PROXY, steering_warning
from ui.text import plain

SHOWN = 32   # fixed-z samples in the side-by-side grids (4 rows of 8)


def tuned_arms(arena: Arena) -> dict:
    """The arms that fine-tune against a start they keep (rlhf, latent)."""
    return {name: arm for name, arm in arena.arms.items() if arm.uses_reference}


def evaluations(arm) -> tuple[dict, dict] | None:
    """The first and the latest quality evaluation since the arm's rule started."""
    start = arm.log.row_of_step(arm.rule_start - 1) if arm.rule_start else 0
    quality = [c for c in arm.log.columns if c.startswith("q_")]   # all the warning reads
    steps, cols = arm.log.rows(quality, start, max_rows=10**6)
    proxy = cols.get(PROXY)
    if proxy is None:
        return None
    done = np.flatnonzero(~np.isnan(proxy))
    if len(done) < 2:
        return None
    first, last = done[0], done[-1]
    return ({k: float(v[first]) for k, v in cols.items()},
            {k: float(v[last]) for k, v in cols.items()})


def warnings(arena: Arena) -> None:
    for name, arm in tuned_arms(arena).items():
        pair = evaluations(arm)
        said = steering_warning(*pair) if pair else None
        if said:
            st.warning(f"**{plain(name)}**: {plain(said)}", icon=":material/warning:")


def _nearest_png(data, samples: torch.Tensor) -> tuple[bytes, float]:
    """The nearest real training image of each sample, as one grid, and the median
    distance (pixels in [-1, 1])."""
    index = nearest_neighbours(data)   # built once per data set
    dist, idx = index.nearest(samples)
    return grid_png(index.x[idx[:, 0]], data.image_shape, nrow=8), float(dist.median())


def _criterion_of(arm) -> str:
    """What the arm's reward model learnt to prefer ('' if unknown or unreadable)."""
    from core.feedback.reward_model import cached_reward_model

    try:
        model = cached_reward_model(arm.cfg.options().reward_model)
    except Exception:   # a moved or damaged file: the arm's own status says so
        return ""
    return str(model.metrics.get("criterion", ""))


def _tuned_at(arm, step: int, shape: tuple) -> tuple[torch.Tensor, int] | None:
    """The arm's fixed-z samples at the snapshot step the page's slider shows (its grid
    decoded; the first SHOWN of its z are the same z as the base's), or None where that
    grid is missing or damaged (the grids above say so)."""
    snap = arm.snapshots.at_step(step)
    if snap is None or snap.png is None:
        return None
    try:
        return grid_images(snap.png, shape, n=SHOWN, step=snap.step), snap.step
    except SnapshotImageError:
        return None


def base_vs_tuned(arena: Arena, step: int | None = None) -> None:
    """`step`: the Compare page's snapshot step when the person browses the history
    (the fine-tuned side follows it); None: the arm's weights now."""
    arms = tuned_arms(arena)
    if not arms or not arena.data.is_image:
        return
    st.markdown("**Base vs fine-tuned, same z**")
    name = next(iter(arms)) if len(arms) == 1 else st.segmented_control(
        "Fine-tuned arm", list(arms), default=next(iter(arms)), key="cmp_ft_arm") or \
        next(iter(arms))
    arm = arms[name]
    z = arena.stream.fixed_z[:SHOWN]
    shape = arena.data.image_shape
    past = None if step is None else _tuned_at(arm, step, shape)
    with arena.lock, torch.no_grad():
        base = arm.G_ref(z).cpu()
        tuned, when = past or (arm.shown_G(z).cpu(), arena.step_count)
    nearest, tuned_dist = _nearest_png(arena.data, tuned)
    _, base_dist = _nearest_png(arena.data, base)
    cols = st.columns(3)
    cols[0].image(grid_png(base, shape, nrow=8), width="stretch",
                  caption=f"base (step {arm.rule_start:,})")
    cols[1].image(grid_png(tuned, shape, nrow=8), width="stretch",
                  caption=f"{name} {'at' if past else 'now'} (step {when:,})")
    cols[2].image(nearest, width="stretch", caption="the nearest real training image of "
                  "each fine-tuned sample")
    row = st.container(horizontal=True, key=f"cmp_ft_row_{name}")
    next_round = int(st.session_state.get("fb_round", 0)) + 1
    if row.button(f"Judge {name}: feedback round {next_round}", key=f"cmp_round_{name}",
                  type="primary", help="On the Feedback page: pairs of this arm's samples, "
                  "and of its samples against its start's, so the next reward model sees "
                  "what this fine-tune exploited; then train it and continue the fine-tune"):
        from ui import feedback_view

        feedback_view.open_with(fb_mode="Pairs", fb_round=next_round,
                                fb_source=feedback_view.arm_label(arena.run_id, name))
        st.switch_page("views/feedback.py")
    if row.button(f"Blind-test {name}", key=f"cmp_blind_{name}", help="On the Feedback "
                  "page: one sample of this arm and one of its start, sides at random"):
        from ui import blind_test, feedback_view

        blind_test.choose(feedback_view.base_label(arena.run_id, name),
                          feedback_view.arm_label(arena.run_id, name))
        st.switch_page("views/feedback.py")
    learnt = _criterion_of(arm)
    if learnt:
        st.caption(plain(f"{name} steers by a reward model of the criterion {learnt!r}"))
    trend = "closer to" if tuned_dist < base_dist else "further from"
    st.caption(f"Median distance to the nearest real image: base {base_dist:.1f}, "
               f"{plain(name)} {tuned_dist:.1f} ({trend} real digits). Samples far from "
               "every real image, or whose nearest real image is another digit, are what "
               "a reward model can be fooled by." if math.isfinite(tuned_dist) else "")
