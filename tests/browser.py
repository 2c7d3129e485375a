"""Real-browser helpers: a `streamlit run app.py` server and Debian's chromium.

Used by tests/conftest.py (the e2e fixtures), the e2e tests and bench/dashboard.py.
Playwright's own browser download is never used: chromium comes from apt
(/usr/bin/chromium).
"""
from __future__ import annotations

import contextlib
import os
import re
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


def save_artifacts(request, pages) -> None:
    """GANLAB_E2E_ARTIFACTS=dir (bench/browser_soak.py sets it): when a browser test
    fails, a full-page screenshot and the text of each of its tabs, and the server's
    log, go to dir, to see what the page showed when a wait ran out. Called by the page
    fixtures before they close their browser context."""
    folder = os.environ.get("GANLAB_E2E_ARTIFACTS")
    report = getattr(request.node, "report_call", None)
    if not folder or report is None or not report.failed:
        return
    stem = re.sub(r"[^\w.-]+", "_", request.node.nodeid)[-120:]
    Path(folder).mkdir(parents=True, exist_ok=True)
    for i, pg in enumerate(pages):
        try:
            pg.screenshot(path=str(Path(folder) / f"{stem}.{i}.png"), full_page=True,
                          timeout=10_000)
            (Path(folder) / f"{stem}.{i}.txt").write_text(
                pg.url + "\n\n" + pg.locator("body").inner_text(timeout=10_000))
        except Exception as exc:   # a closed tab, a hung page: the report still stands
            (Path(folder) / f"{stem}.{i}.txt").write_text(f"no artifact: {exc!r}")
    if "server" in request.fixturenames:   # what the server said (the module's so far)
        log = request.getfixturevalue("server")[1] / "streamlit.log"
        if log.exists():
            shutil.copyfile(log, Path(folder) / f"{stem}.streamlit.log")


# -- page helpers (Streamlit puts a widget's key in the class "st-key-<key>") --------------
def status_text(page) -> str:
    return page.locator(".st-key-status_line").first.inner_text()


def status_step(page) -> int:
    text = status_text(page)
    return int(text.split("step", 1)[1].split("·", 1)[0].strip().replace(",", ""))


def wait_status(page, word: str, timeout_ms: float | None = 30_000,
                key: str = "status_line") -> None:
    """Wait until the status line (the Train page's, or the widget `key`'s) says `word`;
    timeout_ms None: the page's default timeout."""
    page.wait_for_function(
        "([k, w]) => { const e = document.querySelector('.st-key-' + k);"
        " return !!e && e.innerText.includes(w); }", arg=[key, word], timeout=timeout_ms)


# static/live_chart.js defines window.ganlabCharts when it has loaded, some time after
# the page's first paint, and a chart's element may be replaced on a rerun (its title is
# "" until its data comes again). Every chart expression here reads the hook through
# CHARTS, which is [] until then, and every wait asks for a chart by title and treats a
# missing one as "not yet": no wait can throw before the page is ready.
CHARTS = "(typeof window.ganlabCharts === 'function' ? window.ganlabCharts() : [])"


def charts(page) -> list[dict]:
    """What every live chart on the page shows now (static/live_chart.js: ganlabCharts);
    [] before the chart script has loaded. A read, not a wait: see wait_charts."""
    return page.evaluate(f"() => {CHARTS}")


def wait_charts(page, test: str, arg=None, timeout_ms: float | None = None):
    """Poll `test`, a JS function (charts, arg) => value, over the page's charts (the
    list `charts` returns) until its value is truthy; return that value, so what is
    checked next is what the wait saw (a second read could land mid-rerun)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        handle = page.wait_for_function(f"([a]) => ({test})({CHARTS}, a)", arg=[arg],
                                        timeout=timeout_ms)
    except PlaywrightTimeout as exc:   # say what the charts showed when time ran out
        raise AssertionError(f"charts never passed {test}; they show {charts(page)}") from exc
    return handle.json_value()


def wait_chart(page, title: str = "Losses", test: str = "c => true", arg=None,
               timeout_ms: float | None = None) -> dict:
    """Wait until the chart with this title is on the page and `test`, a JS function
    (chart, arg) => bool, holds for it; return that chart (a dict as in `charts`)."""
    return wait_charts(page, "(cs, [t, a]) => { const c = cs.find(c => c.title === t);"
                             f" return c && ({test})(c, a) ? c : false; }}",
                       [title, arg], timeout_ms)


def select_option(page, key: str, option: str) -> None:
    page.locator(f".st-key-{key} input").click()
    page.get_by_role("option", name=option, exact=True).click()


def set_number(page, key: str, value) -> None:
    box = page.locator(f".st-key-{key} input")
    box.fill(str(value))
    box.press("Enter")


def click(page, key: str) -> None:
    page.locator(f".st-key-{key} button").first.click()


STATUS_OF_STOP = {"btn_stop": "status_line", "cmp_stop": "cmp_status_line"}


def stop(page, key: str = "btn_stop") -> None:
    """Stop asks for confirmation (ui/run_view.py stop_button): open its popover
    (`<key>_menu`), then press "Really stop" (`key`); return once the status line says
    the run ended. A click sent while the stop's rerun is still drawing the page can be
    lost to it (seen in CI: a page switch clicked right after Stop never rendered)."""
    click(page, f"{key}_menu")
    page.locator(f".st-key-{key} button").first.click()
    page.wait_for_function(
        "k => { const e = document.querySelector('.st-key-' + k);"
        " return !!e && /stopped|finished/.test(e.innerText); }", arg=STATUS_OF_STOP[key])


def wait_points_above(page, n: int, title: str = "Losses") -> int:
    """Wait until the chart's first trace has more than n points; return the count seen
    by that same check (a second read could land mid-rerun, when the chart is missing)."""
    return wait_chart(page, title, "(c, n) => c.points > n", n)["points"]


def wait_step_above(page, n: int) -> int:
    """Wait until the status line shows a step past n; return that step."""
    handle = page.wait_for_function(
        "n => { const e = document.querySelector('.st-key-status_line');"
        " const m = e && e.innerText.match(/step ([\\d,]+)/);"
        " const k = m ? parseInt(m[1].replace(/,/g, '')) : -1; return k > n ? k : false; }",
        arg=n)
    return int(handle.json_value())


def wait_input_value(page, key: str, value) -> None:
    """Wait until a widget shows a value the server set (e.g. a preset callback's):
    interacting before that reaches the browser would send the stale value back."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(
            "([k, v]) => { const e = document.querySelector('.st-key-' + k + ' input');"
            " return e && e.value === v; }", arg=[key, str(value)])
    except PlaywrightTimeout:
        shown = page.evaluate("k => { const e = document.querySelector('.st-key-' + k + ' input');"
                              " return e ? e.value : null; }", key)
        raise AssertionError(f"the widget {key!r} shows {shown!r}, not {str(value)!r}") from None


def choose_data(page, data: str) -> None:
    """Pick a data set on the Train form and wait for its preset values to arrive."""
    from core.engine.config import preset

    page.locator(".st-key-cfg_data input").wait_for()
    select_option(page, "cfg_data", data)
    wait_input_value(page, "cfg_batch", preset("recommended", data=data).batch_size)
