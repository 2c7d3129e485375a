"""The Plotly picture of an update field on 2-D data (ui/gradient_view.py shows it): D's
decision surface as a faint filled contour with its D = 0.5 line, real points faint,
the samples, and one arrow per sample. Pure functions, no Streamlit.

Arrows are one Scatter of line segments (shaft and a two-stroke head per arrow, None
between arrows): a few hundred arrows stay one trace, and no annotations are needed.
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from ui.charts import GRID

SAMPLE_COLOR = "#ff7f0e"   # the samples' orange, as in the 2-D sample pictures
ARROW_COLOR = "#00a884"    # a green that reads on red, blue, light and dark backgrounds
REAL_COLOR = "#7f7f7f"
ARROW_SHARE = 0.08         # the 90th-percentile arrow is this share of the axis span
HEAD = 0.3                 # arrowhead length as a share of its arrow (capped below)


def view_ranges(extent: tuple, points: list[np.ndarray], limit: float = 2.0) -> tuple:
    """A square (x0, x1, y0, y1) around the data's extent and every sample, grown at
    most `limit` times the extent's half-width (far outliers are left off the view)."""
    x0, x1, y0, y1 = (float(v) for v in extent)
    cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0) / 2
    pts = np.concatenate([p for p in points if len(p)]) if points else np.zeros((0, 2))
    if len(pts):
        reach = float(np.abs(pts - [cx, cy]).max()) * 1.05
        half = min(max(half, reach), limit * half)
    return (cx - half, cx + half, cy - half, cy + half)


def arrow_scale(vectors: list[np.ndarray], span: float) -> float:
    """One magnification for every panel (so lengths compare across rules): the 90th
    percentile arrow of all of them is drawn ARROW_SHARE of the span long."""
    lengths = np.concatenate([np.linalg.norm(v, axis=1) for v in vectors])
    ref = float(np.percentile(lengths, 90)) if len(lengths) else 0.0
    return ARROW_SHARE * span / ref if ref > 0 else 1.0


def arrow_path(start: np.ndarray, vec: np.ndarray, head_max: float) -> tuple[list, list]:
    """x and y lists of every arrow as segments (start -> tip, then the head's two
    strokes), None between strokes."""
    tip = start + vec
    length = np.linalg.norm(vec, axis=1, keepdims=True)
    unit = np.divide(vec, length, out=np.zeros_like(vec), where=length > 0)
    size = np.minimum(HEAD * length, head_max)
    back = -unit * size
    c, s = np.cos(np.radians(25)), np.sin(np.radians(25))
    left = tip + np.stack([c * back[:, 0] - s * back[:, 1], s * back[:, 0] + c * back[:, 1]], 1)
    right = tip + np.stack([c * back[:, 0] + s * back[:, 1], -s * back[:, 0] + c * back[:, 1]], 1)
    nan = np.full_like(start, np.nan)
    path = np.stack([start, tip, left, nan, tip, right, nan], 1).reshape(-1, 2)
    xs = [None if np.isnan(v) else float(v) for v in path[:, 0]]
    ys = [None if np.isnan(v) else float(v) for v in path[:, 1]]
    return xs, ys


def field_figure(real: np.ndarray, x: np.ndarray, arrows: np.ndarray, heat: np.ndarray,
                 ranges: tuple, scale: float, *, title: str, height: int = 420) -> go.Figure:
    """One rule's panel: `heat` is D(x) on a grid over `ranges` (rows y, columns x),
    `arrows` the per-sample vectors, drawn `scale` times their length."""
    x0, x1, y0, y1 = ranges
    res_y, res_x = heat.shape
    gx = np.linspace(x0, x1, res_x, dtype=np.float32)
    gy = np.linspace(y0, y1, res_y, dtype=np.float32)
    # plain lists for what changes on a step (D's surface, the samples): Plotly keeps
    # numpy arrays encoded in the figure's data, lists are readable there (the e2e test)
    z = np.round(np.asarray(heat, dtype=np.float64), 4).tolist()
    fig = go.Figure()
    fig.add_trace(go.Contour(
        x=gx, y=gy, z=z, name="D(x)", zmin=0.0, zmax=1.0, colorscale="RdBu",
        reversescale=True, opacity=0.45, showscale=False, hoverinfo="skip",
        contours={"start": 0.0, "end": 1.0, "size": 0.1}, line={"width": 0}))
    fig.add_trace(go.Contour(   # the decision boundary, D = 0.5
        x=gx, y=gy, z=z, name="D = 0.5", showscale=False, hoverinfo="skip",
        contours={"start": 0.5, "end": 0.5, "size": 1.0, "coloring": "lines"},
        colorscale=[[0, REAL_COLOR], [1, REAL_COLOR]], line={"width": 1, "dash": "dash"}))
    fig.add_trace(go.Scatter(x=real[:, 0].astype(np.float32), y=real[:, 1].astype(np.float32),
                             mode="markers", name="real", hoverinfo="skip",
                             marker={"size": 4, "color": REAL_COLOR, "opacity": 0.5}))
    xs, ys = arrow_path(x, arrows * scale, head_max=0.025 * (x1 - x0))
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name="arrows", hoverinfo="skip",
                             line={"color": ARROW_COLOR, "width": 1.3}))
    fig.add_trace(go.Scatter(x=x[:, 0].astype(float).tolist(), y=x[:, 1].astype(float).tolist(),
                             mode="markers", name="samples",
                             marker={"size": 5, "color": SAMPLE_COLOR},
                             hovertemplate="(%{x:.2f}, %{y:.2f})<extra></extra>"))
    fig.update_xaxes(range=[x0, x1], constrain="domain", gridcolor=GRID, zerolinecolor=GRID)
    fig.update_yaxes(range=[y0, y1], scaleanchor="x", scaleratio=1, constrain="domain",
                     constraintoward="top", gridcolor=GRID, zerolinecolor=GRID)
    fig.update_layout(
        title={"text": title, "font": {"size": 14}}, height=height, showlegend=False,
        margin={"l": 10, "r": 10, "t": 36, "b": 10}, hovermode="closest",
        # transparent: the page's theme (light or dark) shows through, as ui/charts.py
        paper_bgcolor="rgba(0,0,0,0)", plot_bgcolor="rgba(0,0,0,0)")
    return fig
