"""What the live charts send (ui/live_chart.py) and the Plotly figures in ui/charts.py."""
from __future__ import annotations

import json

import numpy as np

from core.engine.metric_log import MetricLog, thin_rows
from ui import charts, live_chart
from ui.live_chart import Source, source_payload

LOSSES = charts.ChartSpec("Losses", ("d_loss", "g_loss"))


def make_log(n: int, spike_at: int | None = None) -> MetricLog:
    log = MetricLog()
    rng = np.random.default_rng(0)
    for i in range(1, n + 1):
        row = {c: float(rng.normal()) for spec in charts.chart_specs()
               for c in live_chart.columns(spec)}
        if i == spike_at:
            row["d_loss"] = 1000.0
        log.append(i, row)
    return log


def test_first_message_is_the_thinned_history_with_its_spike():
    log = make_log(20_000, spike_at=12_345)
    sent = {}
    p = source_payload("k", LOSSES, Source("run", "", log), sent, resync=0)
    assert p["full"] and p["start"] == 0 and p["end"] == 20_000
    assert len(p["x"]) <= live_chart.MAX_POINTS
    assert p["x"][0] == 1 and p["x"][-1] == 20_000, "first and last row always kept"
    assert max(p["ys"][0]) == 1000.0, "min/max thinning keeps the spike"
    assert len(json.dumps(p)) < 25_000


def test_later_messages_carry_the_new_rows_and_the_last_one_again():
    log = make_log(100)
    sent = {}
    source_payload("k", LOSSES, Source("run", "", log), sent, resync=0)
    for i in range(101, 111):
        log.append(i, {"d_loss": float(i), "g_loss": -float(i)})
    p = source_payload("k", LOSSES, Source("run", "", log), sent, resync=0)
    assert not p["full"] and (p["start"], p["end"]) == (99, 110)
    assert p["x"] == list(range(100, 111))       # row 99 (step 100) again, then the new
    assert p["ys"][0][1:] == [float(i) for i in range(101, 111)]
    # nothing new: only the last row again, a few bytes
    idle = source_payload("k", LOSSES, Source("run", "", log), sent, resync=0)
    assert idle["x"] == [110] and len(json.dumps(idle)) < 120


def test_a_long_burst_is_thinned_and_a_resync_sends_everything():
    log = make_log(100)
    sent = {}
    source_payload("k", LOSSES, Source("run", "", log), sent, resync=0)
    for i in range(101, 5_001):
        log.append(i, {"d_loss": 5.0 if i == 3_000 else 0.0, "g_loss": 0.0})
    p = source_payload("k", LOSSES, Source("run", "", log), sent, resync=0)
    assert len(p["x"]) <= live_chart.DELTA_ROWS and 3_000 in p["x"]
    assert p["x"][0] == 100 and p["x"][-1] == 5_000
    again = source_payload("k", LOSSES, Source("run", "", log), sent, resync=1)
    assert again["full"] and again["start"] == 0


def test_a_quality_value_filled_into_the_last_row_reaches_the_browser():
    log = make_log(10)
    sent = {}
    spec = charts.ChartSpec("Modes", ("q_modes",))
    source_payload("q", spec, Source("run", "", log), sent, resync=0)
    log.set_at_step(10, {"q_modes": 7.0})           # evaluated after the row was read
    p = source_payload("q", spec, Source("run", "", log), sent, resync=0)
    assert p["x"] == [10] and p["ys"] == [[7.0]]


def test_rows_of_a_source_and_the_history_before_a_fork():
    log = make_log(50)
    fork = log.row_of_step(30)
    history = source_payload("k", LOSSES, Source("h", "", log, end_row=fork), {}, 0)
    arm = source_payload("k", LOSSES, Source("a", "a", log, first_row=fork - 1), {}, 0)
    assert history["x"][-1] == 30 and arm["x"][0] == 30 and arm["x"][-1] == 50


def test_values_are_sent_rounded_and_nan_as_null():
    assert live_chart.compact(np.array([0.693147, 12345.678, np.nan, 0.0, -1e-7])) == \
        [0.6931, 12350.0, None, 0.0, -1e-7]


def test_thin_rows_keeps_sparse_columns_and_extremes():
    n = 10_000
    dense = np.sin(np.arange(n) / 50.0)
    sparse = np.full(n, np.nan)
    sparse[::500] = np.arange(20)
    keep = thin_rows(np.stack([dense, sparse]), 400)
    assert len(keep) <= 400 and keep[0] == 0 and keep[-1] == n - 1
    assert set(range(0, n, 500)) <= set(keep.tolist()), "every evaluation survives"
    assert np.isclose(dense[keep].max(), dense.max())


