"""ui/charts.py builds Plotly figures without Streamlit: payload shape and size."""
from __future__ import annotations

import json

import numpy as np

from core.metrics import MetricLog
from ui import charts


def make_log(n: int, spike_at: int | None = None) -> MetricLog:
    log = MetricLog()
    rng = np.random.default_rng(0)
    for i in range(1, n + 1):
        row = {c: float(rng.normal()) for c in charts.chart_columns()}
        if i == spike_at:
            row["d_loss"] = 1000.0
        log.append(i, row)
    return log


def traces(fig):
    return json.loads(fig.to_json())["data"]


def test_long_run_is_decimated_to_float32_and_keeps_spikes():
    log = make_log(20000, spike_at=12345)
    data = log.decimated(charts.chart_columns(), charts.MAX_POINTS)
    fig = charts.metric_figure({"": data}, ("d_loss", "g_loss"), smoothing=0.0)
    for trace in traces(fig):
        assert trace["x"]["dtype"] == "f4" and trace["y"]["dtype"] == "f4"
    assert all(len(t.y) <= charts.MAX_POINTS + 1 for t in fig.data)
    assert max(fig.data[0].y) == 1000.0, "min/max decimation keeps the spike"
    assert charts.figure_bytes(fig) < 60_000


def test_smoothing_draws_raw_faint_and_smoothed_bold():
    data = make_log(300).decimated(["d_loss"])
    fig = charts.metric_figure({"": data}, ("d_loss",), smoothing=0.9)
    raw, smooth = fig.data
    assert raw.opacity < 0.5 and raw.showlegend is False
    assert smooth.line.width > raw.line.width
    assert np.std(smooth.y) < np.std(raw.y)


def test_ema_is_debiased_and_flat_on_constants():
    assert np.allclose(charts.ema(np.full(10, 3.0), 0.9), 3.0)
    assert np.array_equal(charts.ema(np.arange(10.0), 0.0), np.arange(10.0))
    assert charts.ema(np.array([0.0, 1.0]), 0.5)[1] == np.float32(2 / 3)


def test_rule_switch_markers_and_band():
    log = make_log(200)
    log.add_event(120, "rule: bce -> reinforce")
    data = log.decimated(charts.chart_columns())
    fig = charts.metric_figure({"": data}, ("reward_mean",), band="reward_std",
                               events=log.events)
    layout = json.loads(fig.to_json())["layout"]
    assert layout["shapes"][0]["x0"] == 120
    assert "bce -> reinforce" in layout["annotations"][0]["text"]
    assert any(t.fill == "tonexty" for t in fig.data)


def test_several_arms_get_one_colour_each():
    arms = {name: make_log(100).decimated(["d_loss", "g_loss"]) for name in ("bce", "rl")}
    fig = charts.metric_figure(arms, ("d_loss", "g_loss"))
    colours = {t.name: t.line.color for t in fig.data}
    assert colours["bce · d_loss"] == colours["bce · g_loss"]
    assert colours["bce · d_loss"] != colours["rl · d_loss"]
    assert {t.line.dash for t in fig.data} == {"solid", "dash"}


def test_quality_columns_and_figure():
    log = make_log(50)
    log.set_at_step(25, {"q_modes": 3.0, "q_reverse_kl": 0.4})
    log.set_at_step(50, {"q_modes": 5.0, "q_reverse_kl": 0.2})
    names = charts.quality_columns(log.columns)
    assert names == ["q_modes", "q_reverse_kl"]
    data = log.decimated(names)
    assert list(data["q_modes"]) == [3.0, 5.0], "NaN rows between evaluations are dropped"
    fig = charts.quality_figure({"": data}, names)
    assert len(fig.data) == 2
    assert charts.quality_columns(["d_loss"]) == []


def test_toy_figure_layers_heatmap_real_and_generated():
    pts = np.random.default_rng(0).normal(size=(100, 2)).astype(np.float32)
    fig = charts.toy_figure(pts, pts, np.zeros((48, 48), np.float32), (-2, 2, -2, 2))
    assert [t.type for t in fig.data] == ["heatmap", "scatter", "scatter"]
    # square plot under the title, no legend / colour bar squeezing a narrow panel
    assert fig.layout.yaxis.constrain == "domain" and fig.layout.yaxis.constraintoward == "top"
    assert fig.layout.showlegend is False and fig.data[0].showscale is False


def test_legend_is_laid_out_below_the_step_axis_title():
    # A legend at a fixed fraction under the plot (y=-0.2 of the plot height) overlapped
    # the x-axis title "step"; anchored to the figure's foot, Plotly's automargin stacks
    # the ticks, the title and the legend. Extra legend rows make the figure taller.
    arms = {name: make_log(50).decimated(charts.chart_columns()) for name in ("a", "b", "c")}
    one = charts.metric_figure({"": arms["a"]}, ("d_loss", "g_loss"), smoothing=0.9)
    three = charts.metric_figure(arms, ("d_loss", "g_loss"), smoothing=0.9)
    for fig in (one, three, charts.quality_figure(arms, ["d_loss"])):
        legend = fig.layout.legend
        assert (legend.yref, legend.y, legend.yanchor) == ("container", 0, "bottom")
    assert one.layout.xaxis.title.text == "step"
    assert three.layout.height > one.layout.height == charts.HEIGHT
    band = charts.metric_figure({"": arms["a"]}, ("reward_mean",), band="reward_std")
    assert [t.name for t in band.data if t.showlegend is not False] == ["reward_mean"]
