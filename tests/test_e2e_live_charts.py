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

    # sampled every 0.2 s for 10 s: never empty, never dimmed
    n_charts = len(b.charts(page))
    end = time.monotonic() + 10
    while time.monotonic() < end:
        charts = b.charts(page)
        # quality charts join after the first evaluation; none ever goes away
        assert len(charts) >= n_charts and all(c["points"] > 0 for c in charts), charts
        n_charts = len(charts)
        assert min(page.evaluate(OPACITY_JS)) > 0.99
        page.wait_for_timeout(200)

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
