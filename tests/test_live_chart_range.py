"""The rows of a zoomed range (ui/live_chart.py zoom detail) and the Compare page's
"Compared steps only" in the URL."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from core.engine.metric_log import MetricLog
from ui import charts, live_chart
from ui.live_chart import Source

ROOT = Path(__file__).resolve().parents[1]
LOSSES = charts.ChartSpec("Losses", ("d_loss", "g_loss"))


def make_log(n: int) -> MetricLog:
    log = MetricLog()
    rng = np.random.default_rng(0)
    for i in range(1, n + 1):
        log.append(i, {"d_loss": float(rng.normal()), "g_loss": float(rng.normal())})
    return log


def data(log, sent, zoom=None, resync=0, sources=None):
    return live_chart.chart_data("k", LOSSES, sources or [Source("run", "", log)], sent,
                                 resync=resync, smoothing=0.0, events=[], group="train",
                                 zoom=zoom)


def test_a_narrow_window_of_a_long_run_comes_back_row_for_row():
    log = make_log(20_000)
    overview = data(log, {})["sources"][0]
    in_window = [x for x in overview["x"] if 12_000 <= x <= 12_100]
    assert len(in_window) < 20, "the overview is thinned"
    d = live_chart.detail_payload(LOSSES, Source("run", "", log), (12_000.0, 12_100.0))
    # every row of the window, and one either side so the lines reach the plot's edges
    assert d["x"] == list(range(11_999, 12_102))
    assert (d["lo"], d["hi"]) == (12_000.0, 12_100.0)
    _, cols = log.rows(["d_loss"], 11_998, 12_101, 10_000)
    assert d["ys"][0] == live_chart.compact(cols["d_loss"])


def test_a_fractional_window_from_a_drag():
    log = make_log(500)
    assert live_chart.range_rows(log, 100.3, 199.7) == (99, 200)   # steps 100..200
    assert live_chart.range_rows(log, 0.2, 3.5) == (0, 4)           # clipped at the start
    assert live_chart.range_rows(log, 498.5, 900.0) == (497, 500)   # and at the end
    assert live_chart.range_rows(log, 600.0, 700.0) == (499, 500)   # past the end: the last


def test_a_wide_window_is_thinned_to_max_points_keeping_its_ends():
    log = make_log(20_000)
    d = live_chart.detail_payload(LOSSES, Source("run", "", log), (1_000.0, 9_000.0))
    assert len(d["x"]) <= live_chart.MAX_POINTS
    assert d["x"][0] == 999 and d["x"][-1] == 9_001


def test_the_window_stays_inside_a_sources_rows():
    log = make_log(300)
    fork = log.row_of_step(200)
    history = Source("h", "", log, end_row=fork)
    arm = Source("a", "a", log, first_row=fork - 1)
    assert live_chart.detail_payload(LOSSES, history, (150.0, 250.0))["x"] == \
        list(range(149, 201))
    assert live_chart.detail_payload(LOSSES, arm, (150.0, 250.0))["x"] == \
        list(range(200, 252))


def test_detail_is_sent_once_per_range_and_again_after_a_resync():
    log = make_log(5_000)
    sent: dict = {}
    assert "detail" not in data(log, sent)["sources"][0], "not zoomed: no detail"
    first = data(log, sent, zoom=(2_000.0, 2_100.0))["sources"][0]
    assert first["detail"]["x"][0] == 1_999 and len(first["detail"]["x"]) == 103
    for i in range(5_001, 5_011):
        log.append(i, {"d_loss": 0.0, "g_loss": 0.0})
    later = data(log, sent, zoom=(2_000.0, 2_100.0))
    assert "detail" not in later["sources"][0], "a refresh carries only the new rows"
    # ... and the range it saw asked: a browser without those rows (their message was
    # dropped) knows it missed them and resyncs
    assert later["zoom"] == [2_000.0, 2_100.0]
    assert len(json.dumps(later)) < 1_000
    assert "detail" in data(log, sent, zoom=(2_000.0, 2_050.0))["sources"][0], "a new range"
    again = data(log, sent, zoom=(2_000.0, 2_050.0), resync=1)["sources"][0]
    assert again["full"] and "detail" in again, "a resynced element gets it with its history"
    data(log, sent)                                   # un-zoomed
    assert "detail" in data(log, sent, zoom=(2_000.0, 2_050.0), resync=1)["sources"][0], \
        "zoomed to the same range again after un-zooming"


def test_zoom_state_from_the_browser_is_checked():
    assert live_chart.zoom_range({"zoom": [10, 20.5]}) == (10.0, 20.5)
    for bad in (None, {}, {"zoom": None}, {"zoom": [5, 5]}, {"zoom": [9, 1]},
                {"zoom": ["a", 1]}, {"zoom": [1, 2, 3]}, {"zoom": [float("nan"), 1]},
                {"zoom": 7}):
        assert live_chart.zoom_range(bad) is None, bad


def test_the_browser_keys_its_saved_view_by_chart_and_run():
    log = make_log(10)
    chart = data(log, {})["chart"]
    assert chart["persist"] == "k@run"
    arms = [Source("arena-x:history", "before", log), Source("arena-x:bce", "bce", log)]
    assert data(log, {}, sources=arms)["chart"]["persist"] == "k@arena-x"


# -- "Compared steps only" survives a reload: it is in the URL --------------------------------
@pytest.fixture
def arenas(tmp_path, monkeypatch):
    monkeypatch.setenv("GANLAB_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))
    monkeypatch.chdir(ROOT)
    from ui.compare_view import registry
    registry().clear()
    yield registry()
    registry().clear()


def test_compared_steps_only_is_kept_in_the_url(arenas):
    from streamlit.testing.v1 import AppTest

    from ui.compare_view import COMPARED_PARAM, QUERY_KEY

    at = AppTest.from_file(str(ROOT / "views" / "compare.py"), default_timeout=60).run()
    at.sidebar.number_input(key="cmp_steps").set_value(40)
    at.button(key="cmp_start").click().run()
    assert not at.exception
    (arena,) = arenas.runs()
    at.toggle(key="cmp_compared_only").set_value(True).run()
    assert at.query_params.get(COMPARED_PARAM) in ("1", ["1"])
    end = time.monotonic() + 60
    while arena.status.live and time.monotonic() < end:
        time.sleep(0.05)

    # a reload: a new session that starts from the URL
    again = AppTest.from_file(str(ROOT / "views" / "compare.py"), default_timeout=60)
    again.query_params[QUERY_KEY] = arena.run_id
    again.query_params[COMPARED_PARAM] = "1"
    again.run()
    assert not again.exception
    assert again.toggle(key="cmp_compared_only").value is True
    again.toggle(key="cmp_compared_only").set_value(False).run()
    assert COMPARED_PARAM not in again.query_params
