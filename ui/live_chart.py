"""Metric charts that append in place: a Streamlit custom component (v2) over uPlot.

Why not st.plotly_chart: in Streamlit 1.67 its element identity hashes the figure, so
every refresh re-sent every figure whole and the browser remounted it (flicker, lost
zoom and hover). A v2 component keeps its identity by key and re-runs its script on
the same element when its data changes, so the chart (static/live_chart.js) keeps its
history, zoom, hidden series and log scale, and each refresh only carries the rows
logged since this session's previous one.

The protocol, per chart and data source (a run, or a Compare arm): the first message
holds the source's whole history thinned to MAX_POINTS rows ("full"); each later one
holds rows [previous end - 1, end), i.e. the previous message's last row again (a
quality evaluation may have filled it in since) and the new rows thinned to
DELTA_ROWS. A browser element that did not see the previous message (a remount, a
page switch) asks for a resync through its component state, and the next run sends
"full" again. A reload or a second tab is a new session: it starts with "full".

Zoom detail: thinning hides rows, so a zoomed chart puts its x range in its component
state ("zoom": [min, max], null when un-zoomed) and the next run sends each source's
rows of that range ("detail": every row, thinned to MAX_POINTS only if still more), once
per range (and again after a resync); the browser draws them inside the range while it
stays zoomed. Refreshes in between carry no detail.
"""
from __future__ import annotations

import base64
import json
import math
import zlib
from dataclasses import dataclass

import numpy as np
import streamlit as st

from core.engine.metric_info import METRICS
from core.engine.metric_log import MetricLog
from ui import charts
from ui.static_component import static_component

MAX_POINTS = 1000     # rows per source on first draw; the browser thins back to this
DELTA_ROWS = 24       # rows per source per refresh at most (spikes kept, min/max)
MAX_EVENTS_SHOWN = 500  # markers per chart: the latest (more would be unreadable)
HEIGHT = 220
SIGNIFICANT = 4       # digits sent per value: more than a chart or its hover shows
SENT = "live_chart_sent"   # session key: (chart key, source id) -> (end, resync seen)


_COMPONENT = static_component("ganlab_live_chart", "live_chart.js")


@dataclass(frozen=True)
class Source:
    """One line group of a chart: a metric log's rows [first_row, end_row)."""
    id: str                     # stable for the log's lifetime: the run id (and arm)
    label: str                  # legend prefix; "" for a single run
    log: MetricLog
    color: str | None = None    # one colour, a dash per metric; None: a colour per metric
    first_row: int = 0
    end_row: int | None = None


def compact(values: np.ndarray) -> list:
    """Values rounded to SIGNIFICANT digits as JSON numbers, NaN/inf as null."""
    v = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(v)
    scale = np.ones_like(v)
    nonzero = finite & (v != 0)
    scale[nonzero] = 10.0 ** (SIGNIFICANT - 1 - np.floor(np.log10(np.abs(v[nonzero]))))
    rounded = np.where(finite, np.round(v * scale) / scale, np.nan)
    return [None if math.isnan(x) else x for x in rounded.tolist()]


def columns(spec: charts.ChartSpec) -> list[str]:
    """The columns a chart sends: its metrics, then its band's std column."""
    return list(spec.metrics) + ([spec.band] if spec.band else [])


def source_payload(key: str, spec: charts.ChartSpec, src: Source, sent: dict,
                   resync: int, max_rows: int = MAX_POINTS) -> dict:
    """What this session sends for one source now, and remember it in `sent`."""
    names = columns(spec)
    end = len(src.log) if src.end_row is None else min(src.end_row, len(src.log))
    end = max(end, src.first_row)
    prev = sent.get((key, src.id))
    full = prev is None or prev[1] != resync or not src.first_row < prev[0] <= end
    start = src.first_row if full else prev[0] - 1
    steps, cols = src.log.rows(names, start, end,
                               max_rows if full else DELTA_ROWS)
    sent[(key, src.id)] = (end, resync)
    return {"id": src.id, "full": full, "start": start, "end": end,
            "x": steps.tolist(), "ys": [compact(cols[c]) for c in names]}


def zoom_range(state) -> tuple[float, float] | None:
    """The x range a chart's browser element asked detail for, or None (its component
    state "zoom"; anything but two finite increasing numbers is no zoom)."""
    zoom = (state or {}).get("zoom")
    try:
        lo, hi = (float(v) for v in zoom)
    except (TypeError, ValueError):
        return None
    return (lo, hi) if math.isfinite(lo) and math.isfinite(hi) and lo < hi else None


