"""End-to-end: the live charts (ui/live_chart.py + static/live_chart.js) in chromium.

While a ring8 run trains: a drag-zoom survives refreshes while the history grows, the
other charts follow it, hover shows values, the charts are never empty or dimmed,
a reload and a second tab draw the whole history, and the dark theme is readable.
"""
from __future__ import annotations

import re
import time

import browser as b
import pytest


def start(page, url: str) -> None:
    page.goto(url)
    b.choose_data(page, "ring8")
    b.set_number(page, "cfg_batch", 2048)   # slow enough that refreshes are seen
    b.click(page, "btn_start")
    page.wait_for_url(re.compile(r"[?&]run="))
    b.wait_status(page, "running")
    b.wait_points_above(page, 20)


def losses(page) -> dict:
    """The Losses chart (waits for it: its element may be mid-rerun)."""
    return b.wait_chart(page, "Losses")


def wait_refreshes(page, n: int) -> dict:
    """Wait until the Losses chart has received n more refreshes (it gains points);
    return it as the last wait saw it."""
    chart = losses(page)
    for _ in range(n):
        chart = b.wait_chart(
            page, "Losses", "(c, n) => Object.values(c.sources).reduce((a, b) => a + b, 0) > n",
            sum(chart["sources"].values()))
    return chart


def drag_zoom(page, title: str = "Losses") -> None:
    plot = page.locator(".lc", has_text=title).first.locator(".u-over")
    plot.scroll_into_view_if_needed()
    box = plot.bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.25, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.45, y, steps=5)
    page.mouse.up()


OPACITY_JS = """() => [...document.querySelectorAll('.stBidiComponent')].map(el => {
  let o = 1;
  for (let e = el; e; e = e.parentElement) o *= parseFloat(getComputedStyle(e).opacity);
  return o; })"""


def test_a_first_request_straight_to_a_page_goes_through_the_router(server, page):
    # first in this module: the server has seen no request yet (a bookmark of /compare)
    url, _ = server
    page.goto(url + "/compare")
    page.get_by_role("heading", name="Compare update rules").wait_for()
    nav = page.locator('[data-testid="stSidebarNav"]').inner_text().split()
    # the router's titles, not Streamlit's own list of a pages/ folder (app, train, ...)
    assert {"Train", "Feedback", "Checkpoints"} <= set(nav) and "app" not in nav, nav


def test_zoom_hover_and_no_flicker_while_training(server, page):
    url, _ = server
    start(page, url)

    drag_zoom(page)
    zoomed = b.wait_chart(page, "Losses", "c => c.zoomed")
    before = sum(zoomed["sources"].values())
    after = wait_refreshes(page, 3)
    assert after["x"] == zoomed["x"], "the zoom survives three refreshes"
    assert sum(after["sources"].values()) > before, "while the history keeps growing"
    # every chart drawn (one whose element a rerun just replaced has no plot for a moment)
    drawn = b.wait_charts(page, "cs => cs.length > 1 && cs.every(c => c.x !== null) && cs")
    others = [c for c in drawn if c["title"] != "Losses"]
    assert others and all(c["x"] == zoomed["x"] for c in others), "linked x axes follow"

    # hover: the legend shows the hovered step and every line's value there. The plot is
    # found again right before each action (Playwright waits until it is stable): the
    # page moves under it while the quality charts join, so a box measured earlier can
    # send the mouse to another element.
    plot = page.locator(".lc", has_text="Losses").first.locator(".u-over")
    box = plot.bounding_box()
    at = {"x": box["width"] * 0.3, "y": box["height"] / 2}
    plot.hover(position=at)
    legend = losses(page)["legend"]
    assert re.search(r"step [\d,]+", legend) and re.search(r"D loss.*-?\d", legend), legend
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    plot.dblclick(position=at)
    try:
        b.wait_charts(page, "cs => cs.length > 0 && !cs.some(c => c.zoomed)", timeout_ms=15_000)
    except PlaywrightTimeout:
        still = [c["title"] for c in b.charts(page) if c["zoomed"]]
        pytest.fail(f"a double-click on Losses left these charts zoomed: {still}")

    # sampled every 0.2 s for 10 s: never empty, and not dimmed. Streamlit fades an
    # element only after it has waited about a second for its rerun to reach it: on a
    # loaded 2-core machine (CI runs the whole suite) one fragment run in a while takes
    # that long, so a single dimmed sample is tolerated; an element that a refresh
    # replaced or left stale (the flicker this guards against) dims every refresh.
    n_charts = len(b.charts(page))
    dimmed = []
    end = time.monotonic() + 10
    while time.monotonic() < end:
        charts = b.charts(page)
        # quality charts join after the first evaluation; none ever goes away
        assert len(charts) >= n_charts and all(c["points"] > 0 for c in charts), charts
        n_charts = len(charts)
        opacity = page.evaluate(OPACITY_JS)
        if min(opacity) <= 0.99:
            dimmed.append(opacity)
        page.wait_for_timeout(200)
    assert len(dimmed) <= 1, dimmed

    # another page and back in the same session: the new chart elements ask for the
    # history they missed (the server had sent it to the old ones)
    page.get_by_role("link", name="Checkpoints").click()
    page.get_by_role("heading", name="Checkpoints", exact=True).wait_for()
    page.get_by_role("link", name="Train").click()
    b.wait_chart(page, "Losses", "c => c.points > 0 && c.x[0] <= 2")

    # a reload and a second tab draw the whole history again, from the first step
    step = b.status_step(page)
    for tab in (page, page.context.new_page()):
        if tab is page:
            tab.reload()
        else:
            tab.goto(page.url)
        again = b.wait_chart(tab, "Losses", "c => c.points > 0")
        assert again["x"][0] <= 2 and again["x"][1] >= step * 0.9
    b.stop(page, "btn_stop")


