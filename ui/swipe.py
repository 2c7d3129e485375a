"""An A/B swipe of two sample grids of the same z (W&B issues #8960, #4712): both in one
frame, B over A, with a vertical divider to drag; left of it A, right of it B, each side
labelled. Used by the Compare page (two arms at the snapshot step) and the Train page
(two steps of one run).

A Streamlit v2 custom component whose script is served from static/swipe.js (as
ui/live_chart.py does): a pure CSS range input cannot move a clip without script, and a
component keeps the divider where the person left it across the live view's refreshes.
Each grid's PNG is sent once per session and element; later runs send only its digest,
and an element that missed it (a remount) asks again through its state ("resync").
"""
from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

import streamlit as st

from ui.static_component import static_component

SENT = "swipe_sent"   # session key: (element key, side) -> (digest, resync) sent
MAX_WIDTH = 560       # px: 8 digits of 28 px at 2.3x, crisp (the browser scales pixelated)


_COMPONENT = static_component("ganlab_swipe", "swipe.js")


@dataclass(frozen=True)
class Side:
    label: str     # shown on its side of the frame, e.g. "A: bce · step 1,200"
    png: bytes     # a grid_png picture; both sides the same size (the same z)


def digest(png: bytes) -> str:
    return hashlib.sha1(png).hexdigest()[:16]


def payload(key: str, a: Side, b: Side, sent: dict, resync: int = 0,
            max_width: int = MAX_WIDTH) -> dict:
    """What this session sends the element now (no Streamlit: tests call it); remember
    in `sent` which pictures the element holds."""
    data: dict = {"resync": resync, "max_width": max_width}
    for name, side in (("a", a), ("b", b)):
        ident = digest(side.png)
        item = {"label": side.label, "key": ident}
        if sent.get((key, name)) != (ident, resync):
            item["src"] = "data:image/png;base64," + base64.b64encode(side.png).decode()
            sent[(key, name)] = (ident, resync)
        data[name] = item
    return data


def swipe(key: str, a: Side, b: Side, max_width: int = MAX_WIDTH) -> None:
    """Draw (or update) the swipe element `key`: A on the left of the divider, B right."""
    state = st.session_state.get(key)
    resync = int((state or {}).get("resync") or 0)
    sent = st.session_state.setdefault(SENT, {})
    _COMPONENT(key=key, data=payload(key, a, b, sent, resync, max_width),
               on_resync_change=lambda: None)
