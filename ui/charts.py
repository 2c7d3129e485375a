"""Plotly figure builders: pure functions of decimated metric dicts, no Streamlit.

Input shape: `arms` maps an arm name to one `MetricLog.decimated(...)` dict
({"step:<name>": steps, "<name>": values, ...}, float32). A single run is one arm
named "" (traces are named by metric, one colour per metric); with several arms
(the Compare page) each arm gets one colour and each metric a dash style.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

import core.rules  # noqa: F401  (rules register their own metrics on import)
from core.metric_info import METRICS

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
           "#e377c2", "#17becf", "#7f7f7f", "#bcbd22")
DASHES = ("solid", "dash", "dot", "dashdot")
# Points per trace; MetricLog.decimated keeps min and max per bucket. 1,000 is more
# than a ~700 px wide chart can show, and half the payload and redraw of 2,000.
MAX_POINTS = 1000
HEIGHT = 260
# The legend sits under the x-axis title ("step") at the foot of the figure, and
# Plotly's automargin makes room for it; more rows of legend make the figure taller
# so the plot area keeps its size. Entries per row: about 3 at a ~450 px chart width.
LEGEND = {"orientation": "h", "yref": "container", "y": 0, "yanchor": "bottom", "x": 0}
LEGEND_PER_ROW = 3
LEGEND_ROW_PX = 22


@dataclass(frozen=True)
class ChartSpec:
    title: str
    metrics: tuple[str, ...]
    band: str | None = None            # std column drawn as mean +- std around metrics[0]
    y_range: tuple[float, float] | None = None


QUALITY_PREFIX = "q_"


def chart_specs(columns=None) -> list[ChartSpec]:
    """The step-metric charts, in the metric registry's order, grouped by each metric's
    `chart`; a logged column that nobody declared gets a chart of its own."""
    groups: dict[str, list] = {}
    for entry in METRICS.entries():
        title = entry.extra.get("chart")
        if title and title != "Quality" and not entry.extra.get("band_of"):
            groups.setdefault(title, []).append(entry)
    specs = [ChartSpec(title, tuple(e.name for e in entries),
                       band=entries[0].extra.get("band"),
                       y_range=entries[0].extra.get("y_range"))
             for title, entries in groups.items()]
    for name in sorted(columns or ()):
        if name not in METRICS and not name.startswith(QUALITY_PREFIX):
            specs.append(ChartSpec(name, (name,)))
    return specs


def chart_columns(columns=None) -> list[str]:
    """Every column the charts need (pass to MetricLog.decimated)."""
    names: list[str] = []
    for spec in chart_specs(columns):
        names += [*spec.metrics, *([spec.band] if spec.band else [])]
    return names


def quality_columns(columns) -> list[str]:
    """The quality-metric columns (logged every M steps, NaN elsewhere), in the
    registry's order."""
    present = set(columns)
    known = [m for m in METRICS if m.startswith(QUALITY_PREFIX) and m in present]
    return known + sorted(c for c in present
                          if c.startswith(QUALITY_PREFIX) and c not in METRICS)


def metric_title(name: str) -> str:
    """A metric's label with its unit and which way is better, for panel titles."""
    entry = METRICS.get(name)
    if entry is None:
        return name
    arrow = {"higher": " ↑", "lower": " ↓"}.get(entry.better or "", "")
    return entry.title + (f" ({entry.unit})" if entry.unit else "") + arrow


def quality_help(columns) -> str:
    """One line per quality metric shown: what it measures (from the registry)."""
    return "\n".join(f"- **{metric_title(m)}**: {METRICS.entry(m).help}"
                      for m in quality_columns(columns) if m in METRICS)


def has_data(arms: dict[str, dict], metrics) -> bool:
    return any(len(d.get(m, ())) for d in arms.values() for m in metrics)


