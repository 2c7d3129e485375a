"""End-to-end: the Compare page in a real browser (streamlit run + Playwright + chromium).

Starts bce vs reinforce on ring8, waits until both arms' loss traces grow on the same
chart and both arms' sample panels appear, then stops. Set GANLAB_SCREENSHOT=path to
save a screenshot of the live comparison (docs/compare.png comes from
`python bench/dashboard.py --screenshots-only`). Fixtures: tests/conftest.py.
"""
from __future__ import annotations

import os
import re

import browser as b
import pytest

from ui.live_chart import MAX_POINTS


def wait_grows(page, arm: str, than: int) -> int:
    """Wait until the arm's line on the Losses chart has more than `than` points; return
    the count that check saw."""
    chart = b.wait_chart(page, "Losses", "(c, [a, n]) => c.sources[a] > n", [arm, than])
    return chart["sources"][arm]


@pytest.fixture
def page_size() -> dict:   # tests/conftest.py's `page` uses it: taller, both panels show
    return {"width": 1400, "height": 1250}


def test_compare_bce_vs_reinforce_on_ring8(server, page):
    url, _ = server
    page.goto(url)   # through the router first, as a user would
    page.get_by_role("heading", name="Train").wait_for()
    page.goto(f"{url}/compare")
    page.get_by_role("heading", name="Compare update rules").wait_for()
    b.select_option(page, "cmp_data", "ring8")
    b.set_number(page, "cmp_steps", 0)          # until stopped
    b.set_number(page, "cmp_batch", 2048)       # slow enough that the point count grows
    b.click(page, "cmp_start")
    page.wait_for_url(re.compile(r"[?&]arena="))
    b.wait_status(page, "running", None, key="cmp_status_line")

    # both arms' traces on the same chart, each growing over refreshes
    counts = {arm: wait_grows(page, arm, 0) for arm in ("bce", "reinforce")}
    for arm in counts:
        counts[arm] = wait_grows(page, arm, counts[arm])
    assert all(0 < n <= 2 * MAX_POINTS for n in counts.values())   # thinned back past 2x

    # both arms' sample panels (2-D: points over that arm's own D heatmap)
    for arm in ("bce", "reinforce"):
        page.locator(f".st-key-cmp_grid_{arm} canvas").first.wait_for()   # the 2-D picture
    caption = page.get_by_text("Initial weights").inner_text()
    assert "identical" in caption and "DIFFERENT" not in caption

    shot = os.environ.get("GANLAB_SCREENSHOT")
    if shot:
        page.wait_for_timeout(6000)   # a few refreshes: the traces and samples move on
        wait_grows(page, "reinforce", 0)   # drawn, not mid-redraw
        page.screenshot(path=shot)

    b.stop(page, "cmp_stop")
    b.wait_status(page, "stopped", None, key="cmp_status_line")
    for arm in ("bce", "reinforce"):
        assert wait_grows(page, arm, 0) > 0   # the charts stay after the run ends
