"""End-to-end: a sweep from the Compare page in a real browser (streamlit run +
Playwright + chromium).

Runs a tiny sweep on ring8 (lr 2 values x batch_size 1 value = 2 cells, 2 seeds, 20
steps) on the process pool, waits for the heatmap of modes covered to fill in, clicks
a cell and sees that cell's seeds in the seed views. SCREENSHOTS=dir saves
dir/sweep.png. Fixtures: tests/conftest.py.
"""
from __future__ import annotations

import os
import re

import browser as b
import pytest

FIG = ".st-key-sw_fig_q_modes .js-plotly-plot"
# Where a heatmap cell is on the screen: Plotly's own axes map the cell's category
# index (column i, row j of the first panel) to pixels inside the plot div.
CELL_XY = """([sel, i, j]) => {
  const gd = document.querySelector(sel); if (!gd || !gd._fullLayout) return null;
  const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, r = gd.getBoundingClientRect();
  return [r.left + xa._offset + xa.l2p(i), r.top + ya._offset + ya.l2p(j)];
}"""


@pytest.fixture
def page_size() -> dict:
    return {"width": 1400, "height": 1100}


def fill(page, key: str, text: str) -> None:
    box = page.locator(f".st-key-{key} input")
    box.fill(text)
    box.press("Enter")
    b.wait_input_value(page, key, text)


def choose(page, key: str, option: str) -> None:
    """Pick a selectbox option by typing it (the list filters to it) and Enter."""
    box = page.locator(f".st-key-{key} input")
    box.click()
    box.press_sequentially(option)
    page.get_by_role("option", name=option, exact=True).wait_for()
    box.press("Enter")


def test_run_a_sweep_see_the_heatmap_and_open_a_cell(server, page):
    url, _ = server
    page.goto(f"{url}/compare")
    page.get_by_role("heading", name="Compare update rules").wait_for()
    b.select_option(page, "cmp_data", "ring8")
    page.get_by_text("Sweep settings over a grid").click()
    fill(page, "sw_values1_lr", "1e-4, 1e-3")
    plan = page.locator(".st-key-sw_plan")     # the server's reading of the form
    plan.get_by_text("2 cell(s) × 2 seed(s)").wait_for()
    choose(page, "sw_key2", "batch_size")
    fill(page, "sw_values2_batch_size", "64")
    plan.get_by_text("lr × batch_size:").wait_for()
    b.set_number(page, "sw_steps", 20)
    plan.get_by_text("20 steps each").wait_for()
    b.set_number(page, "sw_eval_every", 10)
    plan.get_by_text("quality every 10 steps").wait_for()
    b.click(page, "sw_start")
    page.wait_for_url(re.compile(r"[?&]sweep="))

    # the heatmap fills in; every run done, both arms' panels drawn with a value per cell
    page.get_by_text("finished · 4 / 4 runs done").wait_for()   # no more reruns to come
    page.wait_for_function(
        "s => { const gd = document.querySelector(s); return !!gd && gd.data &&"
        " gd.data.filter(t => t.type === 'heatmap').length === 2 && gd.data.filter(t =>"
        " t.type === 'heatmap').every(t => Array.from(t.z).every(r =>"
        " Array.from(r).every(v => v !== null && !Number.isNaN(v)))); }", arg=FIG)
    # one read of the drawn figure: a rerun can swap in a new, not yet drawn plot
    # between two reads (seen under load: no _fullLayout yet)
    title = page.wait_for_function(
        "s => { const gd = document.querySelector(s); const t = gd && gd._fullLayout"
        " && gd._fullLayout.title; return t ? t.text : false; }", arg=FIG).json_value()
    assert "modes covered ↑" in title and "q_modes" not in title, title

    # a click on the cell lr=0.001 (row 1) opens its two seeds in the seed views
    page.locator(FIG).first.scroll_into_view_if_needed()
    x, y = page.evaluate(CELL_XY, [FIG, 0, 1])
    page.mouse.move(x, y)
    page.mouse.click(x, y)
    page.get_by_role("heading", name="Cell lr=0.001,batch_size=64").wait_for()
    page.get_by_text("2 of 2 seed(s) finished").wait_for()
    page.locator(".st-key-cmp_seeds_chart_q_modes .js-plotly-plot").wait_for()
    page.get_by_text("Bold: the mean over finished seeds").wait_for()

    if os.environ.get("SCREENSHOTS"):   # for a person to look at (not a check)
        page.set_viewport_size({"width": 1400, "height": 2000})   # grid and cell in one
        page.get_by_text("Bold: the mean over finished seeds").wait_for()
        page.locator(FIG).first.scroll_into_view_if_needed()
        page.screenshot(path=os.path.join(os.environ["SCREENSHOTS"], "sweep.png"))
