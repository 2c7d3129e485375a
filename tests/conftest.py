"""Shared pytest fixtures: the real-browser ones used by the e2e test files.

The e2e fixtures skip with a clear reason when chromium or Playwright is missing,
and fail instead when CI=true (browser.require). Nothing here imports Playwright or
starts anything unless a test asks for these fixtures.
"""
from __future__ import annotations

import browser as b
import pytest

LIVE_MS = 60_000   # Playwright timeout: generous, the CI machine has 2 shared cores


@pytest.fixture(scope="module")
def chromium() -> str:
    return b.chromium_or_skip()


@pytest.fixture(scope="module")
def server(chromium, tmp_path_factory):
    """(base URL, temp root) of `streamlit run app.py`, one per test module."""
    root = tmp_path_factory.mktemp("e2e")
    with b.streamlit_server(root / "checkpoints", log_path=root / "streamlit.log") as url:
        yield url, root


@pytest.fixture(scope="module")
def browser(chromium):
    with b.chromium_browser(chromium) as instance:
        yield instance


@pytest.fixture
def page_size() -> dict:
    """Viewport of the `page` fixture; a test module may override this fixture."""
    return {"width": 1400, "height": 1000}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Note each phase's report on the test item (the `page` fixture reads it)."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def page(browser, page_size, request):
    context = browser.new_context(viewport=page_size, accept_downloads=True)
    pg = context.new_page()
    pg.set_default_timeout(LIVE_MS)
    yield pg
    b.save_artifacts(request, context.pages)
    context.close()
