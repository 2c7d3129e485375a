"""What the dashboard costs the training, and what one chart update weighs.

    python bench/dashboard.py                 # both measurements + screenshots in docs/
    python bench/dashboard.py --seconds 10 --no-screenshots
    python bench/dashboard.py --screenshots-only

1. steps/s of a ring8 and an mnist5k run started from the Train page with the page
   open in headless chromium (charts refreshing every second) vs the same config run
   headless (a Trainer in this process, no server), interleaved headless / browser /
   headless in one session; the ratio is browser / mean(headless).
2. The JSON size of one chart update (every figure the Train page sends per tick)
   after 20,000 ring8 steps, and the time to build it.
Screenshots of the Train page (mnist5k and ring8 live), the Compare page (bce vs
reinforce on ring8, live) and the Checkpoints page go to docs/ as palette PNGs (small
enough to commit).
"""
from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import torch  # noqa: E402

import browser as b  # noqa: E402  (tests/browser.py)
from core.config import preset  # noqa: E402
from core.trainer import Trainer  # noqa: E402

torch.set_num_threads(1)   # as the dashboard does (ui/runs.py)


def headless_rate(data: str, seconds: float) -> float:
    trainer = Trainer(preset("recommended", data=data))
    trainer.start()
    time.sleep(2.0)                       # warm-up, as the browser side gets
    s0, t0 = trainer.status.step, time.monotonic()
    time.sleep(seconds)
    rate = (trainer.status.step - s0) / (time.monotonic() - t0)
    trainer.stop()
    return rate


def browser_rate(page, url: str, data: str, seconds: float) -> float:
    page.goto(url)
    b.choose_data(page, data)
    b.click(page, "btn_start")
    b.wait_status(page, "running")
    batch = preset("recommended", data=data).batch_size
    page.get_by_text(f"batch {batch} ·").wait_for()   # same config as the headless run
    b.wait_points_above(page, 0)
    time.sleep(2.0)
    s0, t0 = b.status_step(page), time.monotonic()
    time.sleep(seconds)
    rate = (b.status_step(page) - s0) / (time.monotonic() - t0)
    b.click(page, "btn_reset")
    page.locator(".st-key-btn_start").wait_for()
    return rate


SETTLED_JS = """() => !document.querySelector('[data-stale="true"]') &&
  !document.querySelector('[data-testid="stSkeleton"]') &&
  [...document.querySelectorAll('[data-testid="stPlotlyChart"]')].every(el => {
    const gd = el.querySelector('.js-plotly-plot');
    return gd && gd._fullData && gd._fullData.length && gd.querySelector('.main-svg'); })"""