def ema(values: np.ndarray, smoothing: float) -> np.ndarray:
    """Debiased exponential moving average per point (TensorBoard's smoothing).

    Per point, not per step: decimated points are evenly spread over the run, so the
    slider smooths a long run as visibly as a short one.
    """
    values = np.asarray(values, dtype=np.float64)
    if smoothing <= 0 or len(values) == 0:
        return values.astype(np.float32)
    out = np.empty_like(values)
    acc, weight = 0.0, 0.0
    for i, v in enumerate(values.tolist()):
        acc = smoothing * acc + (1.0 - smoothing) * v
        weight = smoothing * weight + (1.0 - smoothing)
        out[i] = acc / weight
    return out.astype(np.float32)


def _style(arm_index: int, metric_index: int, n_arms: int) -> tuple[str, str]:
    if n_arms <= 1:
        return PALETTE[metric_index % len(PALETTE)], "solid"
    return PALETTE[arm_index % len(PALETTE)], DASHES[metric_index % len(DASHES)]


def _label(arm: str, metric: str) -> str:
    return f"{arm} · {metric}" if arm else metric


def _base_layout(fig: go.Figure, title: str, height: int) -> go.Figure:
    fig.update_layout(
        title={"text": title, "font": {"size": 14}}, height=height,
        margin={"l": 10, "r": 10, "t": 36, "b": 10},
        legend=LEGEND,
        hovermode="x unified",
        uirevision="keep",   # keep zoom / legend toggles across updates where possible
        # Plain colours instead of a template: templates are deep-copied per figure,
        # which was half the cost of a chart update.
        paper_bgcolor="white", plot_bgcolor="white")
    fig.update_xaxes(title_text="step", gridcolor="#eee", zerolinecolor="#ddd")
    fig.update_yaxes(gridcolor="#eee", zerolinecolor="#ddd")
    return fig


def _add_events(fig: go.Figure, events) -> None:
    """Vertical dotted lines with labels at rule switches / resumes."""
    for step, text in events or ():
        fig.add_vline(x=float(step), line_width=1, line_dash="dot", line_color="#555",
                      annotation_text=text, annotation_position="top left",
                      annotation_font_size=10)


def metric_figure(arms: dict[str, dict], metrics, *, title: str = "", smoothing: float = 0.0,
                  events=None, band: str | None = None, y_range=None,
                  height: int = HEIGHT) -> go.Figure:
    """Line chart of `metrics` for every arm: raw faint, EMA-smoothed bold.

    With `band`, the first metric also gets a shaded mean +- band region (the band
    column is interpolated onto the metric's steps: decimation keeps each column's
    own extremes, so their step axes differ).
    """
    fig = go.Figure()
    n_arms = len(arms)
    for a, (arm, data) in enumerate(arms.items()):
        for m, metric in enumerate(metrics):
            x, y = data.get("step:" + metric), data.get(metric)
            if y is None or len(y) == 0:
                continue
            color, dash = _style(a, m, n_arms)
            label = _label(arm, metric)
            if band and m == 0 and len(data.get(band, ())):
                _add_band(fig, x, y, data["step:" + band], data[band], color, label)
            smooth = smoothing > 0
            fig.add_trace(go.Scatter(
                x=x, y=y, mode="lines", name=label, legendgroup=label,
                line={"color": color, "width": 1 if smooth else 1.6, "dash": dash},
                opacity=0.25 if smooth else 1.0, showlegend=not smooth,
                hoverinfo="skip" if smooth else None))
            if smooth:
                fig.add_trace(go.Scatter(
                    x=x, y=ema(y, smoothing), mode="lines", name=label,
                    legendgroup=label, line={"color": color, "width": 2.2, "dash": dash}))
    _add_events(fig, events)
    if y_range:
        fig.update_yaxes(range=list(y_range))
    entries = sum(1 for t in fig.data if t.showlegend is not False)
    height += LEGEND_ROW_PX * (max(1, math.ceil(entries / LEGEND_PER_ROW)) - 1)
    return _base_layout(fig, title, height)


