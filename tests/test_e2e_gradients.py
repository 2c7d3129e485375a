"""End-to-end: the Compare page's gradient view in a real browser (streamlit run +
Playwright + chromium). A short bce vs reinforce comparison on ring8; the view shows
both rules' arrows on a copy of one arm; D step changes the decision surface, G step
moves the samples. SCREENSHOTS=dir saves dir/gradients.png. Fixtures: tests/conftest.py.
"""
from __future__ import annotations

import os
import re

import browser as b

# What a panel's Plotly figure holds now (its graph div keeps `data`): the arrow and
# sample counts, the D surface's sum and the samples' first x, as one comparable record.
PANEL = """k => { const sum = v => typeof v === 'number' ? v
      : Array.from(v || []).reduce((a, w) => a + sum(w), 0);   // nested or typed arrays
  const el = document.querySelector('.st-key-gv_panel_' + k + ' .js-plotly-plot');
  if (!el || !el.data) return null;
  const t = n => el.data.find(d => d.name === n);
  const arrows = t('arrows'), samples = t('samples'), d = t('D(x)');
  if (!arrows || !samples || !d) return null;
  return {arrows: Array.from(arrows.x).filter(v => v !== null).length / 5, samples: samples.x.length,
          surface: sum(d.z), x0: samples.x[0]}; }"""


def panel(page, rule: str, differs_from: dict | None = None, key: str = "surface") -> dict:
    """Wait until the rule's panel is drawn (and its `key` differs from `differs_from`'s);
    return what that check saw."""
    return page.wait_for_function(
        f"([k, before, f]) => {{ const p = ({PANEL})(k);"
        " return p && p.arrows > 0 && (!before || p[f] !== before[f]) ? p : false; }",
        arg=[rule, differs_from, key]).json_value()


def test_gradient_view_draws_both_rules_and_steps(server, page):
    url, _ = server
    page.goto(f"{url}/compare")
    page.get_by_role("heading", name="Compare update rules").wait_for()
    b.select_option(page, "cmp_data", "ring8")
    b.set_number(page, "cmp_steps", 300)   # a short comparison: D has learnt something
    b.click(page, "cmp_start")
    page.wait_for_url(re.compile(r"[?&]arena="))
    b.wait_status(page, "finished", None, key="cmp_status_line")

    page.locator(".st-key-gv_on label").first.click()
    before = {rule: panel(page, rule) for rule in ("bce", "reinforce")}
    for seen in before.values():   # one arrow per sample, on the same samples
        assert seen["arrows"] == seen["samples"] == 200
    assert before["bce"]["x0"] == before["reinforce"]["x0"]
    page.get_by_text("0 D steps, 0 G steps since").wait_for()

    b.click(page, "gv_d_step")   # the decision surface changes, the samples stay
    page.get_by_text("1 D step, 0 G steps since").wait_for()
    after_d = panel(page, "bce", before["bce"], "surface")
    assert after_d["x0"] == before["bce"]["x0"]

    b.click(page, "gv_g_step")   # the samples move
    page.get_by_text("1 D step, 1 G step since").wait_for()
    for rule in ("bce", "reinforce"):
        panel(page, rule, before[rule], "x0")

    if os.environ.get("SCREENSHOTS"):   # for a person to look at (not a check)
        page.mouse.move(0, 0)   # no button tooltip over the picture
        section = page.locator(".st-key-gv_section")
        section.scroll_into_view_if_needed()
        section.screenshot(path=os.path.join(os.environ["SCREENSHOTS"], "gradients.png"))