def range_rows(log: MetricLog, lo: float, hi: float, first_row: int = 0,
               end_row: int | None = None) -> tuple[int, int]:
    """Rows [start, end) of `log` whose steps lie in [lo, hi] plus one row either side
    (the lines run on to the plot's edges), within [first_row, end_row)."""
    end = len(log) if end_row is None else min(end_row, len(log))
    start = log.row_of_step(math.ceil(lo) - 1) - 1      # steps are integers that grow
    stop = log.row_of_step(math.floor(hi)) + 1
    start = min(max(start, first_row), end)
    return start, max(start, min(stop, end))


def detail_payload(spec: charts.ChartSpec, src: Source, zoom: tuple[float, float],
                   max_rows: int = MAX_POINTS) -> dict:
    """One source's rows of a zoomed range at full resolution (thinned to max_rows only
    if there are still more)."""
    names = columns(spec)
    start, end = range_rows(src.log, *zoom, src.first_row, src.end_row)
    steps, cols = src.log.rows(names, start, end, max_rows)
    return {"lo": zoom[0], "hi": zoom[1], "x": steps.tolist(),
            "ys": [compact(cols[c]) for c in names]}


def _styles(src: Source, n: int) -> list[dict]:
    if src.color is None:
        return [{"color": charts.PALETTE[i % len(charts.PALETTE)], "dash": "solid"}
                for i in range(n)]
    return [{"color": src.color, "dash": charts.DASHES[i % len(charts.DASHES)]}
            for i in range(n)]


def chart_data(key: str, spec: charts.ChartSpec, sources: list[Source], sent: dict, *,
               resync: int = 0, smoothing: float, events, group: str, points: bool = False,
               height: int = HEIGHT, zoom: tuple[float, float] | None = None) -> dict:
    """What one chart element is sent in this run (no Streamlit: benches call it).
    `zoom`: the x range the element is zoomed to (zoom_range), whose rows it gets once."""
    names = columns(spec)
    # the browser keeps the user's zoom and log y per chart and run (the run id is the
    # source ids' part before any ":arm")
    run = sources[0].id.split(":")[0] if sources else ""
    chart = {"title": spec.title, "metrics": names, "persist": f"{key}@{run}",
             "labels": [METRICS.entry(n).title if n in METRICS else n for n in names],
             "band": len(spec.metrics) if spec.band else None,
             "y_range": list(spec.y_range) if spec.y_range else None,
             "points": points, "height": height, "group": group,
             "max_events": MAX_EVENTS_SHOWN,
             "sources": [{"id": s.id, "label": s.label,
                          "styles": _styles(s, len(spec.metrics))} for s in sources]}
    # "zoom": the range this run saw asked; the browser checks that it holds its rows (a
    # message can be dropped when a rerun interrupts the run after `sent` noted it)
    data = {"smoothing": float(smoothing), "resync": resync,
            "zoom": list(zoom) if zoom is not None else None,
            "sources": [source_payload(key, spec, s, sent, resync) for s in sources]}
    for src, payload in zip(sources, data["sources"]):
        # a zoomed range's rows once per range; again with a full history (a resync)
        asked = (zoom, resync)
        if zoom is not None and (payload["full"] or sent.get((key, src.id, "zoom")) != asked):
            payload["detail"] = detail_payload(spec, src, zoom)
        sent[(key, src.id, "zoom")] = asked
    # the chart's description and the events only when they changed (or the browser
    # resynced): a refresh sends the new rows, not the whole history again
    text = json.dumps(chart, sort_keys=True)
    data["sig"] = chart["sig"] = zlib.crc32(text.encode())   # the browser checks it holds it
    described = (text, resync)
    if sent.get((key, "chart")) != described:
        data["chart"] = chart
        sent[(key, "chart")] = described
    events = list(events or ())
    mark = (len(events), tuple(events[-1]) if events else None, resync)
    _send_events(data, events, sent.get((key, "events")), mark)
    sent[(key, "events")] = mark
    return data


def _send_events(data: dict, events: list, before: tuple | None, mark: tuple) -> None:
    """Markers like the rows: nothing when unchanged, only the new ones when the list
    grew since `before` (count, last marker, resync; `mark` is now's) was sent, else
    the latest MAX_EVENTS_SHOWN. The browser checks `from` against what it holds."""
    if before == mark:
        return
    total = len(events)
    grew = (before is not None and before[2] == mark[2] and 0 < before[0] < total
            and tuple(events[before[0] - 1]) == before[1])
    start = before[0] if grew else 0
    items = [[int(step), str(text)] for step, text in events[start:][-MAX_EVENTS_SHOWN:]]
    data["events"] = {"from": start, "total": total, "items": items}