def _add_band(fig, x, y, bx, by, color, label) -> None:
    std = np.interp(x, bx, by).astype(np.float32)
    upper, lower = (y + std).astype(np.float32), (y - std).astype(np.float32)
    fill = _rgba(color, 0.15)
    fig.add_trace(go.Scatter(x=x, y=upper, mode="lines", line={"width": 0},
                             legendgroup=label, showlegend=False, hoverinfo="skip"))
    # no legend entry of its own (the chart title says "± std"); it toggles with its line
    fig.add_trace(go.Scatter(x=x, y=lower, mode="lines", line={"width": 0}, fill="tonexty",
                             fillcolor=fill, legendgroup=label, name=f"{label} ± std",
                             showlegend=False, hoverinfo="skip"))


def _rgba(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    r, g, b = (int(h[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def quality_figure(arms: dict[str, dict], metrics, *, events=None,
                   cols: int = 3) -> go.Figure:
    """Small multiples, one panel per quality metric (their scales differ)."""
    metrics = list(metrics)
    rows = max(1, math.ceil(len(metrics) / cols))
    fig = make_subplots(rows=rows, cols=min(cols, max(1, len(metrics))),
                        subplot_titles=[metric_title(m) for m in metrics],
                        horizontal_spacing=0.08,
                        vertical_spacing=0.18 if rows > 1 else 0.1)
    n_arms = len(arms)
    for m, metric in enumerate(metrics):
        row, col = m // cols + 1, m % cols + 1
        for a, (arm, data) in enumerate(arms.items()):
            x, y = data.get("step:" + metric), data.get(metric)
            if y is None or len(y) == 0:
                continue
            color = PALETTE[a % len(PALETTE)] if n_arms > 1 else PALETTE[m % len(PALETTE)]
            # several arms: one colour and one legend entry per arm, across the panels
            fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers",
                                     name=arm if n_arms > 1 else metric, legendgroup=arm,
                                     line={"color": color, "width": 1.6},
                                     marker={"size": 4}, showlegend=n_arms > 1 and m == 0),
                          row=row, col=col)
    for step, text in events or ():
        fig.add_vline(x=float(step), line_width=1, line_dash="dot", line_color="#555")
    fig = _base_layout(fig, "Quality", 220 * rows + 40)
    fig.update_xaxes(title_text=None)
    fig.update_layout(margin={"t": 64})   # the panel titles go under the figure's title
    return fig


OVEROPT = ("q_sqrt_kl", "q_rm", "q_gold")


def overoptimisation_figure(arms: dict[str, dict]) -> go.Figure:
    """Proxy (reward model) and gold (oracle) score against sqrt(KL) to the start, per
    arm; the gold peak is marked as the suggested checkpoint (Gao et al.: the proxy
    keeps rising while the gold score peaks and falls)."""
    fig = go.Figure()
    for a, (arm, data) in enumerate(arms.items()):
        kl = dict(zip(np.asarray(data.get("step:q_sqrt_kl", ())).tolist(),
                      np.asarray(data.get("q_sqrt_kl", ())).tolist()))
        for m, metric in enumerate(("q_rm", "q_gold")):
            steps = [s for s in np.asarray(data.get("step:" + metric, ())).tolist() if s in kl]
            values = dict(zip(np.asarray(data.get("step:" + metric, ())).tolist(),
                              np.asarray(data.get(metric, ())).tolist()))
            if not steps:
                continue
            color, dash = _style(a, m, max(2, len(arms)))
            fig.add_trace(go.Scatter(
                x=[kl[s] for s in steps], y=[values[s] for s in steps], mode="lines+markers",
                name=_label(arm, metric_title(metric)), text=[f"step {s:,}" for s in steps],
                line={"color": color, "dash": dash}))
            if metric == "q_gold":
                best = max(steps, key=lambda s: values[s])
                fig.add_annotation(x=kl[best], y=values[best], text=f"gold peak: step {best:,}",
                                   showarrow=True, arrowhead=2, font={"size": 10})
    fig = _base_layout(fig, "Over-optimisation: score vs sqrt(KL) to the start", HEIGHT + 40)
    fig.update_xaxes(title_text="sqrt KL to the start")
    fig.update_layout(hovermode="closest")
    return fig


TOY_CAPTION = ("Black: real points · orange: samples from the fixed noise · background: "
               "D(x), red = D says real, blue = fake")


def all_figures(decimated, columns, *, smoothing: float, events) -> list[tuple[str, go.Figure]]:
    """(name, figure) for every chart that has data: chart_specs(), then the Quality group.

    `decimated(names)` gives {arm: decimated view} of those columns (one arm on the
    Train page, every arm on the Compare page); `columns` are all logged column names.
    """
    specs = chart_specs(columns)
    arms = decimated(chart_columns(columns))
    out = [(spec.metrics[0], metric_figure(arms, spec.metrics, title=spec.title,
                                           smoothing=smoothing, events=events,
                                           band=spec.band, y_range=spec.y_range))
           for spec in specs if has_data(arms, spec.metrics)]
    quality = quality_columns(columns)
    if quality:
        q_arms = decimated(quality)
        if has_data(q_arms, quality):
            out.append(("quality", quality_figure(q_arms, quality, events=events)))
    if "q_sqrt_kl" in quality:
        out.append(("overopt", overoptimisation_figure(decimated(list(OVEROPT)))))
    return out


def toy_figure(real: np.ndarray, generated: np.ndarray, heatmap: np.ndarray | None,
               extent, *, title: str = "", height: int = 360) -> go.Figure:
    """2-D data: real vs generated points over a heatmap of D's output.

    No legend or colour bar (a narrow panel has no room for them): show TOY_CAPTION,
    or the page's own wording of it, under the figure."""
    fig = go.Figure()
    if heatmap is not None:
        xmin, xmax, ymin, ymax = extent
        res_y, res_x = heatmap.shape
        fig.add_trace(go.Heatmap(
            z=np.asarray(heatmap, dtype=np.float32),
            x=np.linspace(xmin, xmax, res_x, dtype=np.float32),
            y=np.linspace(ymin, ymax, res_y, dtype=np.float32),
            zmin=0.0, zmax=1.0, colorscale="RdBu", reversescale=True, opacity=0.6,
            showscale=False, hoverinfo="skip"))   # a colour bar spans the whole plot
            # height, not the square the axes are constrained to: the caption says it
    fig.add_trace(go.Scatter(x=real[:, 0].astype(np.float32), y=real[:, 1].astype(np.float32),
                               mode="markers", name="real",
                               marker={"size": 4, "color": "#222", "opacity": 0.5}))
    fig.add_trace(go.Scatter(x=generated[:, 0].astype(np.float32),
                               y=generated[:, 1].astype(np.float32), mode="markers",
                               name="generated", marker={"size": 4, "color": "#ff7f0e",
                                                         "opacity": 0.7}))
    if extent is not None:
        fig.update_xaxes(range=[extent[0], extent[1]], constrain="domain")
        # both axes constrained: the plot area shrinks to the data's square (under the
        # title) rather than the axis ranges growing past the heatmap
        fig.update_yaxes(range=[extent[2], extent[3]], scaleanchor="x", scaleratio=1,
                         constrain="domain", constraintoward="top")
    fig = _base_layout(fig, title, height)
    fig.update_layout(hovermode="closest", showlegend=False)
    fig.update_xaxes(title_text=None)
    return fig


def figure_bytes(fig: go.Figure) -> int:
    """Size of the JSON Streamlit sends for a figure (used by the bench note)."""
    return len(fig.to_json().encode())
