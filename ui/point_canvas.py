"""A canvas to draw 2-D points on: a Streamlit custom component (v2), static/point_canvas.js.

Click or drag to add points (a few per spot, with a small spread), Undo the last stroke,
Clear all; the square is [-1, 1] x [-1, 1]. Why a component and not a Plotly figure with
selection events: Plotly reports clicks on existing markers only, never on empty space,
and a v2 component keeps its element (and the drawing in it) across reruns by key.
The script is served from static/ (as ui/live_chart.py does), so reruns do not re-send it.
"""
from __future__ import annotations

import streamlit as st

from ui.static_component import static_component

MAX_DRAWN = 5_000   # points one drawing holds (a drawing is for a few hundred)


_COMPONENT = static_component("ganlab_point_canvas", "point_canvas.js")


def strokes_of(key: str) -> list:
    """The strokes the browser last sent for the canvas `key` (lists of [x, y])."""
    state = st.session_state.get(key) or {}
    strokes = state.get("strokes") if hasattr(state, "get") else None
    return strokes if isinstance(strokes, list) else []


def point_canvas(key: str) -> list[tuple[float, float]]:
    """Draw the canvas; return every drawn point (x, y) in canvas units. What the
    browser sends is checked: anything but pairs of finite numbers is dropped."""
    strokes = strokes_of(key)
    _COMPONENT(key=key, data={"strokes": strokes, "max": MAX_DRAWN},
               on_strokes_change=lambda: None)
    out = []
    for stroke in strokes:
        for p in stroke if isinstance(stroke, list) else ():
            if (isinstance(p, list) and len(p) == 2
                    and all(isinstance(v, (int, float)) and abs(v) <= 1.5 for v in p)):
                out.append((float(p[0]), float(p[1])))
    return out[:MAX_DRAWN]
