"""End-to-end: a run's link and the runs panel's config table in a real browser.

`streamlit run app.py` driven by Playwright in Debian's chromium (fixtures:
tests/conftest.py), on short ring8 runs with a step budget, so every run has finished
before it is checked (no live refreshes under the clicks). tests/test_share_link.py and
tests/test_runs_panel.py check the same features in-process (AppTest); these go through
what a person does: the "Copy link" popover and its copy-to-clipboard button, a second
tab, the multiselect, the grid and the CSV download.
"""
from __future__ import annotations

import base64
import csv
import io
import json
import re
import zlib
from urllib.parse import parse_qs, urlsplit

import browser as b

from ui.share_link import PARAM, config_of

RING8_BATCH = 256   # ring8's preset batch size (the form's value once ring8 is chosen)
IDLE = ("() => { const e = document.querySelector('[data-test-script-state]');"
        " return !!e && e.getAttribute('data-test-script-state') === 'notRunning'; }")


def idle(page) -> None:
    """Wait until no script run is in flight. Only after the page has shown something
    of the run waited for: right after a key press the attribute may not have changed
    yet."""
    page.wait_for_function(IDLE)


def open_train(page, url: str) -> None:
    page.goto(url)
    page.get_by_role("heading", name="Train", exact=True).wait_for()


def fill_form(page, batch: int | None = None, **numbers) -> None:
    """ring8 with these values (cfg_<name>: value). A batch size other than the
    preset's adds a "Preset value" hint under it, which moves the inputs below it: a
    value typed into one of them while that rerun draws can be lost, so the hint is
    waited for before anything else is typed."""
    b.choose_data(page, "ring8")
    idle(page)   # the data set's rerun is drawn (its preset values came)
    if batch is not None and batch != RING8_BATCH:
        b.set_number(page, "cfg_batch", batch)
        page.get_by_text(f"Preset value: {RING8_BATCH} (yours is kept)").wait_for()
        idle(page)
    for name, value in numbers.items():
        b.set_number(page, f"cfg_{name}", value)
    for name, value in numbers.items():
        b.wait_input_value(page, f"cfg_{name}", value)


def start_and_finish(page, button: str = "btn_start") -> str:
    """Press Start (or the shared run's button); wait until the run has reached its
    budget and the page is redrawn for a finished run (its Continue button); return the
    run id."""
    b.click(page, button)
    page.wait_for_url(re.compile(r"[?&]run="))
    run_id = re.search(r"[?&]run=([^&]+)", page.url).group(1)
    b.wait_status(page, run_id, None)
    b.wait_status(page, "finished", None)
    page.locator(".st-key-btn_continue").wait_for()   # the page's redraw after the end
    idle(page)
    return run_id


def summary(page) -> str:
    """The sidebar's read-only settings of the attached run (widgets.config_summary)."""
    return page.locator("[data-testid=stSidebar] [data-testid=stMarkdown]").filter(
        has_text="seed").inner_text()


def panel_label(page) -> str:
    return page.get_by_text("Runs and comparisons on this server").inner_text()


def shown_link(page) -> str:
    """Open "Copy link"; return the link its code block shows (the popover stays open)."""
    page.get_by_role("button", name="Copy link").click()
    block = page.locator("[data-testid=stPopoverBody] [data-testid=stCode]")
    block.wait_for()
    return block.inner_text().strip()


def packed(settings: dict) -> str:
    """A link's config parameter for these settings (as ui/share_link.token packs)."""
    raw = json.dumps(settings, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(zlib.compress(raw, 9)).decode().rstrip("=")


def unpacked(token: str) -> dict:
    return json.loads(zlib.decompress(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))))


