"""End-to-end: on the Compare page one snapshot slider drives every arm's grid and the
A/B swipe, whose divider drags (streamlit run + Playwright + chromium).

A short mnist5k comparison (bce vs reinforce, no warm-up, 300 steps, a snapshot every
50: a few seconds on CPU). With SCREENSHOTS=dir the test saves dir/swipe.png.
Fixtures: tests/conftest.py.
"""
from __future__ import annotations

import os
import re

import browser as b
import pytest

from core.jobs.multi_seed import DEFAULT_IMAGE_WARMUP

ARMS = ("bce", "reinforce")
# every arm's grid as the browser shows it: {arm: [caption, img src]}
GRIDS = ("arms => Object.fromEntries(arms.map(a => {"
         " const box = document.querySelector('.st-key-cmp_grid_' + a);"
         " const img = box && box.querySelector('img');"
         " return [a, img ? [box.innerText, img.getAttribute('src')] : null]; }))")


@pytest.fixture
def page_size() -> dict:   # tests/conftest.py's `page` uses it
    return {"width": 1400, "height": 1200}


def wait_grids(page, test: str, arg=None) -> dict:
    """Wait until `test`, a JS function (grids, arg) => bool, holds for every arm's
    grid (GRIDS); return what that check saw."""
    handle = page.wait_for_function(
        f"([arms, a]) => {{ const g = ({GRIDS})(arms);"
        f" return Object.values(g).every(v => v) && ({test})(g, a) ? g : false; }}",
        arg=[list(ARMS), arg])
    return handle.json_value()


def test_one_slider_moves_every_arm_grid_and_the_swipe_divider(server, page):
    url, _ = server
    page.goto(f"{url}/compare")
    page.get_by_role("heading", name="Compare update rules").wait_for()
    b.select_option(page, "cmp_data", "mnist5k")
    b.wait_input_value(page, "cmp_warmup", DEFAULT_IMAGE_WARMUP)   # the data set's default
    for key, value in (("cmp_warmup", 0), ("cmp_steps", 300), ("cmp_sample_every", 50),
                       ("cmp_batch", 32)):
        b.set_number(page, key, value)
        b.wait_input_value(page, key, value)
    b.click(page, "cmp_start")
    page.wait_for_url(re.compile(r"[?&]arena="))
    b.wait_status(page, "finished", None, key="cmp_status_line")
    latest = wait_grids(page, "g => Object.values(g).every(([c]) => c.includes('at step 300'))")

    # one slider for every arm: untick Follow latest, move it to the first snapshot
    page.get_by_text("Follow latest").click()
    thumb = page.locator("[class*='st-key-cmp_snap_'] input[type='range']")
    thumb.focus()
    thumb.press("Home")
    first = wait_grids(page, "g => Object.values(g).every(([c]) => c.includes('at step 0'))")
    for arm in ARMS:
        assert first[arm][1] != latest[arm][1], f"{arm}'s grid picture did not change"

    # the swipe follows the same step; dragging its divider moves the split
    frame = page.locator(".st-key-cmp_swipe .sw-frame")
    frame.wait_for()
    tags = page.locator(".st-key-cmp_swipe .sw-tags")
    page.wait_for_function("e => e.innerText.includes('A: bce · step 0')"
                           " && e.innerText.includes('B: reinforce · step 0')",
                           arg=tags.element_handle())
    top = page.locator(".st-key-cmp_swipe .sw-b")
    assert frame.get_attribute("data-split") == "50.0"
    assert "50%" in top.evaluate("e => e.style.clipPath")
    frame.scroll_into_view_if_needed()
    box = frame.bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.5, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.3, y, steps=4)
    page.mouse.up()
    page.wait_for_function("e => Math.abs(parseFloat(e.dataset.split) - 30) < 2",
                           arg=frame.element_handle())
    clip = top.evaluate("e => e.style.clipPath")
    cut = re.fullmatch(r"inset\(0(?:px)? 0(?:px)? 0(?:px)? ([\d.]+)%\)", clip)
    assert cut and abs(float(cut[1]) - 30) < 2, clip   # B shows right of the divider only
    # readable: each arm's grid at least ~2x its native 242 px (8 digits of 28 px)
    widths = page.evaluate("() => [...document.querySelectorAll("
                           "\"[class*='st-key-cmp_grid_'] img\")].map(i => i.clientWidth)")
    assert len(widths) == 2 and min(widths) >= 440, widths

    # back to the last step: new pictures on both sides, the divider stays where it was
    thumb.focus()
    thumb.press("End")
    page.wait_for_function("e => e.innerText.includes('A: bce · step 300')"
                           " && e.innerText.includes('B: reinforce · step 300')",
                           arg=tags.element_handle())
    assert abs(float(frame.get_attribute("data-split")) - 30) < 2

    if os.environ.get("SCREENSHOTS"):   # for a person to look at (not a check)
        frame.scroll_into_view_if_needed()
        page.screenshot(path=os.path.join(os.environ["SCREENSHOTS"], "swipe.png"))
