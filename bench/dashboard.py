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
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import browser as b  # noqa: E402  (tests/browser.py)
import torch  # noqa: E402

from core.engine.config import preset  # noqa: E402
from core.engine.trainer import Trainer  # noqa: E402

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


class SocketBytes:
    """Bytes the page receives over Streamlit's websocket (every script-run delta)."""

    def __init__(self, page) -> None:
        self.total = 0
        page.on("websocket", lambda ws: ws.on("framereceived", self._frame))

    def _frame(self, payload) -> None:
        self.total += len(payload)


def browser_rate(page, url: str, data: str, seconds: float, wire: SocketBytes) -> float:
    page.goto(url)
    b.choose_data(page, data)
    b.click(page, "btn_start")
    b.wait_status(page, "running")
    batch = preset("recommended", data=data).batch_size
    page.get_by_text(f"batch {batch} ·").wait_for()   # same config as the headless run
    b.wait_points_above(page, 0)
    time.sleep(2.0)
    s0, t0, w0 = b.status_step(page), time.monotonic(), wire.total
    time.sleep(seconds)
    elapsed = time.monotonic() - t0
    rate = (b.status_step(page) - s0) / elapsed
    per_s = (wire.total - w0) / elapsed
    print(f"  {data}: the page received {per_s / 1024:.1f} KiB/s over the websocket "
          f"(one refresh a second: status, charts, samples)")
    b.click(page, "btn_reset")
    page.locator(".st-key-btn_start").wait_for()
    return rate


DRAWN_JS = """() => !document.querySelector('[data-testid="stSkeleton"]') &&
  (window.ganlabCharts ? window.ganlabCharts() : []).every(c => c.points > 0)"""


def drawn_screenshot(page, **kwargs) -> bytes:
    """A screenshot once every live chart has drawn (they update in place, so any
    moment after that is a fair picture)."""
    page.wait_for_function(DRAWN_JS, timeout=30_000, polling=100)
    return page.screenshot(**kwargs)


def save_small_png(page, path: Path, **kwargs) -> None:
    from PIL import Image

    raw = drawn_screenshot(page, **kwargs)
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
            b.stop(page, "btn_stop")
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
    b.stop(page, "btn_stop")


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
    page.locator(".st-key-cmp_grid_reinforce canvas").first.wait_for()
    time.sleep(wait_s)
    save_small_png(page, docs / "compare.png")
    b.stop(page, "cmp_stop")
    page.set_viewport_size({"width": 1400, "height": 1000})