def test_copy_link_opens_the_same_run_in_a_new_tab_and_bad_links_start_nothing(server, page):
    url, _ = server
    open_train(page, url)
    fill_form(page, batch=96, seed=7, steps=40, eval_every=20)
    first = start_and_finish(page)
    mine = summary(page)
    assert "batch 96" in mine and "seed 7" in mine and "budget 40" in mine, mine

    # "Copy link": the popover shows the link; its copy button puts the same on the
    # clipboard (headless chromium lets the page read it back with the permission)
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=url)
    link = shown_link(page)
    assert link.startswith(f"{url}/?{PARAM}="), link
    page.locator("[data-testid=stPopoverBody] [data-testid=stCode]").hover()   # its toolbar
    page.locator("[data-testid=stPopoverBody] button[aria-label='Copy to clipboard']").click()
    page.wait_for_function("async l => (await navigator.clipboard.readText()) === l", arg=link)
    token = parse_qs(urlsplit(link).query)[PARAM][0]
    cfg = config_of(token)
    assert (cfg.data, cfg.seed, cfg.batch_size, cfg.steps, cfg.eval_every) == \
        ("ring8", 7, 96, 40, 20)
    page.keyboard.press("Escape")

    # the link in a new tab of the same browser: the Train page offers exactly that run
    tab = page.context.new_page()
    tab.goto(link)
    offer = tab.locator(".st-key-shared_run")
    offer.wait_for()
    assert (f"A shared run: ring8, rule {cfg.rule}, seed 7, batch 96, G lr {cfg.g_opt.lr:g}, "
            "40 steps") in offer.inner_text()
    assert "run=" not in tab.url and tab.locator(".st-key-status_line").count() == 0
    second = start_and_finish(tab, "btn_start_shared")
    assert second != first and PARAM not in urlsplit(tab.url).query
    assert summary(tab) == mine
    # the new run's own link holds the same config, byte for byte (token() is
    # deterministic: sorted keys, fixed compression), so its whole config is equal
    assert shown_link(tab) == link
    tab.keyboard.press("Escape")
    tab.get_by_text("Runs and comparisons on this server").click()
    for run_id in (first, second):
        row = tab.locator(f".st-key-panel_row_{run_id}")
        assert "finished · step 40 · ring8 · bce" in row.inner_text()
    runs_now = panel_label(tab)

    # hostile links: the config's own message, no offer, nothing started
    edited = unpacked(token) | {"batch_size": -5}
    markup = unpacked(token) | {"data": "**bold** [x](http://evil.example) "
                                        "<img src=x onerror=window.pwned=1>"}
    for bad, says in ((packed(edited), "batch_size = -5 is out of range"),
                      ("A" * 20_000, "is 20,000 characters long"),
                      (packed(markup), "**bold** [x](http://evil.example) <img")):
        tab.goto(f"{url}/?{PARAM}={bad}")
        tab.get_by_text("This link does not hold a valid run").wait_for()
        alert = tab.locator("[data-testid=stAlert]").filter(
            has_text="This link does not hold a valid run")
        shown = alert.inner_text().replace("\u2060", "")   # ui/text.plain's word joiners
        assert says in shown, shown
        assert alert.locator("img, a, strong").count() == 0, "shown as text, no link"
        assert tab.evaluate("() => window.pwned") is None
        idle(tab)
        assert tab.locator(".st-key-shared_run, .st-key-btn_start_shared").count() == 0
        assert tab.locator(".st-key-status_line").count() == 0 and "run=" not in tab.url
        assert panel_label(tab) == runs_now, "no run started"
    tab.close()


def settled(page, locator) -> None:
    """Wait until the element has kept its place and size for 10 animation frames, its
    expander's content scrolled back to the top: the expander's opening scrolls its
    content for a while (slowly at the end), and any scroll closes the multiselect's
    dropdown (react-aria) as soon as it has opened."""
    page.wait_for_function(
        "e => new Promise(done => { let last = null, same = 0; const tick = () => {"
        " const r = e.getBoundingClientRect(), d = e.closest('details');"
        " const k = [r.top, r.height, d ? d.scrollTop : 0].join();"
        " same = k === last && (!d || d.scrollTop === 0) ? same + 1 : 0; last = k;"
        " if (same >= 10) done(true); else requestAnimationFrame(tick); };"
        " requestAnimationFrame(tick); })", arg=locator.element_handle())


GRID = ("() => { const t = document.querySelector("
        "'.st-key-panel_expander [data-testid=stDataFrame] table[role=grid]');"
        " if (!t) return null;"
        " return {count: +t.getAttribute('aria-rowcount'), rows: [...t.querySelectorAll('tr')]"
        ".map(r => [...r.querySelectorAll('th, td')].map(c => c.innerText.trim()))}; }")


