"""Real-browser helpers: a `streamlit run app.py` server and Debian's chromium.

Used by tests/conftest.py (the e2e fixtures), the e2e tests and bench/dashboard.py.
Playwright's own browser download is never used: chromium comes from apt
(/usr/bin/chromium).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


def find_chromium() -> str | None:
    """CHROMIUM=/path picks one; CHROMIUM=none pretends there is none (the skip path)."""
    if os.environ.get("CHROMIUM", "").lower() == "none":
        return None
    for candidate in (os.environ.get("CHROMIUM"), "/usr/bin/chromium",
                      shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def require(reason: str) -> None:
    """A browser test cannot run: skip with the reason, except under CI=true, where it
    fails, so the browser tests can never silently vanish from CI."""
    import pytest

    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true but {reason}: the browser tests must run in CI")
    pytest.skip(reason)


def chromium_or_skip() -> str:
    """The chromium executable for the e2e tests, or skip / fail (see require)."""
    path = find_chromium()
    if path is None:
        require("no chromium found (apt-get install chromium, or set CHROMIUM=/path)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        require("the playwright Python package is not installed (requirements-dev.txt)")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 90.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with code {proc.returncode}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        time.sleep(0.2)
    raise TimeoutError(f"{url}/_stcore/health did not answer 200 in {timeout:.0f} s")


@contextlib.contextmanager
def streamlit_server(checkpoint_dir: Path, log_path: Path | None = None):
    """Yield the base URL of `streamlit run app.py` on a free port; stop it after."""
    port = free_port()
    env = {**os.environ, "GANLAB_CHECKPOINT_DIR": str(checkpoint_dir),
           "PYTHONUNBUFFERED": "1"}
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        if log_path:
            log.close()


@contextlib.contextmanager
def chromium_browser(executable: str):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS,
                                     headless=True)
        try:
            yield browser
        finally:
            browser.close()


# -- page helpers (Streamlit puts a widget's key in the class "st-key-<key>") --------------
def status_text(page) -> str:
    return page.locator(".st-key-status_line").first.inner_text()


def status_step(page) -> int:
    text = status_text(page)
    return int(text.split("step", 1)[1].split("·", 1)[0].strip().replace(",", ""))


def wait_status(page, word: str, timeout_ms: int = 30_000) -> None:
    page.wait_for_function(
        "w => { const e = document.querySelector('.st-key-status_line');"
        " return e && e.innerText.includes(w); }", arg=word, timeout=timeout_ms)


CHART_POINTS_JS = """title => {
  const c = (window.ganlabCharts ? window.ganlabCharts() : []).find(c => c.title === title);
  return c ? c.points : -1;
}"""


def charts(page) -> list[dict]:
    """What every live chart on the page shows (static/live_chart.js: ganlabCharts)."""
    return page.evaluate("() => window.ganlabCharts ? window.ganlabCharts() : []")


def chart_points(page, title: str = "Losses") -> int:
    """Steps drawn by the live chart with this title (-1: no such chart)."""
    return page.evaluate(CHART_POINTS_JS, title)


def select_option(page, key: str, option: str) -> None:
    page.locator(f".st-key-{key} input").click()
    page.get_by_role("option", name=option, exact=True).click()


def set_number(page, key: str, value) -> None:
    box = page.locator(f".st-key-{key} input")
    box.fill(str(value))
    box.press("Enter")


def click(page, key: str) -> None:
    page.locator(f".st-key-{key} button").first.click()


def stop(page, key: str = "btn_stop") -> None:
    """Stop asks for confirmation (ui/run_view.py stop_button): open its popover
    (`<key>_menu`), then press "Really stop" (`key`)."""
    click(page, f"{key}_menu")
    page.locator(f".st-key-{key} button").first.click()


def wait_points_above(page, n: int, title: str = "Losses") -> int:
    """Wait until the chart's first trace has more than n points; return the count seen
    by that same check (a second read could land mid-redraw, when it is -1)."""
    handle = page.wait_for_function(
        f"([t, n]) => {{ const k = ({CHART_POINTS_JS})(t); return k > n ? k : false; }}",
        arg=[title, n])
    return int(handle.json_value())


def wait_input_value(page, key: str, value) -> None:
    """Wait until a widget shows a value the server set (e.g. a preset callback's):
    interacting before that reaches the browser would send the stale value back."""
    page.wait_for_function(
        "([k, v]) => { const e = document.querySelector('.st-key-' + k + ' input');"
        " return e && e.value === v; }", arg=[key, str(value)])


def choose_data(page, data: str) -> None:
    """Pick a data set on the Train form and wait for its preset values to arrive."""
    from core.engine.config import preset

    page.locator(".st-key-cfg_data input").wait_for()
    select_option(page, "cfg_data", data)
    wait_input_value(page, "cfg_batch", preset("recommended", data=data).batch_size)
