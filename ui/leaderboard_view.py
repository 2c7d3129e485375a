"""The Feedback page's leaderboard: blind votes between any generators of one data set,
ranked by Bradley-Terry with bootstrap intervals (core/feedback/leaderboard.py). Each
vote is a blind test (one sample of each, sides at random), so it is stored, undone and
exported like one; the next pair is the one the ranking is least sure of."""
from __future__ import annotations

import numpy as np
import streamlit as st

from core.feedback.leaderboard import next_pair, ranking, votes_of
from core.feedback.preferences import PreferenceStore
from ui import blind_test as bt
from ui.text import plain

TARGET = 150   # votes: three generators a training run apart are ranked by then


def pick(labels: list[str]) -> list[str]:
    return st.multiselect("Generators to rank", labels, key="fb_lb",
                          default=[x for x in labels if x.startswith("file ")][:3],
                          help="Checkpoints, runs or arms of one data set; votes are blind")


def page(db: PreferenceStore, sources: dict, chosen: list[str], judge: str) -> None:
    if len(chosen) < 2:
        st.info("Choose two or more generators in the sidebar to rank them.")
        return
    try:
        found = {label: sources[label]() for label in chosen}
    except Exception as exc:   # a run that is gone, a damaged file
        st.error(f"Cannot sample: {plain(exc)}", icon=":material/error:")
        return
    datas = {s.data.name for s in found.values()}
    if len(datas) > 1:
        st.error(plain(f"These generators sample different data sets ({', '.join(sorted(datas))}); "
                       "rank generators of one data set"), icon=":material/error:")
        return
    ids = [found[label].fingerprint for label in chosen]
    votes = votes_of(db.blind_judgements(), ids)
    current = st.session_state.get(bt.CURRENT)
    if current is None or {current["base"], current["new"]} - set(chosen) \
            or current.get("mode") != "leaderboard":
        i, j = next_pair(votes, len(chosen), np.random.default_rng())
        current = bt.new_comparison(sources, chosen[j], chosen[i])
        current["mode"] = "leaderboard"
        st.session_state[bt.CURRENT] = current
    st.progress(min(1.0, len(votes) / TARGET),
                text=f"{len(votes)} votes between these {len(chosen)} generators (everyone's)")
    st.markdown("**Which sample is better?**")
    bt.fv.show_samples(current["shown"], current["data"], bt.NAMES, key="fb_lb_points")
    bt.buttons(db, current, judge, None)
    st.caption("One sample of each of two generators, in random order; the pair asked next "
               "is the one the ranking is least sure of. Keys: Left / Right, Down = equal, "
               "S = skip, U = undo.")
    standings(chosen, votes)


def standings(chosen: list[str], votes) -> None:
    st.subheader("Ranking")
    rows = [{"rank": r + 1, "generator": chosen[s.index],
             "strength": round(s.score, 2),
             "95% interval": f"{s.low:+.2f} to {s.high:+.2f}" if s.votes else "–",
             "votes": s.votes}
            for r, s in enumerate(ranking(votes, len(chosen)))]
    st.dataframe(rows, hide_index=True, key="fb_lb_table")
    st.caption("Bradley-Terry strengths (log odds of winning against an average one; "
               "ties count half), intervals from 200 bootstrap resamples of the votes. Two "
               "generators whose intervals do not overlap are told apart.")
