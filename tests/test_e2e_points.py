"""End-to-end in chromium: a person picks "your 2-D points", draws a ring, a bar and a
few dots on the canvas, trains on the drawing for a few hundred steps, and sees the
trained samples over the drawn points, with k-NN precision and coverage charted.
SCREENSHOTS=dir saves that view as dir/points.png (and the drawing as
dir/points_draw.png). Fixtures: tests/conftest.py."""
from __future__ import annotations

import math
import os
import re

import browser as b
import numpy as np

from core.data.datasets import TOY_PRESET

STEPS = 400


def drag(page, box: dict, path: list[tuple[float, float]]) -> None:
    """One stroke through canvas points in [-1, 1]^2 (y up)."""
    def at(x: float, y: float) -> tuple[float, float]:
        return (box["x"] + (x + 1) / 2 * box["width"], box["y"] + (1 - y) / 2 * box["height"])
    page.mouse.move(*at(*path[0]))
    page.mouse.down()
    for p in path[1:]:
        page.mouse.move(*at(*p), steps=2)
    page.mouse.up()


def drawn_count(page) -> int:
    text = page.locator(".st-key-cfg_points_canvas .count").inner_text()
    return int(text.split()[0])


def test_draw_points_train_and_see_samples_over_them(server, page):
    url, root = server
    page.goto(url)
    page.get_by_role("heading", name="Train", exact=True).wait_for()
    page.locator(".st-key-cfg_data input").wait_for()
    b.select_option(page, "cfg_data", "points")
    b.wait_input_value(page, "cfg_batch", TOY_PRESET["batch_size"])   # its preset arrived
    canvas = page.locator(".st-key-cfg_points_canvas canvas")
    canvas.wait_for()
    box = canvas.bounding_box()
    ring = [(0.55 * math.cos(t), 0.2 + 0.55 * math.sin(t))
            for t in np.linspace(0, 2 * math.pi, 60)]
    drag(page, box, ring)
    drag(page, box, [(-0.7, -0.65), (0.7, -0.65)])          # a bar under it
    for x in (-0.3, 0.3):                                     # two clicks: eyes
        page.mouse.click(box["x"] + (x + 1) / 2 * box["width"],
                         box["y"] + (1 - 0.35) / 2 * box["height"])
    drawn = drawn_count(page)
    assert drawn > 150
    # the drawing reached the server: saved as a CSV under the checkpoint folder
    page.get_by_text(f"{drawn} points, centred on their mean", exact=False).wait_for()
    saved = list((root / "checkpoints" / "points").glob("drawn-*.csv"))
    assert any(len(p.read_text().splitlines()) == drawn + 1 for p in saved)
    if os.environ.get("SCREENSHOTS"):   # the drawing in the form (not a check)
        page.locator("[data-testid='stSidebar']").screenshot(
            path=os.path.join(os.environ["SCREENSHOTS"], "points_draw.png"))
    b.set_number(page, "cfg_steps", STEPS)
    b.set_number(page, "cfg_eval_every", 100)
    b.set_number(page, "cfg_sample_every", 100)
    b.click(page, "btn_start")
    page.wait_for_url(re.compile(r"[?&]run=points-"))
    b.wait_status(page, "finished", None)
    # the picture of the last snapshot, samples over the drawing (a locator: the
    # component's title is inside its shadow root)
    page.locator(".st-key-chart_toy").get_by_text(f"Real vs generated at step {STEPS}").wait_for()
    for title in ("precision (k-NN) (%) ↑", "coverage (k-NN) (%) ↑"):
        assert b.wait_chart(page, title, "c => c.points >= 4")["points"] >= 4
    if os.environ.get("SCREENSHOTS"):   # for a person to look at (not a check)
        page.locator(".st-key-chart_toy").evaluate("e => e.scrollIntoView({block: 'center'})")
        page.screenshot(path=os.path.join(os.environ["SCREENSHOTS"], "points.png"))
