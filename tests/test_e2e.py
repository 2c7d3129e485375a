"""End-to-end: `streamlit run app.py` driven by Playwright in Debian's chromium.

The fixtures (tests/conftest.py) skip with a reason when chromium or Playwright is
missing, except when CI=true: then a missing browser is a failure, so the browser
tests can never silently vanish from CI (CHROMIUM=none shows the skip locally). The
waits are on the page's data (chart point counts, the status line), not on sleeps;
the one fixed wait checks that a paused step counter holds still.
"""
from __future__ import annotations

import re
import sys
import time

import browser as b
import pytest

from core.io.checkpoint import load_checkpoint
from ui.live_chart import MAX_POINTS


def test_missing_browser_skips_locally_but_fails_in_ci(monkeypatch):
    monkeypatch.setenv("CHROMIUM", "none")    # as on a machine without chromium
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception, match="no chromium found"):
        b.chromium_or_skip()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="must run in CI"):
        b.chromium_or_skip()
    monkeypatch.setattr(b, "find_chromium", lambda: "/usr/bin/chromium")
    monkeypatch.setitem(sys.modules, "playwright.sync_api", None)   # import fails
    with pytest.raises(pytest.fail.Exception, match="playwright Python package"):
        b.chromium_or_skip()
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception, match="playwright Python package"):
        b.chromium_or_skip()


def open_train(page, url: str) -> None:
    page.goto(url)
    page.get_by_role("heading", name="Train", exact=True).wait_for()


def start_ring8(page, url: str) -> str:
    """Start a ring8 run from the form; return its run id (from the URL)."""
    open_train(page, url)
    b.choose_data(page, "ring8")
    # Bigger batches and more D steps slow ring8 to a pace where the first refreshes
    # stay under the 2,000-point decimation cap, so the point count visibly grows.
    b.set_number(page, "cfg_batch", 2048)
    b.set_number(page, "cfg_d_steps", 5)
    b.click(page, "btn_start")
    page.wait_for_url(re.compile(r"[?&]run="))
    return re.search(r"[?&]run=([^&]+)", page.url).group(1)


def test_train_controls_and_reload(server, page):
    url, _ = server
    run_id = start_ring8(page, url)
    b.wait_status(page, "running")

    # The loss chart's point count grows over two refreshes.
    first = b.wait_points_above(page, 0)
    second = b.wait_points_above(page, first)
    third = b.wait_points_above(page, second)
    assert 0 < first < second < third <= 2 * MAX_POINTS   # the browser thins back past 2x

    # Pause: the step counter holds (a fixed wait is the point of this check).
    b.click(page, "btn_pause")
    b.wait_status(page, "paused")
    held = b.status_step(page)
    time.sleep(2.5)
    assert b.status_step(page) == held
    assert "paused" in b.status_text(page)

    b.click(page, "btn_resume")
    b.wait_status(page, "running")
    b.wait_step_above(page, held)

    # A reload (the run id is in the URL) re-attaches to the same live run.
    before = b.status_step(page)
    page.reload()
    b.wait_status(page, run_id)
    assert b.status_step(page) >= before
    assert "running" in b.status_text(page)

    # So does a second tab.
    second = page.context.new_page()
    second.goto(page.url)
    b.wait_status(second, run_id)
    assert "running" in b.status_text(second)
    second.close()

    # A new browser session on the Compare page finds the run in the runs panel and
    # opens it on the Train page.
    other = page.context.browser.new_context(viewport={"width": 1400, "height": 1000})
    tab = other.new_page()
    tab.set_default_timeout(60_000)
    tab.goto(url)
    tab.get_by_role("link", name="Compare").click()
    tab.get_by_role("heading", name="Compare update rules").wait_for()
    tab.get_by_text("Runs and comparisons on this server").click()
    tab.locator(f".st-key-panel_open_{run_id} button").first.click()
    b.wait_status(tab, run_id, timeout_ms=None)   # a new session's first page: 60 s
    assert "running" in b.status_text(tab) and f"run={run_id}" in tab.url
    other.close()

    b.stop(page, "btn_stop")
    b.wait_status(page, "stopped")
    assert b.wait_points_above(page, 0) > 0   # the charts stay after the run ends


def test_checkpoint_download_upload_resume_and_bad_file(server, page, tmp_path):
    url, _ = server
    run_id = start_ring8(page, url)
    b.wait_status(page, "running")
    b.stop(page, "btn_stop")
    b.wait_status(page, "stopped")
    step = b.status_step(page)

    page.goto(f"{url}/checkpoints")
    page.get_by_role("heading", name="Checkpoints", exact=True).wait_for()
    b.click(page, f"save_{run_id}")
    page.locator(".st-key-dl_file").wait_for()

    # Download through the browser, then read it the only way checkpoints are read.
    with page.expect_download() as info:
        b.click(page, "dl_file")
    download = info.value
    assert download.suggested_filename == f"{run_id}_step_{step}.safetensors"
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    state = load_checkpoint(saved)
    assert state["run_id"] == run_id and state["step"] == step

    # Upload it back and resume from it.
    page.locator(".st-key-upload input[type=file]").set_input_files(str(saved))
    page.get_by_text("is a valid checkpoint").wait_for()
    b.click(page, "upload_resume")
    page.wait_for_url(re.compile(r"[?&]run=resume-"))
    b.wait_status(page, "running")
    b.wait_step_above(page, step)
    # the resumed run's charts mark where it came from: each label inside its plot (the
    # labels the wait saw: the chart script may still be loading when the page shows)
    labels = b.wait_charts(
        page, "cs => { const l = cs.flatMap(c => c.labels); return l.length ? l : false; }")
    assert any(lab["text"].startswith("from ") for lab in labels), labels
    for lab in labels:
        assert lab["left"] - 1 <= lab["x0"] < lab["x1"] <= lab["right"] + 1, lab
    # a live rule switch adds its marker to those drawn (events arrive as deltas)
    resumed = re.search(r"[?&]run=([^&]+)", page.url).group(1)
    b.select_option(page, f"live_rule_{resumed}", "reinforce")
    texts = b.wait_charts(page, "cs => { const t = cs[0] ? cs[0].labels.map(l => l.text) : [];"
                                " return t.some(x => x.startsWith('rule: ')) ? t : false; }")
    assert any(t.startswith("from ") for t in texts), texts
    b.stop(page, "btn_stop")
    b.wait_status(page, "stopped")

    # A file that is not a checkpoint: a clear message, nothing else changes.
    page.goto(f"{url}/checkpoints")
    page.get_by_role("heading", name="Checkpoints", exact=True).wait_for()
    page.get_by_text("checkpoint file(s) in").wait_for()
    rows_before = page.locator(".st-key-checkpoint_table").inner_text()
    page.locator(".st-key-upload input[type=file]").set_input_files(
        files=[{"name": "junk.pt", "mimeType": "application/octet-stream",
                "buffer": b"definitely not a checkpoint"}])
    page.get_by_text("Not loaded:").wait_for()
    assert "not a checkpoint file" in page.locator("[data-testid=stAlert]").last.inner_text()
    assert page.locator(".st-key-upload_resume").count() == 0
    assert page.locator(".st-key-checkpoint_table").inner_text() == rows_before