def settled_screenshot(page, tries: int = 10, **kwargs) -> bytes:
    """A screenshot between two refreshes where one can be had: nothing faded as
    stale (Streamlit greys out what the running fragment has not redrawn yet) and
    every chart drawn, before and after the capture. Streamlit 1.67 remounts a
    plotly_chart whose figure changed (its element id hashes the spec), so during a
    refresh old and new charts coexist and a new one may not be painted yet."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    raw = b""
    for _ in range(tries):
        try:
            page.wait_for_function(SETTLED_JS, timeout=15_000, polling=50)
        except PlaywrightTimeout:   # a busy machine: the page never settles; take it
            break
        raw = page.screenshot(**kwargs)
        if page.evaluate(SETTLED_JS):
            return raw
    print("  (no settled moment between refreshes: the screenshot may show stale parts)")
    return raw or page.screenshot(**kwargs)


def save_small_png(page, path: Path, **kwargs) -> None:
    from PIL import Image

    raw = settled_screenshot(page, **kwargs)
    img = Image.open(io.BytesIO(raw)).convert("RGB").quantize(colors=128)
    img.save(path, optimize=True)
    print(f"  {path.relative_to(ROOT)}: {path.stat().st_size / 1024:.0f} KB")


def screenshots(page, url: str, docs: Path) -> None:
    # ring8 first and stopped, so one run trains at a time while the pages are shot
    for data, name, wait_s in (("ring8", "train_ring8.png", 15), ("mnist5k", "train.png", 25)):
        page.goto(url)
        b.choose_data(page, data)
        b.click(page, "btn_start")
        b.wait_status(page, "running")
        b.wait_points_above(page, 0)
        time.sleep(wait_s)
        save_small_png(page, docs / name)
        if data == "ring8":
            b.click(page, "btn_stop")
            b.wait_status(page, "stopped")
            b.click(page, "btn_reset")
            page.locator(".st-key-btn_start").wait_for()
        else:
            run_url = page.url
    # Checkpoints page while the mnist5k run is still live, after one Save now.
    run_id = run_url.split("run=")[1]
    page.set_viewport_size({"width": 1400, "height": 1400})
    page.goto(url + "/checkpoints")
    page.get_by_role("heading", name="Checkpoints", exact=True).wait_for()
    b.click(page, f"save_{run_id}")
    page.get_by_text("checkpoint file(s) in").wait_for()
    page.locator(".st-key-checkpoint_file input").click()
    page.get_by_role("option", name=f"{run_id}/", exact=False).first.click()
    page.get_by_text(f"run {run_id}").wait_for()
    page.keyboard.press("Escape")   # no focus ring on the box just used
    page.mouse.click(700, 5)
    time.sleep(1.5)
    save_small_png(page, docs / "checkpoints.png")
    page.set_viewport_size({"width": 1400, "height": 1000})
    page.goto(run_url)
    b.wait_status(page, "running")
    b.click(page, "btn_stop")


def compare_screenshot(page, url: str, docs: Path, wait_s: float = 20) -> None:
    """bce vs reinforce on ring8 from the Compare page's defaults, until stopped."""
    page.set_viewport_size({"width": 1400, "height": 1250})
    page.goto(url + "/compare")
    page.get_by_role("heading", name="Compare update rules").wait_for()
    b.select_option(page, "cmp_data", "ring8")
    b.set_number(page, "cmp_steps", 0)
    b.click(page, "cmp_start")
    page.wait_for_function("() => { const e = document.querySelector('.st-key-cmp_status_line');"
                           " return e && e.innerText.includes('running'); }")
    page.locator(".st-key-cmp_grid_reinforce .js-plotly-plot").first.wait_for()
    time.sleep(wait_s)
    save_small_png(page, docs / "compare.png")
    b.click(page, "cmp_stop")
    page.set_viewport_size({"width": 1400, "height": 1000})


def chart_update_size(steps: int = 20_000) -> None:
    from ui import train_view as live

    trainer = Trainer(preset("recommended", data="ring8", rule="reinforce"))
    t0 = time.monotonic()
    for _ in range(steps):
        trainer.step()
    print(f"  {steps} ring8 reinforce steps in {time.monotonic() - t0:.0f} s")
    t0 = time.monotonic()
    figures = live._figures(trainer, smoothing=0.6)
    specs = {key: fig.to_json() for key, fig in figures}
    build_ms = (time.monotonic() - t0) * 1000
    snap = trainer.snapshots.latest()
    toy = live.charts.toy_figure(live._real_points(trainer), snap.points, snap.heatmap,
                                 snap.extent).to_json()
    for key, spec in specs.items():
        print(f"  {key}: {len(spec) / 1024:.0f} KiB")
    total = sum(map(len, specs.values())) + len(toy)
    print(f"  chart_toy: {len(toy) / 1024:.0f} KiB")
    print(f"  one update (all figures): {total / 1024:.0f} KiB, built in {build_ms:.0f} ms; "
          f"metric log {len(trainer.log)} rows")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--no-screenshots", action="store_true")
    parser.add_argument("--screenshots-only", action="store_true")
    args = parser.parse_args()
    chromium = b.find_chromium()
    if chromium is None:
        sys.exit("no chromium found (apt-get install chromium)")
    with tempfile.TemporaryDirectory() as tmp, \
            b.streamlit_server(Path(tmp) / "checkpoints") as url, \
            b.chromium_browser(chromium) as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(90_000)
        print("steps/s: headless vs dashboard open in chromium (same session)")
        for data in () if args.screenshots_only else ("ring8", "mnist5k"):
            h1 = headless_rate(data, args.seconds)
            w = browser_rate(page, url, data, args.seconds)
            h2 = headless_rate(data, args.seconds)
            print(f"  {data}: headless {h1:.0f} / {h2:.0f}, with dashboard {w:.0f}, "
                  f"ratio {w / ((h1 + h2) / 2):.2f}")
        if not args.no_screenshots:
            print("screenshots")
            screenshots(page, url, ROOT / "docs")
            compare_screenshot(page, url, ROOT / "docs")
    if args.screenshots_only:
        return
    print("chart update size after 20,000 steps")
    chart_update_size()


if __name__ == "__main__":
    main()