def test_chart_specs_come_from_the_registry_and_unknown_columns_get_a_chart():
    specs = charts.chart_specs(["d_loss", "my_metric", "q_modes"])
    assert specs[0].metrics[:2] == ("d_loss", "g_loss")
    assert specs[-1].metrics == ("my_metric",)
    assert all(not m.startswith("q_") for s in specs for m in s.metrics)
    assert charts.quality_columns(["d_loss", "q_reverse_kl", "q_modes"]) == \
        ["q_modes", "q_reverse_kl"]


def test_toy_figure_layers_heatmap_real_and_generated():
    pts = np.random.default_rng(0).normal(size=(100, 2)).astype(np.float32)
    fig = charts.toy_figure(pts, pts, np.zeros((48, 48), np.float32), (-2, 2, -2, 2))
    assert [t.type for t in fig.data] == ["heatmap", "scatter", "scatter"]
    assert fig.layout.yaxis.constrain == "domain" and fig.layout.yaxis.constraintoward == "top"


def test_the_chart_description_is_sent_once_per_element():
    log = make_log(30)
    sent = {}

    def data(resync=0, smoothing=0.5):
        return live_chart.chart_data("k", LOSSES, [Source("run", "", log)], sent,
                                     resync=resync, smoothing=smoothing, events=[],
                                     group="train")

    first = data()
    assert first["chart"]["labels"] == ["D loss", "G loss"]
    later = data()
    assert "chart" not in later, "unchanged: not sent again"
    # every refresh names the description it belongs to: a browser whose copy of it was
    # dropped on the way (an interrupted rerun) sees the difference and asks again
    assert later["sig"] == first["chart"]["sig"] == first["sig"]
    assert later["zoom"] is None
    assert "chart" in data(resync=1), "a browser that asked for everything gets it"
    assert data(resync=1, smoothing=0.9)["smoothing"] == 0.9


def test_events_are_sent_as_deltas_like_the_rows():
    log, sent = make_log(30), {}
    events = [(5, "rule: bce -> reinforce")]

    def data(resync=0):
        return live_chart.chart_data("k", LOSSES, [Source("run", "", log)], sent,
                                     resync=resync, smoothing=0.0, events=events,
                                     group="train")

    assert data()["events"] == {"from": 0, "total": 1, "items": [[5, "rule: bce -> reinforce"]]}
    assert "events" not in data(), "unchanged: a refresh does not send them again"
    events.append((9, "continued for 100 steps"))
    assert data()["events"] == {"from": 1, "total": 2, "items": [[9, "continued for 100 steps"]]}
    assert data(resync=1)["events"]["from"] == 0, "a browser that asked for everything"
    events.extend((i, f"marker {i}") for i in range(10, 100_010))
    new = data(resync=1)["events"]
    assert new["from"] == 2 and new["total"] == len(events)
    assert len(new["items"]) == live_chart.MAX_EVENTS_SHOWN
    assert new["items"][-1] == [100_009, "marker 100009"]
    del events[:10]   # a run keeps the latest markers: the list did not just grow
    events.append((200_000, "last"))
    again = data(resync=1)["events"]
    assert again["from"] == 0 and len(again["items"]) == live_chart.MAX_EVENTS_SHOWN


def test_2d_snapshots_are_sent_as_int16_points_and_uint8_levels():
    import base64

    pts = np.array([[0.5, -1.25], [3.0, 100.0]])
    sent = live_chart._points(pts, span=8.0)
    q = np.frombuffer(base64.b64decode(sent["b64"]), dtype="<i2").reshape(-1, 2)
    back = q / 32767 * sent["span"]
    assert np.allclose(back[0], [0.5, -1.25], atol=8 / 32767)
    assert back[1][1] == 8.0, "far outside the view: clipped to the span"
    heat = live_chart._heatmap(np.array([[0.0, 0.5], [1.0, 2.0]]))
    levels = np.frombuffer(base64.b64decode(heat["b64"]), dtype=np.uint8)
    assert heat["shape"] == [2, 2] and levels.tolist() == [0, 128, 255, 255]


def test_the_fd_floor_shares_the_fd_chart_and_accuracy_is_no_curve():
    listed = {name: spec for name, spec, _ in live_chart.chart_list(
        ["d_loss", "g_loss", "q_fd", "q_fd_floor", "q_accuracy", "q_classes"])}
    assert listed["q_fd"].metrics == ("q_fd", "q_fd_floor")
    assert "q_fd_floor" not in listed and "q_accuracy" not in listed
    assert "q_classes" in listed


def test_last_logged_values_skip_the_rows_between_evaluations():
    log = make_log(30)
    log.set_at_step(10, {"q_modes": 3.0})
    log.set_at_step(20, {"q_modes": 5.0})
    log.set_at_step(30, {"q_modes": 8.0})
    assert log.last_logged("q_modes", 2) == [5.0, 8.0]
    assert log.last_logged("q_missing") == []