def live_chart(key: str, spec: charts.ChartSpec, sources: list[Source], **options) -> None:
    """Draw (first run) or extend (later runs) one chart; options: see chart_data.
    `group`: charts whose x axes zoom together and share the hover cursor."""
    state = st.session_state.get(key)
    resync = int((state or {}).get("resync") or 0)
    sent = st.session_state.setdefault(SENT, {})
    data = chart_data(key, spec, sources, sent, resync=resync, zoom=zoom_range(state),
                      **options)
    _COMPONENT(key=key, data=data, on_resync_change=lambda: None,
               on_zoom_change=lambda: None)


def chart_list(columns_logged) -> list[tuple[str, charts.ChartSpec, dict]]:
    """(key suffix, spec, options) of every chart a run with these columns shows: the
    step-metric charts (charts.chart_specs) that have data, then one small chart per
    quality metric."""
    logged = set(columns_logged)
    out = [(spec.metrics[0], spec, {}) for spec in charts.chart_specs(logged)
           if logged.intersection(spec.metrics)]
    quality = charts.quality_columns(logged)
    for name in quality:
        entry = METRICS.get(name)
        extra = entry.extra if entry else {}
        if extra.get("curve") is False or extra.get("drawn_with") in quality:
            continue   # a number beside the charts, or a line on another metric's chart
        partners = tuple(m for m in METRICS.names(drawn_with=name) if m in quality)
        spec = charts.ChartSpec(charts.metric_title(name), (name, *partners),
                                y_range=extra.get("y_range"))
        out.append((name, spec, {"points": True, "height": 150}))
    return out


def metric_charts(prefix: str, sources: list[Source], columns_logged, *, smoothing: float,
                  events, group: str) -> bool:
    """Every chart of chart_list, the quality ones three a row. False when nothing is
    logged yet."""
    if not any(len(s.log) for s in sources):
        return False
    listed = chart_list(columns_logged)
    steps = [c for c in listed if not c[2]]
    quality = [c for c in listed if c[2]]
    for name, spec, _ in steps:
        live_chart(prefix + name, spec, sources, smoothing=smoothing, events=events,
                   group=group)
    for i in range(0, len(quality), 3):
        for col, (name, spec, options) in zip(st.columns(3), quality[i:i + 3]):
            with col:
                live_chart(prefix + name, spec, sources, smoothing=0.0, events=events,
                           group=group, **options)
    return True


def _points(values: np.ndarray, span: float) -> dict:
    """2-D points as int16 over +-span, base64 (a third of their size as JSON)."""
    q = np.clip(np.round(np.asarray(values, dtype=np.float64) / span * 32767), -32767, 32767)
    return {"span": span, "b64": base64.b64encode(q.astype("<i2").tobytes()).decode()}


def _heatmap(values: np.ndarray) -> dict:
    """D(x) in [0, 1] as uint8 levels, base64, with its shape."""
    q = np.round(np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0) * 255)
    return {"shape": list(q.shape), "b64": base64.b64encode(q.astype(np.uint8).tobytes()).decode()}


def toy_picture(key: str, run_id: str, snap, real: np.ndarray | None, title: str) -> None:
    """The 2-D data picture (D's heatmap, generated points, real points on top, a
    colour bar), drawn in the browser. The snapshot is sent once per session and
    element; later runs send only its identity until the next snapshot."""
    state = st.session_state.get(key)
    resync = int((state or {}).get("resync") or 0)
    sent = st.session_state.setdefault(SENT, {})
    ident = f"{run_id}:{snap.step}"
    # points far outside the view clip at 4x its extent: they are off the canvas anyway
    span = 4.0 * max(abs(float(v)) for v in snap.extent)
    data = {"kind": "toy", "title": title, "resync": resync, "same": ident}
    if sent.get((key, "snapshot")) != (ident, resync):
        data["snapshot"] = {
            "key": ident, "extent": [float(v) for v in snap.extent],
            "points": _points(snap.points, span),
            "heatmap": None if snap.heatmap is None else _heatmap(snap.heatmap)}
        sent[(key, "snapshot")] = (ident, resync)
    if real is not None and sent.get((key, "real")) != (run_id, resync):
        data["real"] = _points(real, span)
        sent[(key, "real")] = (run_id, resync)
    _COMPONENT(key=key, data=data, on_resync_change=lambda: None)
