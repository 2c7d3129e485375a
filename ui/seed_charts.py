"""Charts of a comparison over seeds: per arm, the mean ± s.e. across the finished
seeds as a band, and each seed as a thin line, so the spread is seen, not only
summarised. Pure: pandas frames in, plotly figures out (no Streamlit).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from core.engine.metric_info import METRICS
from core.jobs.arena_task import SUMMARY_METRICS
from ui.charts import PALETTE, base_layout, metric_title

POINTS = 200        # per seed line: step metrics are averaged into this many buckets
HEIGHT = 340         # room for the legend below: every mark has an entry


def metrics_to_chart(frames: list[pd.DataFrame]) -> list[str]:
    """Quality metrics first (what the verdict judges), then the summary metrics that
    have a chart, in the registry's order; only those some seed logged."""
    present = {c for f in frames for c in f.columns if f[c].notna().any()}
    quality = [m for m in METRICS if m.startswith("q_") and m in present]
    step = [m for m in SUMMARY_METRICS if m in present and METRICS.entry(m).extra.get("chart")]
    return quality + step


def seed_series(frame: pd.DataFrame, metric: str, points: int = POINTS) -> pd.Series:
    """One seed's metric by step; a per-step metric is averaged over equal buckets of
    steps (the same buckets for every seed of one config, so they line up)."""
    if metric not in frame:
        return pd.Series(dtype=float)
    rows = frame[["step", metric]].dropna()
    if metric.startswith("q_") or len(rows) <= points:
        return pd.Series(rows[metric].to_numpy(float), index=rows["step"].to_numpy())
    width = math.ceil((rows["step"].max() + 1) / points)
    bucket = rows["step"] // width
    means = rows.groupby(bucket)[metric].mean()
    return pd.Series(means.to_numpy(float), index=(means.index * width + width // 2))


def band(per_seed: dict[int, pd.Series]) -> pd.DataFrame:
    """Across seeds, per step: mean, se (nan where one seed), n."""
    wide = pd.concat(per_seed, axis=1).sort_index()
    n = wide.count(axis=1)
    se = wide.std(axis=1, ddof=1) / np.sqrt(n)
    return pd.DataFrame({"mean": wide.mean(axis=1), "se": se.where(n > 1), "n": n})


def _rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def seed_figure(by_arm: dict[str, dict[int, pd.DataFrame]], metric: str) -> go.Figure:
    """by_arm: arm -> seed -> that seed's metric log."""
    fig = go.Figure()
    for i, (arm, seeds) in enumerate(by_arm.items()):
        color = PALETTE[i % len(PALETTE)]
        per_seed = {s: seed_series(f, metric) for s, f in seeds.items()}
        per_seed = {s: v for s, v in per_seed.items() if len(v)}
        if not per_seed:
            continue
        # every mark has a legend entry: the thin seed lines once per arm (one entry
        # for the group), the band, the mean; a click on one hides the arm's group
        for j, series in enumerate(per_seed.values()):
            fig.add_trace(go.Scatter(
                x=series.index, y=series.values, mode="lines", legendgroup=arm,
                name=f"{arm}: each seed (thin)", showlegend=j == 0, opacity=0.35,
                line={"color": color, "width": 1}, hoverinfo="skip"))
        stats = band(per_seed)
        lo, hi = stats["mean"] - stats["se"], stats["mean"] + stats["se"]
        if stats["se"].notna().any():
            fig.add_trace(go.Scatter(
                x=[*stats.index, *stats.index[::-1]], y=[*hi, *lo[::-1]], fill="toself",
                fillcolor=_rgba(color, 0.2), line={"width": 0}, legendgroup=arm,
                showlegend=True, hoverinfo="skip", name=f"{arm}: ± 1 s.e. band"))
        fig.add_trace(go.Scatter(
            x=stats.index, y=stats["mean"], mode="lines+markers" if metric.startswith("q_")
            else "lines", legendgroup=arm, showlegend=True,
            name=f"{arm}: mean of {len(per_seed)} seed{'s' if len(per_seed) > 1 else ''}",
            line={"color": color, "width": 2.5}, customdata=stats["se"],
            hovertemplate=f"{arm}: %{{y:.4g}} ± %{{customdata:.2g}}<extra></extra>"))
    return base_layout(fig, metric_title(metric), HEIGHT)   # the app's chart layout


def seed_figures(by_arm: dict[str, dict[int, pd.DataFrame]]) -> list[tuple[str, go.Figure]]:
    frames = [f for seeds in by_arm.values() for f in seeds.values()]
    return [(m, seed_figure(by_arm, m)) for m in metrics_to_chart(frames)]