def grid(page, test: str, arg=None) -> dict:
    """Wait until the panel's table (its grid's accessible table: the cells in view) holds
    for `test`, a JS function (grid, arg) => bool; return what that check saw."""
    handle = page.wait_for_function(
        f"([a]) => {{ const g = ({GRID})(); return g && ({test})(g, a) ? g : false; }}",
        arg=[arg])
    return handle.json_value()


def test_two_finished_runs_side_by_side_in_the_runs_panel(server, page, tmp_path):
    url, _ = server
    open_train(page, url)
    fill_form(page, seed=1, steps=50, eval_every=25)
    one = start_and_finish(page)
    open_train(page, url)   # a fresh form (a new session)
    fill_form(page, batch=128, seed=2, steps=50, eval_every=25)
    two = start_and_finish(page)

    # the panel in a new session of the finished run: nothing live, so no refreshes (a
    # late one, after the run ended, could redraw the multiselect while it is open)
    page.goto(f"{url}/?run={two}")
    b.wait_status(page, "finished", None)
    page.get_by_text(re.compile(r"Runs and comparisons on this server: \d+$")).click()
    idle(page)
    pick = page.locator(".st-key-panel_table_pick")
    settled(page, pick)
    pick.get_by_role("button", name="Open").click()
    for run_id in (one, two):
        page.get_by_role("option", name=run_id, exact=True).click()
        pick.get_by_text(run_id, exact=True).wait_for()   # its tag in the box
    page.keyboard.press("Escape")

    # "Only what differs" (on by default): the two settings changed (and any final
    # quality metric the two runs ended apart on), each marked in the differs column
    shown = grid(page, "(g, ids) => g.rows.length > 1 && g.rows[0].join() === ids.join()",
                 ["", "differs", one, two])
    rows = {r[0]: r[1:] for r in shown["rows"][1:]}
    assert shown["count"] == len(rows) + 1, "every shown row is in view"
    settings = {k for k in rows if not k.startswith("final ")}
    assert settings == {"seed", "batch_size"}, rows
    assert rows["seed"] == ["true", "1", "2"]
    assert rows["batch_size"] == ["true", str(RING8_BATCH), "128"]
    assert all(v[0] == "true" for v in rows.values()), rows
    caption = page.get_by_text(re.compile(r"\d+ of \d+ rows differ\.")).inner_text()
    differ, total = map(int, re.findall(r"\d+", caption))
    assert differ == len(rows)

    # the whole table: the differing rows first, then the same ones (not marked)
    page.locator(".st-key-panel_table_diff label").click()
    whole = grid(page, "(g, n) => g.count === n + 1", total)
    top = whole["rows"][1:]
    assert [r[1] for r in top[:differ]] == ["true"] * differ
    assert top[differ][1] == "false" and top[differ][2] == top[differ][3], top

    # the CSV: every row, both runs, the same marks, the final quality of each
    with page.expect_download() as info:
        b.click(page, "panel_table_csv")
    assert info.value.suggested_filename == "runs.csv"
    saved = tmp_path / "runs.csv"
    info.value.save_as(saved)
    table = list(csv.DictReader(io.StringIO(saved.read_text())))
    assert list(table[0]) == ["setting", "differs", one, two]
    assert len(table) == total
    by = {r["setting"]: r for r in table}
    assert {k for k, r in by.items() if r["differs"] == "True"} == set(rows)
    for name, a, b_ in (("data", "ring8", "ring8"), ("steps", "50", "50"),
                        ("eval_every", "25", "25"), ("seed", "1", "2"),
                        ("batch_size", str(RING8_BATCH), "128")):
        assert (by[name][one], by[name][two]) == (a, b_), by[name]
    # the final quality: ring8's metrics at each run's last step (a value that is not
    # finite, e.g. a reverse KL with a mode left empty, is shown as "–")
    finals = [k for k in by if k.startswith("final ")]
    assert "final modes covered" in finals, list(by)
    for run_id in (one, two):
        assert 0 <= float(by["final modes covered"][run_id]) <= 8
        for name in finals:
            value = by[name][run_id]
            assert value == "–" or float(value) >= 0, (name, value)