def dark_screenshot(browser, url: str, docs: Path, wait_s: float = 12) -> None:
    """The Train page on a dark OS with the default "System" theme, ring8 live."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000},
                                  color_scheme="dark")
    page = context.new_page()
    page.set_default_timeout(90_000)
    page.goto(url)
    b.choose_data(page, "ring8")
    b.click(page, "btn_start")
    b.wait_status(page, "running")
    b.wait_points_above(page, 0)
    time.sleep(wait_s)
    page.locator(".lc").first.scroll_into_view_if_needed()
    save_small_png(page, docs / "train_dark.png")
    b.stop(page, "btn_stop")
    context.close()


def chart_update_size(steps: int = 20_000, per_update: int = 500, updates: int = 20) -> None:
    """What the live charts send per refresh at any run length: one session's first
    draw (the whole thinned history) after `steps` ring8 reinforce steps, then the
    steady state: `updates` refreshes, each after `per_update` more steps (about one
    second of training), with the server CPU time to build each one."""
    import json
    import statistics

    from ui import live_chart

    trainer = Trainer(preset("recommended", data="ring8", rule="reinforce", eval_every=500))
    t0 = time.monotonic()
    for _ in range(steps):
        trainer.step()
    print(f"  {steps} ring8 reinforce steps in {time.monotonic() - t0:.0f} s")

    source = live_chart.Source(trainer.run_id, "", trainer.log)
    sent: dict = {}

    def one_update() -> tuple[int, float, int]:
        t = time.perf_counter()
        listed = live_chart.chart_list(trainer.log.columns)
        blobs = [json.dumps(live_chart.chart_data(
            "chart_" + name, spec, [source], sent, smoothing=0.6,
            events=list(trainer.log.events), group="train", **options))
            for name, spec, options in listed]
        ms = (time.perf_counter() - t) * 1000
        return sum(map(len, blobs)), ms, len(blobs)

    first, first_ms, n_charts = one_update()
    print(f"  first draw: {first / 1024:.1f} KiB for {n_charts} charts, built in "
          f"{first_ms:.1f} ms")
    sizes, times = [], []
    for _ in range(updates):
        for _ in range(per_update):
            trainer.step()
        size, ms, _ = one_update()
        sizes.append(size)
        times.append(ms)
    print(f"  steady state ({per_update} new steps per refresh): "
          f"{statistics.median(sizes) / 1024:.2f} KiB per update for all {n_charts} charts "
          f"({statistics.median(sizes) / n_charts / 1024:.2f} KiB per chart; max "
          f"{max(sizes) / 1024:.2f} KiB), built in {statistics.median(times):.1f} ms "
          f"(max {max(times):.1f}); metric log {len(trainer.log)} rows")
    print("  (before the live charts, one update re-sent every figure whole: 266 KiB "
          "after 20,000 steps, built in 62-150 ms)")


def pinned_chromium(chromium: str, folder: Path) -> str:
    """A wrapper that starts chromium on core 1 only (the user's machine, in a real
    deployment); this process, the server it starts and the headless runs stay on 0."""
    wrapper = folder / "chromium-core1"
    wrapper.write_text(f'#!/bin/sh\nexec taskset -c 1 {chromium} "$@"\n')
    wrapper.chmod(0o755)
    os.sched_setaffinity(0, {0})
    return str(wrapper)


def rates(page, url: str, seconds: float, label: str) -> list[float]:
    print(f"steps/s: headless vs dashboard open in chromium ({label}; same session)")
    wire = SocketBytes(page)
    ratios = []
    for data in ("ring8", "mnist5k"):
        h1 = headless_rate(data, seconds)
        w = browser_rate(page, url, data, seconds, wire)
        h2 = headless_rate(data, seconds)
        ratios.append(w / ((h1 + h2) / 2))
        print(f"  {data}: headless {h1:.0f} / {h2:.0f}, with dashboard {w:.0f}, "
              f"ratio {ratios[-1]:.2f}")
    return ratios


def tabs_rate(browser, url: str, tabs: int, seconds: float, data: str = "ring8") -> None:
    """steps/s of one run with 1 tab on its page, then with `tabs` tabs, then 1 again
    (same run, same session): what each extra viewer costs the training."""
    first = browser.new_page(viewport={"width": 1400, "height": 1000})
    first.set_default_timeout(90_000)
    first.goto(url)
    b.choose_data(first, data)
    b.click(first, "btn_start")
    b.wait_status(first, "running")
    b.wait_points_above(first, 0)
    run_url = first.url

    def rate() -> float:
        time.sleep(2.0)
        s0, t0 = b.status_step(first), time.monotonic()
        time.sleep(seconds)
        return (b.status_step(first) - s0) / (time.monotonic() - t0)

    one = rate()
    others = []
    for _ in range(tabs - 1):
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(90_000)
        page.goto(run_url)
        b.wait_points_above(page, 0)
        others.append(page)
    many = rate()
    for page in others:
        page.close()
    again = rate()
    print(f"steps/s of one {data} run: 1 tab {one:.0f}, {tabs} tabs {many:.0f}, 1 tab again "
          f"{again:.0f}; ratio {tabs} tabs / 1 tab {many / ((one + again) / 2):.2f}")
    b.stop(first, "btn_stop")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--pinned", action="store_true",
                        help="chromium on core 1, the server and the headless runs on 0")
    parser.add_argument("--no-screenshots", action="store_true")
    parser.add_argument("--screenshots-only", action="store_true")
    parser.add_argument("--tabs", type=int, default=0, help="only measure one run's "
                        "steps/s with this many tabs open on it against one tab")
    args = parser.parse_args()
    chromium = b.find_chromium()
    if chromium is None:
        sys.exit("no chromium found (apt-get install chromium)")
    with tempfile.TemporaryDirectory() as tmp:
        if args.pinned:
            chromium = pinned_chromium(chromium, Path(tmp))
        with b.streamlit_server(Path(tmp) / "checkpoints") as url, \
                b.chromium_browser(chromium) as browser:
            if args.tabs:
                tabs_rate(browser, url, args.tabs, args.seconds)
                return
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(90_000)
            ratios = [] if args.screenshots_only else rates(
                page, url, args.seconds, "pinned" if args.pinned else "shared cores")
            if not args.no_screenshots:
                print("screenshots")
                screenshots(page, url, ROOT / "docs")
                compare_screenshot(page, url, ROOT / "docs")
                dark_screenshot(browser, url, ROOT / "docs")
    if args.screenshots_only:
        return
    print("chart update size after 20,000 steps")
    chart_update_size()
    print("ratio with the dashboard open / headless: " +
          ", ".join(f"{d} {r:.2f}" for d, r in zip(("ring8", "mnist5k"), ratios)))


if __name__ == "__main__":
    main()
