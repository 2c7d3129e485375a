"""The Train form's problems (all at once, each under its field), presets that keep
typed values, "0 = auto" hints, and the first-visit guide. AppTest on the form and the
guide alone (no run, no charts): fast, and independent of the rest of the page."""
from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from core.engine.config import ConfigError, preset, preset_problems

TIMEOUT = 60


def _form_script():
    import streamlit as st

    from ui import widgets
    with st.sidebar:
        cfg, _ = widgets.config_form()
    st.text("config ok" if cfg is not None else "config invalid")


def _guide_script():
    from ui import guide
    guide.show()


def form() -> AppTest:
    return AppTest.from_function(_form_script, default_timeout=TIMEOUT).run()


def field_errors(at: AppTest) -> list[str]:
    """The messages under inputs (the foot summary starts with a count)."""
    return [e.value for e in at.error if "fixing before Start" not in e.value]


# -- core: every problem at once ----------------------------------------------------------
def test_preset_problems_lists_each_bad_field_and_keeps_preset_raising():
    changes = {"data": "ring8", "batch_size": 1, "g_opt.lr": 0.0, "d_steps": 3}
    found = preset_problems("recommended", **changes)
    assert set(found) == {"batch_size", "g_opt.lr"}
    assert "[2, 4096]" in found["batch_size"] and "(0, 1]" in found["g_opt.lr"]
    with pytest.raises(ConfigError):   # preset() itself still stops at the first
        preset("recommended", **changes)
    assert preset_problems("recommended", data="ring8", d_steps=3) == {}


def test_preset_problems_between_fields_and_folder_without_root():
    found = preset_problems("recommended", data="ring8", **{
        "reinforce.sigma_start": 0.05, "reinforce.sigma_end": 0.08})
    assert list(found) == ["reinforce.sigma_end"]     # each is fine alone
    found = preset_problems("recommended", data="folder", data_root="", batch_size=1)
    assert set(found) == {"data_root", "batch_size"}


# -- the form ------------------------------------------------------------------------------
def test_two_bad_fields_give_two_messages_each_with_its_field_and_range():
    at = form()
    assert not at.error and at.text[0].value == "config ok"
    at.number_input(key="cfg_g_lr").set_value(0.0)
    at.number_input(key="cfg_batch").set_value(1).run()
    errors = field_errors(at)
    assert len(errors) == 2, errors
    lr = next(e for e in errors if "g_opt.lr" in e)
    batch = next(e for e in errors if "batch_size" in e)
    assert "G learning rate" in lr and "above 0, up to 1" in lr
    assert "Batch size" in batch and "from 2 to 4096" in batch
    summary = [e.value for e in at.error if "fixing before Start" in e.value]
    assert summary and summary[0].startswith("2 settings need fixing")
    assert at.text[0].value == "config invalid"
    at.number_input(key="cfg_g_lr").set_value(1e-3)
    at.number_input(key="cfg_batch").set_value(64).run()
    assert not at.error and at.text[0].value == "config ok"


def test_a_rule_option_problem_names_its_section():
    at = form()
    at.number_input(key="cfg_reinforce_samples_per_z").set_value(1).run()
    assert any("reinforce.samples_per_z" in e for e in field_errors(at))
    summary = next(e.value for e in at.error if "fixing before Start" in e.value)
    assert "options" in summary


def test_switching_the_data_set_keeps_typed_values_and_shows_the_preset():
    at = form()
    at.number_input(key="cfg_batch").set_value(100).run()
    at.selectbox(key="cfg_data").set_value("ring8").run()
    ring = preset("recommended", data="ring8")
    assert at.number_input(key="cfg_batch").value == 100                # typed: kept
    assert at.number_input(key="cfg_g_lr").value == pytest.approx(ring.g_opt.lr)  # followed
    assert any(f"Preset value: {ring.batch_size}" in c.value for c in at.caption)
    at.button(key="cfg_use_preset").click().run()
    assert at.number_input(key="cfg_batch").value == ring.batch_size
    assert not any("Preset value" in c.value for c in at.caption)


def test_auto_fields_show_what_they_resolve_to():
    at = form()
    captions = [c.value for c in at.caption]
    assert "auto = 8 on images" in captions and "auto = 0.3 on images" in captions
    at.selectbox(key="cfg_data").set_value("ring8").run()
    captions = [c.value for c in at.caption]
    assert "auto = 4 on 2-D data" in captions and "auto = 0.1 on 2-D data" in captions
    assert any(c.startswith("auto = cpu") or c.startswith("auto = cuda") for c in captions)


def test_every_form_input_has_help():
    at = form()
    inputs = [*at.number_input, *at.selectbox, *at.text_input, *at.checkbox]
    missing = [w.label for w in inputs if not w.help]
    assert not missing, missing


# -- the guide -----------------------------------------------------------------------------
def test_guide_shows_until_dismissed():
    at = AppTest.from_function(_guide_script, default_timeout=TIMEOUT).run()
    text = " ".join(m.value for m in at.markdown)
    assert "What am I looking at?" in text and "D(G(z))" in text and "healthy" in text.lower()
    at.button(key="guide_dismiss").click().run()
    assert not any(b.key == "guide_dismiss" for b in at.button)
    assert "#### What am I looking at?" not in [m.value for m in at.markdown]
    at.run()   # a later script run (a click elsewhere): still dismissed
    assert not any(b.key == "guide_dismiss" for b in at.button)
