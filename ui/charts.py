"""What the charts show (from the metric registry), and the Plotly figures that are not
live metric charts (those are ui/live_chart.py): the rlhf over-optimisation chart and
the 2-D data picture. Pure functions, no Streamlit.

Input shape of the figures: `arms` maps an arm name to one `MetricLog.decimated(...)`
dict ({"step:<name>": steps, "<name>": values, ...}, float32); a single run is one
arm named "".
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go

import core.engine.rules  # noqa: F401  (rules register their own metrics on import)
from core.engine.metric_info import METRICS
from core.quality.judges import JUDGES, judge_metric

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
           "#e377c2", "#17becf", "#7f7f7f", "#bcbd22")
DASHES = ("solid", "dash", "dot", "dashdot")
# Points per trace; MetricLog.decimated keeps min and max per bucket. 1,000 is more
# than a ~700 px wide chart can show.
MAX_POINTS = 1000
HEIGHT = 260
# The legend sits under the x-axis title at the foot of the figure; Plotly's
# automargin makes room for it.
LEGEND = {"orientation": "h", "yref": "container", "y": 0, "yanchor": "bottom", "x": 0}
GRID = "rgba(128,128,128,0.25)"   # readable on the light and the dark theme


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


def _style(arm_index: int, metric_index: int, n_arms: int) -> tuple[str, str]:
    if n_arms <= 1:
        return PALETTE[metric_index % len(PALETTE)], "solid"
    return PALETTE[arm_index % len(PALETTE)], DASHES[metric_index % len(DASHES)]


def _label(arm: str, metric: str) -> str:
    return f"{arm} · {metric}" if arm else metric


def base_layout(fig: go.Figure, title: str, height: int) -> go.Figure:
    fig.update_layout(
        title={"text": title, "font": {"size": 14}}, height=height,
        margin={"l": 10, "r": 10, "t": 36, "b": 10},
        legend=LEGEND,
        hovermode="x unified",
        uirevision="keep",   # keep zoom / legend toggles across updates where possible
        # Transparent: the page's theme (light or dark) shows through, and Streamlit
        # colours the text to match it.
        paper_bgcolor="rgba(0,0,0,0)", plot_bgcolor="rgba(0,0,0,0)")
    fig.update_xaxes(title_text="step", gridcolor=GRID, zerolinecolor=GRID)
    fig.update_yaxes(gridcolor=GRID, zerolinecolor=GRID)
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
                name=_label(arm, metric_title(metric)), text=[f"step {int(s):,}" for s in steps],
                line={"color": color, "dash": dash}))
            if metric == "q_gold":
                best = max(steps, key=lambda s: values[s])
                fig.add_annotation(x=kl[best], y=values[best],
                                   text=_label(arm, f"gold peak: step {int(best):,}"),
                                   showarrow=True, arrowhead=2, font={"size": 10})
    fig = base_layout(fig, "Over-optimisation: score vs sqrt(KL) to the start", HEIGHT + 40)
    fig.update_xaxes(title_text=metric_title("q_sqrt_kl"))
    fig.update_layout(hovermode="closest")
    return fig


# Beside the proxy and the gold score, against the same sqrt KL: what the fine-tune does
# to diversity and to realism, per kind of data (metric names; labels from the registry).
# d_fake is a per-step metric, read at the evaluation steps.
DIVERSITY = {"toy": ("q_modes", "q_reverse_kl"), "image": ("q_classes", "q_class_kl")}
REALISM = {"toy": ("q_high_quality", "d_fake"), "image": ("q_nn_dist", "q_fd", "d_fake")}
JUDGED = {"toy": (), "image": tuple(judge_metric(name) for name in JUDGES)}
OVEROPT_SIDE_HEIGHT = 190   # per row of panels


def floors_of(name: str) -> list[str]:
    """The metrics drawn with `name` on its chart (the FD's floor)."""
    return list(METRICS.names(drawn_with=name))


def overopt_side_figure(table: dict[int, dict[str, float]], kind: str,
                        peak: int | None = None) -> go.Figure | None:
    """Diversity and realism against sqrt KL to the start, one small panel per metric
    (DIVERSITY and REALISM of `kind`, "toy" or "image"), the gold peak's sqrt KL as a
    dotted line. `table` maps an evaluation step to its values (q_sqrt_kl among them).
    None when no metric has a point yet."""
    from plotly.subplots import make_subplots

    rows = [(s, r) for s, r in table.items() if "q_sqrt_kl" in r]
    panels = [(group, m) for group, names in (("Judges", JUDGED[kind]),
                                             ("Diversity", DIVERSITY[kind]),
                                             ("Realism", REALISM[kind]))
              for m in names if any(m in r for _, r in rows)]
    if not panels:
        return None
    n_rows = (len(panels) + 1) // 2
    fig = make_subplots(rows=n_rows, cols=2, horizontal_spacing=0.14,
                        vertical_spacing=0.3 / n_rows if n_rows > 1 else 0.0,
                        subplot_titles=[f"{g}: {metric_title(m)}" for g, m in panels])
    peak_kl = table.get(peak, {}).get("q_sqrt_kl") if peak is not None else None
    for i, (group, name) in enumerate(panels):
        at = {"row": i // 2 + 1, "col": i % 2 + 1}
        color = {"Judges": PALETTE[0], "Diversity": PALETTE[2]}.get(group, PALETTE[4])
        for line, dash in [(name, "solid")] + [(f, "dot") for f in floors_of(name)]:
            points = [(r["q_sqrt_kl"], r[line], s) for s, r in rows if line in r]
            if not points:
                continue
            x, y, steps = zip(*points)
            # markers, joined in step order by a faint line: sqrt KL need not grow
            # monotonically (near the KL anchor's equilibrium it wanders)
            fig.add_trace(go.Scatter(
                x=x, y=y, mode="lines+markers" if dash == "solid" else "lines",
                name=metric_title(line), text=[f"step {s:,}" for s in steps],
                line={"color": GRID if dash == "solid" else "#7f7f7f", "dash": dash,
                      "width": 1},
                marker={"size": 5, "color": color}), **at)
        if peak_kl is not None:
            fig.add_vline(x=peak_kl, line={"color": "#ff7f0e", "dash": "dot", "width": 1.5},
                          **at)
    fig = base_layout(fig, "", OVEROPT_SIDE_HEIGHT * n_rows + 40)
    fig.update_annotations(font_size=12)   # the panel titles
    fig.update_xaxes(title_text=None)
    bottom = {}   # the x title under the bottom panel of each column
    for i in range(len(panels)):
        bottom[i % 2 + 1] = i // 2 + 1
    for col, row in bottom.items():
        fig.update_xaxes(title_text=metric_title("q_sqrt_kl"), title_font_size=11,
                         row=row, col=col)
    fig.update_layout(hovermode="closest", showlegend=False,
                      margin={"l": 10, "r": 10, "t": 30, "b": 10})
    return fig


TOY_CAPTION = ("Black: real points (drawn on top) · orange: samples from the fixed noise · "
               "background: D(x), from blue (0, D says fake) to red (1, D says real), as "
               "the colour bar shows")


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
    fig = base_layout(fig, title, height)
    fig.update_layout(hovermode="closest", showlegend=False)
    fig.update_xaxes(title_text=None)
    return fig