@pytest.fixture
def page_dark(browser, request):
    context = browser.new_context(viewport={"width": 1400, "height": 1000},
                                  color_scheme="dark")   # "System" theme on a dark OS
    pg = context.new_page()
    pg.set_default_timeout(60_000)
    yield pg
    b.save_artifacts(request, context.pages)
    context.close()


def luminance(rgb) -> float:
    def channel(c):
        c /= 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4
    r, g, b_ = (channel(float(c)) for c in rgb[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b_


def blend(colour: str, background) -> tuple:
    """An rgb()/rgba() colour drawn over an opaque background (text or rgb), as rgb."""
    c = [float(v) for v in re.findall(r"[\d.]+", colour)]
    bg = (background if isinstance(background, tuple)
          else [float(v) for v in re.findall(r"[\d.]+", background)])
    a = c[3] if len(c) > 3 else 1.0
    return tuple(a * c[i] + (1 - a) * bg[i] for i in range(3))


def contrast(fg, bg) -> float:
    hi, lo = sorted((luminance(fg), luminance(bg)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_dark_theme_chart_text_is_readable(server, page_dark):
    url, _ = server
    start(page_dark, url)
    theme = losses(page_dark)["theme"]      # the colours the chart was drawn with
    app = page_dark.evaluate("() => getComputedStyle(document.querySelector('.stApp'))"
                             ".backgroundColor")
    bg = blend(theme["bg"], "rgb(0,0,0)")
    assert luminance(bg) < 0.1 and luminance(blend(app, "rgb(0,0,0)")) < 0.1, (theme, app)
    assert contrast(blend(theme["text"], bg), bg) >= 7, theme
    assert contrast(blend(theme["axis"], bg), bg) >= 4.5, theme
    b.stop(page_dark, "btn_stop")


# -- issue 22: charts that hold still under the cursor ---------------------------------------
def plot_of(page, title: str = "Losses"):
    """The chart's plot area, found again right before each action (see above)."""
    return page.locator(".lc", has_text=title).first.locator(".u-over")


def tool(page, name: str, title: str = "Losses"):
    return page.locator(".lc", has_text=title).first.locator(f".lc-{name}")


def test_the_hover_readout_holds_its_step_while_rows_arrive(server, page):
    url, _ = server
    start(page, url)
    # the first evaluation puts metric cards above the charts: hover after it, so the
    # page does not move the chart from under the mouse
    page.get_by_text("modes covered").first.wait_for()
    wait_refreshes(page, 1)
    plot = plot_of(page)
    box = plot.bounding_box()
    plot.hover(position={"x": box["width"] * 0.5, "y": box["height"] / 2})
    step = b.wait_chart(page, "Losses", "c => c.hover !== null")["hover"]
    # the linked step charts show the same step (the shared cursor); the quality
    # charts' elements may be replaced when another one joins their row
    peers = {c["title"]: c["hover"] for c in b.charts(page)
             if c["title"] not in ("Losses", "") and not c["dots"] and c["hover"] is not None}
    assert peers, b.charts(page)
    # the history grows, and with it the x range under the resting mouse
    after = wait_refreshes(page, 3)
    assert after["hover"] == step, (step, after["hover"])
    assert f"step {step:,}" in after["legend"], after["legend"]
    now = {c["title"]: c for c in b.charts(page)}
    held = {t: now[t]["hover"] for t in peers if t in now}
    assert held and held == {t: peers[t] for t in held}, (peers, held)
    b.stop(page, "btn_stop")


def test_with_link_x_off_a_drag_zooms_one_chart_only(server, page):
    url, _ = server
    start(page, url)
    b.wait_charts(page, "cs => cs.filter(c => c.x !== null).length > 2")
    tool(page, "link").click()
    page.wait_for_function("() => localStorage.getItem('ganlab.linkx') === 'off'")
    drag_zoom(page)
    zoomed = b.wait_chart(page, "Losses", "c => c.zoomed")
    wait_refreshes(page, 2)
    drawn = b.wait_charts(page, "cs => cs.length > 2 && cs.every(c => c.x !== null) && cs")
    others = [c for c in drawn if c["title"] != "Losses"]
    assert others and not any(c["zoomed"] for c in others), others
    assert all(c["x"][0] <= 2 and c["x"][1] > zoomed["x"][1] for c in others), \
        "the other charts still show the whole run"

    # linked again: a drag zooms every chart, a double-click un-zooms them all
    tool(page, "link").click()
    page.wait_for_function("() => localStorage.getItem('ganlab.linkx') === 'on'")
    drag_zoom(page)
    linked = b.wait_charts(
        page, "cs => { const l = cs.find(c => c.title === 'Losses');"
              " return l && cs.length > 2 && cs.every(c => c.zoomed && c.x"
              " && c.x[0] === l.x[0] && c.x[1] === l.x[1]) && cs; }")
    assert {c["title"] for c in drawn} <= {c["title"] for c in linked}
    plot_of(page).dblclick()
    b.wait_charts(page, "cs => cs.length > 2 && !cs.some(c => c.zoomed)")
    b.stop(page, "btn_stop")


def test_zooming_into_a_thinned_range_draws_every_row_there(server, page):
    url, _ = server
    page.goto(url)
    b.choose_data(page, "ring8")             # its recommended batch: fast
    b.click(page, "btn_start")
    page.wait_for_url(re.compile(r"[?&]run="))
    b.wait_status(page, "running")
    b.wait_step_above(page, 1_500)
    b.click(page, "btn_pause")
    b.wait_status(page, "paused")
    page.reload()     # the first draw: the whole history thinned to 1,000 rows
    step = b.status_step(page)
    overview = b.wait_chart(page, "Losses", "c => c.points > 0 && !c.zoomed")
    assert overview["points"] <= 1_000 < step, (overview["points"], step)

    drag_zoom(page)
    # every logged step inside the zoomed range is drawn (one row per step)
    zoomed = b.wait_chart(
        page, "Losses", "c => c.zoomed && c.detail > 0 &&"
                        " c.inView === Math.floor(c.x[1]) - Math.ceil(c.x[0]) + 1")
    assert zoomed["inView"] >= 150, zoomed
    assert zoomed["points"] > overview["points"], "more rows than the overview had"

    plot_of(page).dblclick()                  # back to the thinned overview
    back = b.wait_chart(page, "Losses", "c => !c.zoomed && c.detail === 0")
    assert back["points"] == overview["points"], (back["points"], overview["points"])
    assert back["x"][0] <= 2 and back["x"][1] >= step - 1


def test_a_reload_keeps_the_zoom_and_log_y(server, page):
    url, _ = server
    start(page, url)
    drag_zoom(page)
    zoomed = b.wait_chart(page, "Losses", "c => c.zoomed")
    tool(page, "log").click()
    b.wait_chart(page, "Losses", "c => c.log")
    others = {c["title"] for c in b.charts(page) if c["title"] not in ("Losses", "")}

    page.reload()
    again = b.wait_chart(page, "Losses", "c => c.zoomed && c.log && c.points > 0 && c.detail > 0")
    assert again["x"] == pytest.approx(zoomed["x"]), (again["x"], zoomed["x"])
    # the linked charts kept their zoom; log y was switched on Losses only
    after = b.wait_charts(page, "(cs, ts) => ts.every(t => cs.some(c => c.title === t"
                                " && c.zoomed)) && cs", sorted(others))
    assert not any(c["log"] for c in after if c["title"] != "Losses")

    # un-zoomed and log y off: a reload shows the whole run again
    plot_of(page).dblclick()
    tool(page, "log").click()
    b.wait_chart(page, "Losses", "c => !c.zoomed && !c.log")
    page.reload()
    b.wait_chart(page, "Losses", "c => c.points > 0")
    fresh = b.wait_chart(page, "Losses", "c => c.points > 0 && c.x[0] <= 2")
    assert not fresh["zoomed"] and not fresh["log"]
    b.stop(page, "btn_stop")
