"""Figures of a sweep's grid (core/jobs/sweep_read.py): per metric, the mean over
seeds of every cell, one panel per arm, with the seed count and spread on hover.
Two swept settings: a heatmap; one, or more than two: a line over the cells. Every
point carries its cell index as customdata[0], so a click opens that cell.
Pure: a table in, plotly figures out (no Streamlit).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.engine.metric_info import METRICS
from core.jobs.sweep import _fmt
from ui.charts import GRID, PALETTE, base_layout, metric_title

HEIGHT = 320


def _num(x: float, digits: str = ".4g") -> str:
    return "–" if x != x else format(x, digits)


def hover(row) -> str:
    """'2.5 ± 1.5 s.e. · sd 2.1 · 1 to 4 · 2 seeds' (one seed: no spread to show)."""
    if not row["n"]:
        return "no value yet (no finished seed, or undefined on every seed)"
    seeds = f"{int(row['n'])} seed" + ("s" if row["n"] != 1 else "")
    if row["n"] < 2:
        return f"{_num(row['mean'])} · {seeds}"
    return (f"{_num(row['mean'])} ± {_num(row['se'], '.2g')} s.e. · sd {_num(row['sd'], '.3g')}"
            f" · {_num(row['min'])} to {_num(row['max'])} · {seeds}")


def _rows(table: pd.DataFrame, metric: str, arm: str) -> dict[int, pd.Series]:
    part = table[(table["metric"] == metric) & (table["arm"] == arm)]
    return {int(r["cell"]): r for _, r in part.iterrows()}


def _colorscale(metric: str) -> str:
    """Brighter is better whichever way the metric points."""
    entry = METRICS.get(metric)
    return "Viridis_r" if entry is not None and entry.better == "lower" else "Viridis"


def heatmap_figure(table: pd.DataFrame, grid: list[tuple[str, list]], arms: list[str],
                   metric: str) -> go.Figure:
    """Rows: the first setting's values; columns: the second's; a panel per arm on one
    colour scale. Cells are numbered in the sweep's order (row-major)."""
    (ykey, yvals), (xkey, xvals) = grid
    ys, xs = [_fmt(v) for v in yvals], [_fmt(v) for v in xvals]
    fig = make_subplots(rows=1, cols=len(arms), subplot_titles=arms, shared_yaxes=True,
                        horizontal_spacing=0.06)
    values = table.loc[table["metric"] == metric, "mean"]
    finite = values[np.isfinite(values)]
    lo, hi = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)
    for a, arm in enumerate(arms):
        rows = _rows(table, metric, arm)
        z = np.full((len(ys), len(xs)), np.nan)
        custom = [[[i * len(xs) + j, "not finished"] for j in range(len(xs))]
                  for i in range(len(ys))]
        for i in range(len(ys)):
            for j in range(len(xs)):
                row = rows.get(i * len(xs) + j)
                if row is not None:
                    z[i, j] = row["mean"]
                    custom[i][j][1] = hover(row)
        fig.add_trace(go.Heatmap(
            z=z, x=xs, y=ys, zmin=lo, zmax=hi if hi > lo else lo + 1e-9,
            colorscale=_colorscale(metric), showscale=a == len(arms) - 1,
            colorbar={"thickness": 12, "len": 0.9}, texttemplate="%{z:.3g}", xgap=2, ygap=2,
            name=arm, hoverinfo="skip"), row=1, col=a + 1)
        # Streamlit selects only points of selectable traces (a heatmap is not): a
        # clear marker on each cell's centre takes the hover and the click
        fig.add_trace(go.Scatter(
            x=[x for _ in ys for x in xs], y=[y for y in ys for _ in xs], mode="markers",
            marker={"size": 30, "symbol": "square", "color": "rgba(0,0,0,0)"},
            customdata=[c for row in custom for c in row], showlegend=False, name=arm,
            selected={"marker": {"opacity": 1}}, unselected={"marker": {"opacity": 1}},
            hovertemplate=(f"<b>{arm}</b><br>{ykey} = %{{y}}, {xkey} = %{{x}}<br>"
                           "%{customdata[1]}<extra></extra>")), row=1, col=a + 1)
        fig.update_xaxes(title_text=xkey, type="category", row=1, col=a + 1)
    fig.update_yaxes(type="category", gridcolor=GRID)
    fig.update_yaxes(title_text=ykey, row=1, col=1)
    return _finish(fig, metric)


def line_figure(table: pd.DataFrame, grid: list[tuple[str, list]], arms: list[str],
                metric: str, labels: list[str]) -> go.Figure:
    """One setting: its values along x. More than two: each cell's label along x (the
    sweep's order). Mean per arm, error bars ± one s.e."""
    one = len(grid) == 1
    xs = [_fmt(v) for v in grid[0][1]] if one else labels
    fig = go.Figure()
    for a, arm in enumerate(arms):
        rows = _rows(table, metric, arm)
        cells = [i for i in range(len(xs)) if i in rows]
        se = [rows[i]["se"] for i in cells]
        fig.add_trace(go.Scatter(
            x=[xs[i] for i in cells], y=[rows[i]["mean"] for i in cells], name=arm,
            mode="lines+markers", line={"color": PALETTE[a % len(PALETTE)]},
            marker={"size": 10},
            error_y={"type": "data", "array": [0.0 if math.isnan(s) else s for s in se],
                     "visible": True, "thickness": 1},
            customdata=[[i, hover(rows[i])] for i in cells],
            hovertemplate=f"<b>{arm}</b> · %{{x}}<br>%{{customdata[1]}}<extra></extra>"))
    fig.update_xaxes(type="category", title_text=grid[0][0] if one else
                     " · ".join(k for k, _ in grid))
    return _finish(fig, metric)


def _finish(fig: go.Figure, metric: str) -> go.Figure:
    x_titles = {ax: fig.layout[ax].title.text for ax in fig.layout if ax.startswith("xaxis")}
    fig = base_layout(fig, metric_title(metric) + " · mean over seeds", HEIGHT)
    for ax, text in x_titles.items():   # base_layout titles every x axis "step"
        fig.layout[ax].title.text = text
    # hoverdistance -1: the nearest point wherever the mouse is (a heatmap's cell)
    fig.update_layout(hovermode="closest", clickmode="event+select", hoverdistance=-1,
                      margin={"l": 10, "r": 10, "t": 56, "b": 10})
    fig.update_annotations(font_size=12)   # the arms' panel titles
    return fig


def sweep_figures(table: pd.DataFrame, grid: list[tuple[str, list]], arms: list[str],
                  metrics: list[str], labels: list[str]) -> list[tuple[str, go.Figure]]:
    if len(grid) == 2:
        return [(m, heatmap_figure(table, grid, arms, m)) for m in metrics]
    return [(m, line_figure(table, grid, arms, m, labels)) for m in metrics]
