"""The Train page's first-visit guide (the app's first page): what each page is for, what
the charts mean, what a healthy run looks like.

Shown in full until dismissed, while no run is on the page; otherwise a small popover
keeps the same text at hand.
Dismissing is remembered in session_state, so it lasts for the browser session.
"""
from __future__ import annotations

import streamlit as st

DISMISSED = "guide_dismissed"

PAGES = """
**The pages** (left): **Train** runs one GAN and shows it live (this page).
**Compare** trains two or three update rules side by side, from the same weights on
the same batches, so a difference between them is the rule's doing; many seeds give
a verdict with error bars. **Feedback** is where people pick the better of two
samples; a reward model learns those preferences, and an *rlhf* fine-tune trains G
towards them. **Checkpoints** saves, downloads and uploads runs, and resumes or
fine-tunes one.

**A fine-tune needs a trained generator first**: train one with bce (about 3,000
steps on digits), press Save checkpoint, then fine-tune it on the Checkpoints page;
or let Compare warm up with bce and fork its arms from there.
"""

TEXT = """
Two networks train against each other. **G** (the generator) turns random noise into
samples; **D** (the discriminator) scores how real a sample looks, from 0 (fake) to 1
(real). The update rule decides how G learns from D's scores.

- **Losses**: D loss is how badly D tells real from fake; G loss is how badly G fools
  D. They pull against each other, so neither should fall to 0: both hovering
  (D loss around 0.5 to 1.4) is a GAN working, not stuck.
- **D(x) and D(G(z))**: D's average score on real samples and on G's samples. Healthy:
  D(x) a little above D(G(z)), both away from the edges. D(x) near 1 with D(G(z))
  near 0 means D has won and G gets little to learn from.
- **Reward mean ± std**: what G is paid for its samples (by default log D(x), so at
  most 0; the band is the spread). It should climb from very negative and then level
  off; reinforce's band is wider because its gradient is estimated from samples.
- **Gradient norms**: how hard each network is being pushed. Sudden spikes or a
  steady climb often come before a collapse.
- **Quality** (every few hundred steps, when on): how good and how varied the
  samples are. 2-D data: modes covered should rise to all of them (8 on ring8).
  Digits: classes covered towards 10, classifier FD falling towards its floor.
- **Samples**: the same noise drawn every few steps, so changes are G learning. With
  the recommended preset, digits appear in about 3,000 steps; on ring8 the orange
  points spread over all eight dark clusters.

**Warning signs**: every sample the same (mode collapse: modes or classes covered
stuck at 1 or 2), D loss at 0, or a run marked *diverged*. Try a lower learning rate,
a different seed, or switch the rule mid-run and watch the marker on the charts.
"""


def _dismiss() -> None:
    st.session_state[DISMISSED] = True


def show(full: bool = True) -> None:
    """The guide in full (first visit, no run on the page yet), else a "What am I
    looking at?" popover: once dismissed, or while a run's charts need the space."""
    if st.session_state.get(DISMISSED) or not full:
        with st.popover("What am I looking at?", icon=":material/help:"):
            st.markdown(PAGES)
            st.markdown(TEXT)
        return
    with st.container(border=True, key="guide"):
        st.markdown("#### What am I looking at?")
        st.markdown(PAGES)   # the app's first page: what the other pages are for
        st.markdown(TEXT)
        st.button("Got it, hide this", key="guide_dismiss", on_click=_dismiss,
                  help="It stays at hand under \"What am I looking at?\" at the top")
